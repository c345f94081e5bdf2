"""DDPO (Black et al. 2023, "Training Diffusion Models with Reinforcement Learning", arXiv 2305.13301): DDPO-clip.

Source read: kvablack/ddpo-pytorch (``config/base.py``, ``config/dgx.py``, ``scripts/train.py``,
``ddpo_pytorch/stat_tracking.py``, ``diffusers_patch/ddim_with_logprob.py``). The policy is the stochastic DDIM
sampler (:mod:`rocm_rlhf.samplers.diffusion`, eta = 1) of a diffusion model (SD 1.5 in the paper, the sandbox teacher
here) with classifier-free guidance; each of the T denoising steps is an action, the reward of the decoded image the
terminal reward.

One training step (= one DDPO epoch):

1. sample ``batch_size`` prompts and DDIM trajectories without gradients, decode, score (``batch_size`` queries);
2. advantages by per-prompt normalisation (:class:`rocm_rlhf.training.ppo.PerPromptStatTracker`, buffer 16, min
   count 16: DDPO's ``per_prompt_stat_tracking``);
3. ``num_inner_epochs`` passes over the shuffled batch, ``num_minibatches`` optimizer updates each, of the PPO clipped
   loss (:func:`rocm_rlhf.training.ppo.ppo_clip_loss`) averaged over the minibatch's samples and the trained steps
   (``timestep_fraction`` of the T steps, a random subset per sample when below 1), log-probs recomputed with
   gradients at the stored states (:func:`rocm_rlhf.samplers.diffusion.ddim_log_prob`).

Defaults are DDPO's paper configuration (``config/dgx.py`` over ``config/base.py``): clip range 1e-4, advantage clip
5, one inner epoch, timestep fraction 1, a rollout of 256 samples per step with 4 updates (4 per device x 2
accumulation x 8 devices = 64 per update), eta 1, guidance 5, 50 DDIM steps, learning rate 3e-4, weight decay 1e-4
(``baselines.ddpo.*``; the CPU sandbox scales the rollout to 8 images and 10 steps).

The clip range. Our log-probs are sums over the C*H*W latent dimensions; DDPO's code averages them, so its ratio is
``exp(mean_d(log p_new - log p_old))`` and clip range 1e-4 bounds the *per-dimension* log-ratio. With
``log_prob_reduction="mean"`` (default) the ratio is formed from ``lp / (C*H*W)``, which reproduces DDPO's objective
and keeps its clip range meaningful; with ``"sum"`` the ratio is the true density ratio and the clip range should
be scaled by about C*H*W (1e-4 on a true ratio of a 16,384-dimensional Gaussian clips nearly every sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..models import ddim_scheduler_for
from ..samplers.diffusion import ddim_log_prob
from .ddim_policy import DiffusionRollout, diffusion_sampling, kl_per_step, step_rollout
from .ppo import PPOMethod, PerPromptStatTracker, baseline_fields, check_positive, stats_out


@dataclass
class DDPO(PPOMethod):
    """DDPO-clip; defaults from kvablack/ddpo-pytorch config/dgx.py (the paper's runs)."""

    config_name = "ddpo"  # its block under baselines: (not a field)

    batch_size: int = 256  # images (= reward queries) per step: one DDPO epoch (dgx: 8 GPUs x 8 x 4 batches)
    sample_steps: int = 50  # DDPO sample.num_steps (dgx)
    eta: float = 1.0  # DDPO sample.eta
    guidance_scale: float = 5.0  # DDPO sample.guidance_scale
    num_inner_epochs: int = 1  # DDPO train.num_inner_epochs
    num_minibatches: int = 4  # updates per pass: 256 samples per epoch / 64 per update (dgx)
    clip_range: float = 1e-4  # DDPO train.clip_range (on the per-dimension ratio, module docstring)
    adv_clip_max: float = 5.0  # DDPO base.py train.adv_clip_max
    timestep_fraction: float = 1.0  # DDPO train.timestep_fraction
    stat_buffer_size: int = 16  # DDPO per_prompt_stat_tracking.buffer_size
    stat_min_count: int = 16  # DDPO per_prompt_stat_tracking.min_count
    log_prob_reduction: str = "mean"  # DDPO's ddim_step_with_logprob averages over dimensions
    log_divergence: bool = True  # log the KL to the pretrained model of each sampled batch (costs T UNet calls)
    divergence_reduction: str = "mean"  # its reduction over latent dimensions (as ROCM's rocm.reduction)
    tracker: PerPromptStatTracker = field(init=False, repr=False)

    @classmethod
    def from_config(cls, config: dict, **overrides) -> "DDPO":
        """DDPO from ``baselines.ddpo`` (:func:`~rocm_rlhf.training.ppo.baseline_fields`) with its DDIM sampler
        (:func:`~rocm_rlhf.training.ddim_policy.diffusion_sampling`); ``overrides`` replace fields."""
        return cls(**{**baseline_fields(config, cls.config_name), **diffusion_sampling(config, cls.config_name),
                      **overrides})

    def __post_init__(self):
        check_positive("ddpo sample_steps", self.sample_steps)
        if not 0 < self.eta <= 1:
            raise ValueError(f"ddpo eta must lie in (0, 1] (eta = 0 is deterministic: no policy), got {self.eta}")
        if not 0 < self.timestep_fraction <= 1:
            raise ValueError(f"ddpo timestep_fraction must lie in (0, 1], got {self.timestep_fraction}")
        self.check_ppo_settings()
        self.scheduler = None

    # ------------------------------------------------------------------------------------------- loop protocol
    # (queries_per_step, extra_state and load_extra_state: PPOMethod)
    def setup(self, ctx) -> None:
        self.scheduler = ddim_scheduler_for(ctx.pipe)

    # -------------------------------------------------------------------------------------------------- pieces
    def rollout(self, ctx, step: int) -> DiffusionRollout:
        return step_rollout(ctx, step, self.scheduler, batch_size=self.batch_size, num_steps=self.sample_steps,
                               guidance_scale=self.guidance_scale, eta=self.eta, reference=self.log_divergence)

    def step_log_prob(self, ctx, roll: DiffusionRollout, idx: Tensor, n: int) -> Tensor:
        """[b]: the current policy's summed log-prob of the stored step n of samples ``idx`` (with grad)."""
        idx = idx.to(roll.latents.device)
        with ctx.autocast():
            return ddim_log_prob(ctx.pipe.unet, self.scheduler, roll.prompt_embeds[idx], roll.negative_embeds,
                                 roll.latents[idx, n], roll.latents[idx, n + 1], roll.timesteps[n],
                                 guidance_scale=self.guidance_scale, eta=self.eta)

    def train_step(self, ctx, step: int) -> dict:
        roll, st = self.ppo_step(ctx, step, timestep_fraction=self.timestep_fraction)
        div = None
        if roll.ref_means is not None:
            div = kl_per_step(roll.means, roll.ref_means, roll.stds, self.divergence_reduction).sum(1).mean()
        return stats_out(roll.rewards, divergence_mean=div, **st)

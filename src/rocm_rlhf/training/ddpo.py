"""DDPO (Black et al. 2023, arXiv 2305.13301), a baseline: DDPO-clip, PPO on a diffusion model's DDIM sampler.

Each of the T stochastic DDIM steps (:mod:`rocm_rlhf.training.ddim_policy`) is an action, the reward of the decoded
image the terminal reward. One training step samples ``batch_size`` trajectories without gradients, normalises the
rewards per prompt and makes the PPO updates of :class:`~rocm_rlhf.training.ppo.PPOMethod` on ``timestep_fraction``
of the steps. API: :class:`DDPO` (defaults: DDPO's paper configuration; ``DDPO.from_config`` reads
``baselines.ddpo``). The source read, the clip range's scale and the provenance of each default: docs/method.md,
section 'The baselines' (DDPO).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..models import ddim_scheduler_for
from ..samplers.diffusion import ddim_log_prob
from .ddim_policy import DiffusionRollout, kl_per_step, step_rollout, stored_transition
from .ppo import PPOMethod, PerPromptStatTracker, check_positive, stats_out


@dataclass
class DDPO(PPOMethod):
    """DDPO-clip; defaults from kvablack/ddpo-pytorch config/dgx.py (the paper's runs)."""

    batch_size: int = 256  # images (= reward queries) per step: one DDPO epoch (dgx: 8 GPUs x 8 x 4 batches)
    sample_steps: int = 50  # DDPO sample.num_steps (dgx)
    eta: float = 1.0  # DDPO sample.eta
    guidance_scale: float = 5.0  # DDPO sample.guidance_scale
    num_inner_epochs: int = 1  # DDPO train.num_inner_epochs
    num_minibatches: int = 4  # updates per pass: 256 samples per epoch / 64 per update (dgx)
    clip_range: float = 1e-4  # DDPO train.clip_range (on the per-dimension ratio: ppo.log_prob_scale)
    adv_clip_max: float = 5.0  # DDPO base.py train.adv_clip_max
    timestep_fraction: float = 1.0  # DDPO train.timestep_fraction
    stat_buffer_size: int = 16  # DDPO per_prompt_stat_tracking.buffer_size
    stat_min_count: int = 16  # DDPO per_prompt_stat_tracking.min_count
    log_prob_reduction: str = "mean"  # DDPO's ddim_step_with_logprob averages over dimensions
    log_divergence: bool = True  # log the KL to the pretrained model of each sampled batch (costs T UNet calls)
    divergence_reduction: str = "mean"  # its reduction over latent dimensions (as ROCM's rocm.reduction)
    log_prob_batch: int | None = 1  # latents per recomputing UNet call, whole steps (ppo.log_prob_chunks); 1: one step
    tracker: PerPromptStatTracker = field(init=False, repr=False)

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

    def step_log_prob(self, ctx, roll: DiffusionRollout, idx: Tensor, steps: Tensor | int) -> Tensor:
        """[b]: the current policy's summed log-probs of the stored steps ``steps`` ([b] per sample, or one int) of
        samples ``idx`` (with grad), in one UNet call."""
        x_t, x_next, t = stored_transition(roll, idx, steps)
        with ctx.autocast():
            return ddim_log_prob(ctx.pipe.unet, self.scheduler, roll.prompt_embeds[idx.to(x_t.device)],
                                 roll.negative_embeds, x_t, x_next, t, guidance_scale=self.guidance_scale,
                                 eta=self.eta)

    def train_step(self, ctx, step: int) -> dict:
        roll, st = self.ppo_step(ctx, step, timestep_fraction=self.timestep_fraction)
        div = None
        if roll.ref_means is not None:
            div = kl_per_step(roll.means, roll.ref_means, roll.stds, self.divergence_reduction).sum(1).mean()
        return stats_out(roll.rewards, divergence_mean=div, **st)

"""RLCM (Oertell et al. 2024, arXiv 2404.03673), a baseline: PPO on the LCM's consistency sampler.

The actions are the K - 1 stochastic re-noising transitions of :mod:`rocm_rlhf.samplers.consistency`, the reward of
the decoded image the terminal reward. One training step samples ``batch_size`` trajectories without gradients,
normalises their rewards per prompt and makes the PPO updates of :class:`~rocm_rlhf.training.ppo.PPOMethod`, the
log-probs recomputed at the stored states. API: :class:`RLCM` (defaults: RLCM's aesthetic task;
``RLCM.from_config`` reads ``baselines.rlcm``), :class:`LCMRollout`.
The source read, the conventions and the provenance of each default: docs/method.md, section 'The baselines'
(RLCM).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..samplers.common import decode_latents, transition_log_prob
from ..samplers.consistency import consistency_sample, consistency_transition, divergence_per_step
from .ppo import PPOMethod, PerPromptStatTracker, by_step, stats_out
from .rocm import consistency_step_inputs


@dataclass
class LCMRollout:
    prompts: list[str]
    prompt_embeds: Tensor  # [B, L, D]
    timesteps: list[int]  # the K LCM timesteps
    states: Tensor  # [B, K-1, C, H, W] x_{t_n}
    next_states: Tensor  # [B, K-1, C, H, W] x_{t_{n+1}}
    log_probs: Tensor  # [B, K-1] summed, at sampling time
    rewards: Tensor  # [B]
    divergence: Tensor | None = None  # [B, S] KL to the base model per regularised step (logging)


@dataclass
class RLCM(PPOMethod):
    """PPO on the LCM policy; defaults are RLCM's aesthetic-task values (Owen-Oertell/rlcm conf/task/aesthetic.yaml)."""

    batch_size: int = 8  # images (= reward queries) per step: RLCM sample_batch_size_per_gpu x num_sample_iters
    num_inner_epochs: int = 1  # RLCM num_inner_epochs
    num_minibatches: int = 1  # updates per pass: sample batch 8 / (train batch 2 x accumulation 4)
    clip_range: float = 1e-4  # RLCM clip_range (on the per-dimension ratio)
    adv_clip_max: float = 10.0  # RLCM adv_clip_max
    stat_buffer_size: int = 32  # RLCM stat_buffer_size
    stat_min_count: int = 16  # RLCM stat_min_count
    log_prob_reduction: str = "mean"  # RLCM's scheduler averages the log-density over dimensions
    log_divergence: bool = True  # log the KL to the base model (adapter disabled) of each sampled batch
    divergence_reduction: str = "mean"  # its reduction over latent dimensions (as ROCM's rocm.reduction)
    final_step: bool = True  # include the last evaluation in the logged KL (as ROCM's rocm.final_step)
    log_prob_batch: int | None = 1  # latents per backward, whole steps (ppo.log_prob_chunks); UNet calls: one per step
    tracker: PerPromptStatTracker = field(init=False, repr=False)

    @classmethod
    def from_config(cls, config: dict, **overrides) -> "RLCM":
        """RLCM from ``baselines.rlcm`` (:func:`~rocm_rlhf.training.ppo.baseline_fields`), logging its KL with ROCM's
        ``rocm.final_step``; ``overrides`` replace fields."""
        return super().from_config(config, **{"final_step": config["rocm"]["final_step"], **overrides})

    def __post_init__(self):
        self.check_ppo_settings()

    # ------------------------------------------------------------------------------------------- loop protocol
    # (queries_per_step, extra_state and load_extra_state: PPOMethod)
    def setup(self, ctx) -> None:
        if ctx.settings.num_steps < 2:
            raise ValueError(f"RLCM needs model.num_steps >= 2: with K={ctx.settings.num_steps} the LCM chain has no "
                             "stochastic transition (no action for the policy gradient)")

    # -------------------------------------------------------------------------------------------------- pieces
    def rollout(self, ctx, step: int) -> LCMRollout:
        pipe = ctx.pipe
        s = ctx.settings
        prompts, latents, noise, emb = consistency_step_inputs(ctx, step, self.batch_size)
        with torch.no_grad(), ctx.autocast():
            traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=s.num_steps,
                                      guidance_scale=s.guidance_scale, latents=latents, noise=noise,
                                      reference=self.log_divergence, reference_grad=False,
                                      final_step=self.final_step)
            images = decode_latents(pipe.vae, traj.final)
            rewards = ctx.reward(images.float(), prompts).float()
        k1 = s.num_steps - 1
        log_probs = torch.stack([transition_log_prob(traj.next_states[n], traj.means[n], traj.stds[n]) for n in range(k1)], 1)
        div = divergence_per_step(traj, "kl", self.divergence_reduction).float() if self.log_divergence else None
        return LCMRollout(prompts=prompts, prompt_embeds=emb, timesteps=traj.timesteps,
                          states=torch.stack(traj.states[:k1], 1), next_states=torch.stack(traj.next_states, 1),
                          log_probs=log_probs, rewards=rewards, divergence=div)

    def step_log_prob(self, ctx, roll: LCMRollout, idx: Tensor, steps: Tensor | int) -> Tensor:
        """[b]: the current policy's summed log-probs of the stored transitions ``steps`` ([b] per sample, or one int)
        of samples ``idx`` (with grad), from the sampler's own
        :func:`~rocm_rlhf.samplers.consistency.consistency_transition` (so at the sampling weights it reproduces the
        sampled log-prob bit for bit). That function takes one timestep per call, so per-sample steps are grouped by
        step (:func:`~rocm_rlhf.training.ppo.by_step`): one UNet call per distinct step."""
        if isinstance(steps, Tensor):
            return by_step(lambda i, n: self.step_log_prob(ctx, roll, i, n))(idx, steps)
        n = int(steps)
        idx = idx.to(roll.states.device)
        with ctx.autocast():
            _, mean, std, _ = consistency_transition(ctx.pipe.unet, ctx.pipe.scheduler, roll.prompt_embeds[idx],
                                                     roll.states[idx, n], roll.timesteps[n], roll.timesteps[n + 1],
                                                     ctx.settings.guidance_scale)
        return transition_log_prob(roll.next_states[idx, n], mean, std)

    def train_step(self, ctx, step: int) -> dict:
        roll, st = self.ppo_step(ctx, step)
        div = roll.divergence.sum(1).mean() if roll.divergence is not None else None
        return stats_out(roll.rewards, divergence_mean=div, **st)

"""D3PO (Yang et al. 2024, arXiv 2311.13231), a baseline: DPO on pairs of DDIM trajectories, a reward model judging.

Each step, every prompt gets two trajectories from the same initial noise and the higher reward wins (equal rewards
tie); per trained step the loss is ``-log sigmoid(beta * c * (clip(lr_a) - clip(lr_b)))``, with ``lr`` the scaled
log-ratio of the policy to the pretrained model (the adapter disabled) and ``c`` +1, -1 or 0.
API: :class:`D3PO` (defaults: yk7333/d3po; ``D3PO.from_config`` reads ``baselines.d3po``), :func:`d3po_logit`,
:func:`d3po_loss`, :func:`preference`. The source read and the provenance of each default: docs/method.md,
section 'The baselines' (D3PO).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import ddim_scheduler_for, latent_shape
from ..samplers.common import gaussian_log_prob
from ..samplers.diffusion import ddim_log_prob
from .ddim_policy import DiffusionRollout, diffusion_rollout, kl_per_step, stored_transition
from .ppo import (BaselineFromConfig, GradientAccumulator, check_log_prob_batch, check_positive, log_prob_chunks,
                  log_prob_scale, minibatches, stats_out, train_step_slots)


def d3po_logit(log_ratio_a: Tensor, log_ratio_b: Tensor, pref_a: Tensor, beta: float, eps: float) -> Tensor:
    """``h = beta * c * (clip(lr_a) - clip(lr_b))`` with ``c = pref_a`` in {+1, -1, 0}, ``clip`` to
    ``[log(1 - eps), log(1 + eps)]`` (D3PO's ratio clamp)."""
    lo, hi = math.log1p(-eps), math.log1p(eps)
    return beta * pref_a.to(log_ratio_a.dtype) * (log_ratio_a.clamp(lo, hi) - log_ratio_b.clamp(lo, hi))


def d3po_loss(log_ratio_a: Tensor, log_ratio_b: Tensor, pref_a: Tensor, beta: float, eps: float) -> Tensor:
    """``mean(-log sigmoid(h))`` over the pairs."""
    return -F.logsigmoid(d3po_logit(log_ratio_a, log_ratio_b, pref_a, beta, eps)).mean()


def preference(reward_a: Tensor, reward_b: Tensor) -> Tensor:
    """+1 where a has the higher reward, -1 where b has, 0 on ties (D3PO's ``compare`` for one reward)."""
    return torch.sign(reward_a.double() - reward_b.double()).float()


@dataclass
class PairRollout:
    roll: DiffusionRollout  # 2P trajectories: rows 0..P-1 are the a's, P..2P-1 the b's (same initial noise)
    ref_log_probs: Tensor  # [2P, T] summed log pi_ref of the taken steps
    pref: Tensor  # [P] +1 / -1 / 0


@dataclass
class D3PO(BaselineFromConfig):
    """D3PO with a reward model as the judge; defaults from yk7333/d3po config/base.py."""

    prompts_per_step: int = 20  # pairs per step (2 reward queries each): D3PO sample.batch_size 10 x 2 batches
    sample_steps: int = 20  # D3PO sample.num_steps
    eta: float = 1.0  # D3PO sample.eta
    guidance_scale: float = 5.0  # D3PO sample.guidance_scale
    beta: float = 0.1  # D3PO train.beta
    eps: float = 0.1  # D3PO train.eps (ratio clamp)
    num_inner_epochs: int = 1  # D3PO train.num_inner_epochs
    num_minibatches: int | None = None  # updates per pass; None: one per pair (D3PO train.batch_size 1)
    timestep_fraction: float = 1.0  # D3PO train.timestep_fraction
    log_prob_reduction: str = "mean"  # D3PO's ddim_step_with_logprob averages over dimensions
    log_divergence: bool = True  # log the KL to the pretrained model (free: the reference pass is needed anyway)
    divergence_reduction: str = "mean"
    log_prob_batch: int | None = 1  # latents (2 per pair) per recomputing UNet call, whole steps; 1: one step

    def __post_init__(self):
        from .batching import check_batch

        check_positive("baselines.d3po.prompts_per_step", self.prompts_per_step)
        check_positive("d3po sample_steps", self.sample_steps)
        if not 0 < self.eta <= 1:
            raise ValueError(f"d3po eta must lie in (0, 1] (eta = 0 is deterministic: no policy), got {self.eta}")
        check_positive("d3po beta", self.beta, integer=False)
        if not 0 < self.eps < 1:
            raise ValueError(f"d3po eps must lie in (0, 1), got {self.eps}")
        check_positive("d3po num_inner_epochs", self.num_inner_epochs)
        if self.num_minibatches is not None:
            check_positive("d3po num_minibatches", self.num_minibatches)
        if not 0 < self.timestep_fraction <= 1:
            raise ValueError(f"d3po timestep_fraction must lie in (0, 1], got {self.timestep_fraction}")
        check_batch("d3po", {"prompts_per_step": self.prompts_per_step, "num_minibatches": self.num_minibatches})
        check_log_prob_batch("d3po", self.log_prob_batch)
        log_prob_scale((1,), self.log_prob_reduction)
        self.scheduler = None

    # ------------------------------------------------------------------------------------------- loop protocol
    def setup(self, ctx) -> None:
        self.scheduler = ddim_scheduler_for(ctx.pipe)

    def updates_per_pass(self) -> int:
        return self.num_minibatches or self.prompts_per_step

    def queries_per_step(self) -> int:
        return 2 * self.prompts_per_step

    # -------------------------------------------------------------------------------------------------- pieces
    def rollout(self, ctx, step: int) -> PairRollout:
        prompts = ctx.batch_prompts(step, self.prompts_per_step)
        g = ctx.generator(step)
        p = len(prompts)
        shape = (p, *latent_shape(ctx.pipe))
        latents = torch.randn(shape, generator=g) * self.scheduler.init_noise_sigma
        noise = torch.randn((2 * p, self.sample_steps, *shape[1:]), generator=g)
        roll = diffusion_rollout(ctx, self.scheduler, prompts + prompts, torch.cat([latents, latents]), noise,
                                    num_steps=self.sample_steps, guidance_scale=self.guidance_scale, eta=self.eta,
                                    reference=True)
        nxt = roll.latents[:, 1:]
        ref_lp = torch.stack([gaussian_log_prob(nxt[:, n].to(roll.ref_means.dtype), roll.ref_means[:, n],
                                                roll.stds[n]) for n in range(self.sample_steps)], 1)
        return PairRollout(roll=roll, ref_log_probs=ref_lp, pref=preference(roll.rewards[:p], roll.rewards[p:]))

    def log_ratios(self, ctx, pr: PairRollout, idx: Tensor, steps: Tensor | int) -> tuple[Tensor, Tensor]:
        """Scaled ``log pi_theta - log pi_ref`` of the stored steps ``steps`` ([b] per pair, or one int) of the pairs
        ``idx`` [b]: (a's [b], b's [b]), with grad, in one UNet call on the 2b trajectories."""
        roll = pr.roll
        p = pr.pref.shape[0]
        idx = idx.to(roll.latents.device)
        rows = torch.cat([idx, idx + p])
        steps = torch.cat([steps, steps]) if isinstance(steps, Tensor) else int(steps)
        x_t, x_next, t = stored_transition(roll, rows, steps)
        with ctx.autocast():
            lp = ddim_log_prob(ctx.pipe.unet, self.scheduler, roll.prompt_embeds[rows], roll.negative_embeds, x_t,
                               x_next, t, guidance_scale=self.guidance_scale, eta=self.eta)
        scale = log_prob_scale(roll.latents.shape[2:], self.log_prob_reduction)
        ref_steps = steps.to(pr.ref_log_probs.device) if isinstance(steps, Tensor) else steps
        lr = (lp - pr.ref_log_probs[rows.to(pr.ref_log_probs.device), ref_steps].to(lp.device, lp.dtype)) * scale
        return lr[: len(idx)], lr[len(idx):]

    def accumulate(self, ctx, acc: GradientAccumulator, pr: PairRollout, idx: Tensor, slots: Tensor) -> None:
        """Accumulate into ``acc`` the gradient of one update's loss: the mean of the D3PO loss over the pairs ``idx``
        [b] and their k trained steps ``slots`` [b, k], the steps recomputed ``log_prob_batch`` latents per call
        (:func:`~rocm_rlhf.training.ppo.log_prob_chunks`, 2b latents a step), each call's pairs concatenated step after
        step and backpropagated at once."""
        b, k = slots.shape
        for chunk in log_prob_chunks(k, 2 * b, self.log_prob_batch):
            c = len(chunk)
            lr_a, lr_b = self.log_ratios(ctx, pr, idx.repeat(c), slots[:, chunk.start:chunk.stop].T.reshape(-1))
            pref = pr.pref[idx.to(pr.pref.device)].to(lr_a.device)
            lr_a, lr_b = lr_a.view(c, b), lr_b.view(c, b)
            # the mean over the minibatch's pairs and its k trained steps
            loss = sum(d3po_loss(lr_a[i], lr_b[i], pref, self.beta, self.eps) for i in range(c)) / k
            acc.backward(loss)

    def train_step(self, ctx, step: int) -> dict:
        pr = self.rollout(ctx, step)
        p, steps = pr.pref.shape[0], self.sample_steps
        losses = []
        for epoch in range(self.num_inner_epochs):
            g = ctx.generator(step, 1 + epoch)
            for idx in minibatches(p, self.updates_per_pass(), g):
                slots = train_step_slots(len(idx), steps, self.timestep_fraction, g)
                acc = GradientAccumulator(ctx.params)
                self.accumulate(ctx, acc, pr, idx, slots)
                ctx.update(acc.surrogate())
                losses.append(acc.value)
        roll = pr.roll
        div = None
        if self.log_divergence:
            div = kl_per_step(roll.means, roll.ref_means, roll.stds, self.divergence_reduction).sum(1).mean()
        return stats_out(roll.rewards, loss=sum(losses) / len(losses), divergence_mean=div,
                            ties=(pr.pref == 0).float().mean().item())

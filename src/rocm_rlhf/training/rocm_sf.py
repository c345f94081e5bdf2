"""ROCM for rewards given only as numbers (beyond the paper): a score-function (policy-gradient) term through the same
Gaussian transitions ROCM regularises, alone or added to ROCM's pathwise gradient of a differentiable surrogate.

The objective is ROCM's, ``J(theta) = E[R] - beta E[sum_n D_n]`` (D one of the f-divergences between the policy's and
the reference's transition at the visited states), for a reward ``R`` without gradients (a compressibility, a count,
a human's click). Two unbiased estimators of its gradient, each one optimizer update per step (on-policy, no PPO
ratio):

``pure`` (no surrogate): the chain is sampled without gradients; the return of sample i is
``G_i = R_i - beta sum_n D_n(x_i)`` (the regulariser is part of what the score function weighs, since the visited
states depend on theta) and the loss is

    - mean_i (G_i - b_i) sum_n log pi_theta(x_{n+1} | x_n)  +  beta mean_i sum_n D_n(x_i)

with the states held fixed (the second term is the regulariser's direct gradient at those states), ``b_i`` the
leave-one-out mean of the other samples' returns (a baseline that keeps the estimator unbiased).

``hybrid`` (a differentiable surrogate S, e.g. a learned proxy of R): ROCM's pathwise loss on the surrogate,
``-mean S + beta mean sum_n D_n`` with gradients through the whole chain, plus the score-function term for what the
surrogate misses, ``- mean_i (R_i - S_i - b_i) sum_n log pi_theta(x_{n+1} | x_n)`` (``b_i`` the leave-one-out mean
of the residuals). Since ``grad E[R] = grad E[S] + grad E[R - S]``, it is unbiased for any S, and its variance is that
of the residual: the better S tracks R, the closer it is to ROCM's.

The log-densities are recomputed at the sampled states (detached), with the sampler's own transition
(:func:`rocm_rlhf.samplers.consistency.consistency_transition`), summed over latent dimensions (the true log-density:
the hybrid's two terms must be on the same scale). API: :class:`ROCMScoreFunction`. Library only so far: no pipeline
arm yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..samplers.common import decode_latents, transition_log_prob
from ..samplers.consistency import consistency_sample, consistency_transition, divergence_per_step
from .loop import reward_stats
from .rocm import Regularised, consistency_step_inputs


def leave_one_out_advantages(returns: torch.Tensor) -> torch.Tensor:
    """``G_i - mean_{j != i} G_j`` for a batch of returns [B] (B >= 2): each sample's baseline uses only the others,
    so the score-function estimator stays unbiased."""
    n = returns.shape[0]
    if n < 2:
        raise ValueError("a score-function step needs at least 2 samples per batch (leave-one-out baseline)")
    return returns - (returns.sum() - returns) / (n - 1)


@dataclass
class ROCMScoreFunction(Regularised):
    surrogate: Any = None  # a differentiable scorer (images, prompts) -> [B]: the hybrid; None: the pure estimator
    data_parallel: ClassVar[bool] = False

    def __post_init__(self):
        self.check_regulariser()
        if self.surrogate is not None and not getattr(self.surrogate, "differentiable", True):
            raise ValueError("the hybrid's surrogate must be a differentiable scorer (its pathwise gradient is used)")

    def queries_per_step(self):
        return None

    def setup(self, ctx) -> None:
        if ctx.settings.num_steps < 2:
            raise ValueError(f"a score-function step needs model.num_steps >= 2: with K={ctx.settings.num_steps} the "
                             "chain has no stochastic transition")
        if ctx.settings.batch_size < 2:
            raise ValueError("a score-function step needs train.batch_size >= 2 (leave-one-out baseline)")
        if self.surrogate is not None:
            self.surrogate = self.surrogate.to(ctx.device)

    def fixed_state_means(self, ctx, traj, emb, count: int) -> list[torch.Tensor]:
        """The policy's transition means at the first ``count`` sampled states, held fixed (detached): gradients
        into the adapter only, from the sampler's own transition (the last one, with ``final_step``, re-noises to its
        own timestep, as ROCM regularises it)."""
        s = ctx.settings
        means = []
        for n in range(count):
            t = traj.timesteps[n]
            t_next = t if n == s.num_steps - 1 else traj.timesteps[n + 1]
            with ctx.autocast():
                means.append(consistency_transition(ctx.pipe.unet, ctx.pipe.scheduler, emb, traj.states[n].detach(),
                                                    t, t_next, s.guidance_scale)[1])
        return means

    @staticmethod
    def log_prob(traj, means: list[torch.Tensor]) -> torch.Tensor:
        """[B]: sum over the stochastic steps of log pi_theta(x_{n+1} | x_n), the taken states constants."""
        return sum(transition_log_prob(nxt, mean, std) for nxt, mean, std in zip(traj.next_states, means, traj.stds))

    def train_step(self, ctx, step: int) -> dict:
        s = ctx.settings
        pipe = ctx.pipe
        prompts, latents, noise, emb = consistency_step_inputs(ctx, step)
        hybrid = self.surrogate is not None
        regularised = self.beta > 0
        # hybrid: ROCM's pathwise pass; pure: the chain without gradients (the regulariser's direct gradient at the
        # fixed states comes from the recomputed transitions below)
        with torch.set_grad_enabled(hybrid), ctx.autocast():
            traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=s.num_steps,
                                      guidance_scale=s.guidance_scale, latents=latents, noise=noise, reference=True,
                                      reference_grad=hybrid and regularised, final_step=self.final_step,
                                      checkpoint=s.gradient_checkpointing and hybrid)
            images = decode_latents(pipe.vae, traj.final)
        with torch.no_grad():
            reward = ctx.reward(images.detach().float(), prompts).float()  # numbers only
        div = divergence_per_step(traj, self.logged_divergence, self.reduction).float()  # [B, S]
        # the policy at the fixed states: the K-1 stochastic steps for the log-densities, and (pure, beta > 0) every
        # regularised step for the regulariser's direct gradient
        direct = regularised and not hybrid
        means = self.fixed_state_means(ctx, traj, emb, len(traj.means) if direct else s.num_steps - 1)
        log_prob = self.log_prob(traj, means[: s.num_steps - 1])  # [B], gradients into the adapter
        out = {}
        if hybrid:
            surrogate = self.surrogate(images.float(), prompts).float()
            adv = leave_one_out_advantages((reward - surrogate).detach())
            loss = -surrogate.mean() - (adv * log_prob).mean()
            if regularised:
                loss = loss + self.beta * div.sum(1).mean()
            out["surrogate_mean"] = surrogate.detach().mean().item()
            out["residual_std"] = (reward - surrogate).detach().double().std().item()
        else:
            returns = reward - self.beta * div.detach().sum(1) if regularised else reward
            adv = leave_one_out_advantages(returns)
            loss = -(adv * log_prob).mean()
            if direct:  # the regulariser's direct gradient at the fixed states (the reference's means constants)
                from ..divergences import gaussian_divergence

                fixed = torch.stack([gaussian_divergence(self.divergence, mean, ref.detach(), sd,
                                                         reduction=self.reduction)
                                     for mean, ref, sd in zip(means, traj.ref_means, traj.stds)], 1).float()
                loss = loss + self.beta * fixed.sum(1).mean()
        ctx.update(loss)
        div_total = div.detach().sum(1)
        out.update({"loss": loss.item(), **reward_stats(reward), "divergence_mean": div_total.mean().item(),
                    "advantage_std": adv.double().std().item()})
        return out

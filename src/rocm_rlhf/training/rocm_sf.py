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
the hybrid's two terms must be on the same scale). API: :class:`ROCMScoreFunction` (pure, or hybrid when given a
surrogate) and :class:`ROCMHybrid` (the hybrid, its surrogate required); the pipeline's methods ``rocm_sf`` and
``rocm_hybrid`` (config block ``score_function``, the surrogate ``train.surrogate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..rewards import scores_of
from ..samplers.common import decode_latents, transition_log_prob
from ..samplers.consistency import consistency_sample, consistency_transition, divergence_per_step
from .loop import reward_stats
from .rocm import Regularised, consistency_step_inputs


def leave_one_out_advantages(returns: torch.Tensor, images_per_prompt: int = 1) -> torch.Tensor:
    """``G_i - mean_{j != i} G_j`` for a batch of returns [B]: each sample's baseline uses only the others, so the
    score-function estimator stays unbiased. ``images_per_prompt`` k >= 2: the others are the k - 1 other images of
    the same prompt (consecutive groups of k, as :func:`rocm_rlhf.training.rocm.consistency_step_inputs` draws
    them), so that a prompt's difficulty drops out of the advantage; 1: the other samples of the whole batch (B >= 2)."""
    k = int(images_per_prompt)
    n = returns.shape[0]
    if k >= 2:
        if n % k:
            raise ValueError(f"a batch of {n} returns does not split into groups of {k} images per prompt")
        r = returns.reshape(-1, k)
        return (r - (r.sum(1, keepdim=True) - r) / (k - 1)).reshape(-1)
    if n < 2:
        raise ValueError("a score-function step needs at least 2 samples per batch (leave-one-out baseline)")
    return returns - (returns.sum() - returns) / (n - 1)


@dataclass
class ROCMScoreFunction(Regularised):
    # a differentiable scorer (images, prompts) -> [B], or a scorer's name (loaded in setup with surrogate_kwargs):
    # the hybrid; None: the pure estimator
    surrogate: Any = None
    surrogate_kwargs: dict | None = None
    images_per_prompt: int = 1  # k >= 2: batch_size / k prompts, k images each, the baseline within each prompt
    data_parallel: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: dict, *, divergence: str = "kl", beta: float = 0.0, surrogate: Any = None,
                    surrogate_kwargs: dict | None = None) -> "ROCMScoreFunction":
        """The run's ``divergence`` and ``beta`` (from its run id), ``rocm.reduction`` and ``rocm.final_step`` (the
        regulariser as ROCM's), ``score_function.images_per_prompt``; ``surrogate`` (a scorer or its name, with
        ``surrogate_kwargs``) makes it the hybrid."""
        r = config["rocm"]
        k = (config.get("score_function") or {}).get("images_per_prompt", 1)
        return cls(divergence=divergence, beta=float(beta), reduction=r["reduction"], final_step=r["final_step"],
                   surrogate=surrogate, surrogate_kwargs=surrogate_kwargs, images_per_prompt=int(k))

    def __post_init__(self):
        self.check_regulariser()
        if int(self.images_per_prompt) < 1:
            raise ValueError(f"images_per_prompt must be >= 1, got {self.images_per_prompt}")
        self.check_surrogate()

    def check_surrogate(self) -> None:
        """The hybrid's surrogate (a scorer, or a name the scorer catalogue knows) must be differentiable: its
        pathwise gradient is used. Checked when the method is made and again once a named one is loaded."""
        s = self.surrogate
        if s is None:
            return
        if isinstance(s, str):
            from ..infra.scorer_catalogue import known_scorers

            differentiable, what = known_scorers().get(s, (True, ""))[0], s
        else:
            differentiable, what = getattr(s, "differentiable", True), type(s).__name__
        if not differentiable:
            raise ValueError(f"the hybrid's surrogate must be a differentiable scorer (its pathwise gradient is "
                             f"used): '{what}' is not differentiable")

    def queries_per_step(self):
        return None

    def setup(self, ctx) -> None:
        if ctx.settings.num_steps < 2:
            raise ValueError(f"a score-function step needs model.num_steps >= 2: with K={ctx.settings.num_steps} the "
                             "chain has no stochastic transition")
        if ctx.settings.batch_size < 2:
            raise ValueError("a score-function step needs train.batch_size >= 2 (leave-one-out baseline)")
        if ctx.settings.batch_size % self.images_per_prompt:
            raise ValueError(f"train.batch_size = {ctx.settings.batch_size} is not a multiple of images_per_prompt = "
                             f"{self.images_per_prompt} (the images of one prompt share a baseline)")
        if isinstance(self.surrogate, str):
            from ..rewards import load_scorer

            self.surrogate = load_scorer(self.surrogate, **(self.surrogate_kwargs or {}))
            self.check_surrogate()
        if self.surrogate is not None:
            self.surrogate = self.surrogate.to(ctx.device)

    def fixed_state_means(self, ctx, traj, emb, count: int) -> list[torch.Tensor]:
        """The policy's transition means at the first ``count`` sampled states, held fixed (detached): gradients
        into the adapter only, from the sampler's own transition (the last one, with ``final_step``, re-noises to its
        own timestep, as ROCM regularises it). With ``train.gradient_checkpointing`` each transition's activations
        are recomputed in the backward pass instead of held (the same gradients, the memory of one UNet call)."""
        s = ctx.settings
        unet, scheduler = ctx.pipe.unet, ctx.pipe.scheduler

        def mean(state, t, t_next):
            return consistency_transition(unet, scheduler, emb, state, t, t_next, s.guidance_scale)[1]

        means = []
        for n in range(count):
            t = traj.timesteps[n]
            t_next = t if n == s.num_steps - 1 else traj.timesteps[n + 1]
            with ctx.autocast():
                state = traj.states[n].detach()
                if s.gradient_checkpointing and torch.is_grad_enabled():
                    from torch.utils.checkpoint import checkpoint

                    means.append(checkpoint(mean, state, t, t_next, use_reentrant=False))
                else:
                    means.append(mean(state, t, t_next))
        return means

    @staticmethod
    def log_prob(traj, means: list[torch.Tensor]) -> torch.Tensor:
        """[B]: sum over the stochastic steps of log pi_theta(x_{n+1} | x_n), the taken states constants."""
        return sum(transition_log_prob(nxt, mean, std) for nxt, mean, std in zip(traj.next_states, means, traj.stds))

    def train_step(self, ctx, step: int) -> dict:
        s = ctx.settings
        pipe = ctx.pipe
        prompts, latents, noise, emb = consistency_step_inputs(ctx, step, images_per_prompt=self.images_per_prompt)
        hybrid = self.surrogate is not None
        regularised = self.beta > 0
        # hybrid: ROCM's pathwise pass; pure: the chain without gradients (the regulariser's direct gradient at the
        # fixed states comes from the recomputed transitions below)
        with torch.set_grad_enabled(hybrid), ctx.autocast():
            traj = consistency_sample(pipe.unet, pipe.scheduler, emb, num_steps=s.num_steps,
                                      guidance_scale=s.guidance_scale, latents=latents, noise=noise, reference=True,
                                      reference_grad=hybrid and regularised, final_step=self.final_step,
                                      grad_steps=(s.truncated_backprop or None) if hybrid else None,
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
            with ctx.autocast():  # as ROCM scores its reward
                surrogate = scores_of(self.surrogate, images.float(), prompts).float()
            adv = leave_one_out_advantages((reward - surrogate).detach(), self.images_per_prompt)
            loss = -surrogate.mean() - (adv * log_prob).mean()
            if regularised:
                loss = loss + self.beta * div.sum(1).mean()
            out["surrogate_mean"] = surrogate.detach().mean().item()
            out["residual_std"] = (reward - surrogate).detach().double().std().item()
        else:
            returns = reward - self.beta * div.detach().sum(1) if regularised else reward
            adv = leave_one_out_advantages(returns, self.images_per_prompt)
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


@dataclass
class ROCMHybrid(ROCMScoreFunction):
    """The hybrid estimator (:class:`ROCMScoreFunction` with a surrogate), as the pipeline's method ``rocm_hybrid``:
    a surrogate is required."""

    def __post_init__(self):
        if self.surrogate is None or self.surrogate == "":
            raise ValueError("the hybrid score-function method needs a differentiable surrogate of the reward "
                             "(config key train.surrogate)")
        super().__post_init__()

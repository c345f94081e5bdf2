"""The policy-gradient machinery the baselines share (RLCM, DDPO, D3PO, DPOK).

API: :func:`baseline_fields` (a baseline's dataclass fields from ``baselines.<name>``), :func:`log_prob_scale` (the
factor ``s`` ratios are formed from: ``1/(C*H*W)`` for ``"mean"``, as the reference code, or 1 for ``"sum"``),
:class:`PerPromptStatTracker` (DDPO's per-prompt advantages), :func:`ppo_clip_loss`, :class:`GradientAccumulator`
(the memory of one UNet call whatever the number of sampler steps), :func:`log_prob_chunks` (which stored steps share
one UNet call: ``log_prob_batch``), :func:`minibatches`, :func:`train_step_slots`, :func:`ppo_train` and
:class:`PPOMethod` (what RLCM and DDPO share), :func:`stats_out` (the logged scalars).
The conventions and their reasons: docs/method.md, section 'The baselines'.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..models import latent_shape
from .loop import reward_stats

LOG_PROB_REDUCTIONS = ("mean", "sum")


def log_prob_scale(latent_shape: Sequence[int], reduction: str) -> float:
    """The factor ``s`` applied to summed log-probs before a ratio is formed: ``1/prod(latent_shape)`` for ``"mean"``
    (the reference code averages log-densities over the dimensions, and its clip ranges are calibrated on that scale)
    or 1 for ``"sum"`` (the true density ratio)."""
    if reduction not in LOG_PROB_REDUCTIONS:
        raise ValueError(f"log_prob_reduction must be one of {LOG_PROB_REDUCTIONS}, got {reduction!r}")
    return 1.0 / math.prod(int(d) for d in latent_shape) if reduction == "mean" else 1.0


SETTINGS_OVERRIDES = ("lr", "grad_clip", "weight_decay")
"""Keys of a ``baselines.<method>`` block that set the training loop (optimizer, clipping), not the method's fields."""


def baseline_fields(config: dict, name: str) -> dict:
    """The dataclass fields of baseline ``name`` from the validated config: its block ``baselines.<name>`` less
    :data:`SETTINGS_OVERRIDES`, the shared ``baselines.log_divergence``, and ``rocm.reduction`` as the reduction of the
    logged divergence (so the baselines' drift is logged as ROCM's)."""
    b = config["baselines"]
    fields = {k: v for k, v in b[name].items() if k not in SETTINGS_OVERRIDES}
    fields.update(log_divergence=b["log_divergence"], divergence_reduction=config["rocm"]["reduction"])
    return fields


class BaselineFromConfig:
    """A baseline built from its config block: ``config_name`` is the method's name in rocm_rlhf.runs.METHODS (set
    from the catalogue entry that names the class), and :meth:`from_config` reads :func:`baseline_fields`, plus the
    method's DDIM sampler (:func:`~rocm_rlhf.training.ddim_policy.diffusion_sampling`) for a diffusion method."""

    config_name: str

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        from .. import runs

        path = f"{cls.__module__}:{cls.__qualname__}"
        name = next((m.name for m in runs.METHODS.values() if m.class_path == path), None)
        if name is not None:  # subclasses of a catalogued class (tests) keep its name
            cls.config_name = name

    @classmethod
    def from_config(cls, config: dict, **overrides):
        """The method from ``baselines.<config_name>``; ``overrides`` replace fields."""
        from .. import runs

        fields = baseline_fields(config, cls.config_name)
        if runs.generator(cls.config_name) == "diffusion":
            from .ddim_policy import diffusion_sampling

            fields.update(diffusion_sampling(config, cls.config_name))
        return cls(**{**fields, **overrides})


def check_positive(name: str, value, integer: bool = True) -> None:
    ok = (isinstance(value, int) and not isinstance(value, bool)) if integer else isinstance(value, (int, float))
    if not ok or not value > 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


# ---------------------------------------------------------------------------------------------------------- advantages
class PerPromptStatTracker:
    """DDPO's per-prompt reward normalisation: an advantage is ``(r - mean) / (std + 1e-6)`` over its prompt's FIFO of
    the last ``buffer_size`` rewards once it holds ``min_count``, over the current batch before (population std); the
    buffers are state, checkpointed through the method's ``extra_state``."""

    def __init__(self, buffer_size: int = 16, min_count: int = 16):
        check_positive("stat_buffer_size", buffer_size)
        check_positive("stat_min_count", min_count)
        self.buffer_size = buffer_size
        self.min_count = min_count
        self.stats: dict[str, deque] = {}

    def update(self, prompts: Sequence[str], rewards) -> Tensor:
        """Advantages (float64 tensor [B]) of ``rewards`` [B]; the rewards are appended to their prompts' buffers."""
        r = np.asarray(torch.as_tensor(rewards).detach().cpu().double().numpy() if isinstance(rewards, Tensor)
                       else rewards, dtype=np.float64)
        prompts = np.asarray(list(prompts), dtype=object)
        if r.ndim != 1 or len(r) != len(prompts):
            raise ValueError(f"need one reward per prompt, got rewards of shape {r.shape} for {len(prompts)} prompts")
        adv = np.empty_like(r)
        for prompt in sorted(set(prompts.tolist())):
            mask = prompts == prompt
            buf = self.stats.setdefault(prompt, deque(maxlen=self.buffer_size))
            buf.extend(r[mask].tolist())
            if len(buf) < self.min_count:
                mean, std = r.mean(), r.std() + 1e-6
            else:
                mean, std = np.mean(buf), np.std(buf) + 1e-6
            adv[mask] = (r[mask] - mean) / std
        return torch.from_numpy(adv)

    def state_dict(self) -> dict:
        return {"buffer_size": self.buffer_size, "min_count": self.min_count,
                "stats": {k: list(v) for k, v in self.stats.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.stats = {k: deque(v, maxlen=self.buffer_size) for k, v in state["stats"].items()}


# ----------------------------------------------------------------------------------------------------------------- PPO
def ppo_clip_loss(log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, clip_range: float,
                  adv_clip_max: float) -> tuple[Tensor, dict]:
    """DDPO-clip / RLCM PPO loss on (already scaled) log-probs [b]; returns (loss, stats).

    ``stats``: ``ratio`` (mean), ``clipfrac`` (share with |r - 1| > clip_range), ``approx_kl`` (``mean((lp -
    lp_old)^2) / 2``, as the references log), ``unclipped`` and ``clipped`` (the means of the two objectives).
    """
    adv = advantages.to(log_prob.dtype).clamp(-adv_clip_max, adv_clip_max)
    diff = log_prob - old_log_prob.detach().to(log_prob.dtype)
    ratio = torch.exp(diff)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {"ratio": ratio.mean().item(), "clipfrac": ((ratio - 1).abs() > clip_range).double().mean().item(),
                 "approx_kl": 0.5 * (diff**2).mean().item(), "unclipped": unclipped.mean().item(),
                 "clipped": clipped.mean().item()}
    return loss, stats


class GradientAccumulator:
    """Sum of the gradients of several losses, each backpropagated at once (its graph freed, so memory stays at one
    UNet call), handed to ``Context.update`` as one linear surrogate whose value is the summed loss and whose gradient
    is exactly the summed gradient (the loop's NaN checks, clipping and stepping apply unchanged)."""

    def __init__(self, params: Sequence[torch.nn.Parameter]):
        self.params = list(params)
        self.grads = [torch.zeros_like(p) for p in self.params]
        self.value = 0.0
        self.count = 0

    def backward(self, loss: Tensor) -> None:
        """Add ``grad(loss)`` (the graph is freed) and ``loss``'s value."""
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        for buf, g in zip(self.grads, grads):
            if g is not None:
                buf.add_(g)
        self.value += float(loss.detach())
        self.count += 1

    def surrogate(self) -> Tensor:
        """A scalar with value ``sum of losses`` and gradient ``sum of their gradients`` w.r.t. the parameters."""
        lin = sum((p * g.to(p.dtype)).sum() for p, g in zip(self.params, self.grads))
        return lin - lin.detach() + self.value


def check_log_prob_batch(name: str, value) -> None:
    """``baselines.<name>.log_prob_batch`` is None or a positive integer (:func:`log_prob_chunks`)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"baselines.{name}.log_prob_batch must be a positive integer (the most latents per UNet call "
                         f"when recomputing stored steps; 1: one step per call) or null (all the steps of an update "
                         f"in one call), got {value!r}")


def log_prob_chunks(num_units: int, unit_size: int, log_prob_batch: int | None) -> list[range]:
    """The units (sampler steps of a minibatch, or DPOK minibatches) of one optimizer update, ``range(num_units)``,
    split into consecutive chunks whose log-probs are recomputed in one UNet call and backpropagated at once.

    ``log_prob_batch`` is the most latents per call (before classifier-free guidance doubles the UNet's batch), in
    whole units of ``unit_size`` latents: ``log_prob_batch // unit_size`` units per chunk, at least one, so any value
    up to ``unit_size`` (e.g. 1) gives one unit per call; None: all the units in one call.
    """
    if log_prob_batch is None:
        per = max(1, num_units)
    else:
        check_log_prob_batch("<method>", log_prob_batch)
        per = max(1, log_prob_batch // unit_size)
    return [range(s, min(s + per, num_units)) for s in range(0, num_units, per)]


def by_step(fn: Callable[[Tensor, int], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """Turn ``fn(idx, n) -> [b]`` (one sampler step for all samples) into ``f(idx, steps) -> [b]`` with per-sample
    steps, calling ``fn`` once per distinct step (so UNet calls get a scalar timestep)."""

    def f(idx: Tensor, steps: Tensor) -> Tensor:
        parts, order = [], []
        for n in torch.unique(steps).tolist():
            m = steps == n
            parts.append(fn(idx[m], int(n)))
            order.append(torch.nonzero(m).flatten())
        out = torch.cat(parts)
        inv = torch.empty_like(torch.cat(order))
        inv[torch.cat(order)] = torch.arange(len(inv))
        return out[inv.to(out.device)]

    return f


def minibatches(n: int, num_minibatches: int, generator: torch.Generator) -> list[Tensor]:
    """A random permutation of ``range(n)`` split into ``num_minibatches`` equal parts."""
    if n % num_minibatches:
        raise ValueError(f"num_minibatches={num_minibatches} must divide the {n} samples of a step; change the "
                         "method's num_minibatches or its rollout batch")
    return list(torch.randperm(n, generator=generator).chunk(num_minibatches))


def train_step_slots(batch: int, num_steps: int, timestep_fraction: float, generator: torch.Generator) -> Tensor:
    """[batch, k] sampler-step indices to train on, ``k = int(num_steps * timestep_fraction)`` (DDPO's rule, at
    least 1): all steps in order when the fraction is 1, else a random subset per sample."""
    if not 0 < timestep_fraction <= 1:
        raise ValueError(f"timestep_fraction must lie in (0, 1], got {timestep_fraction}")
    k = max(1, int(num_steps * timestep_fraction))
    if k == num_steps:
        return torch.arange(num_steps).expand(batch, -1)
    return torch.stack([torch.randperm(num_steps, generator=generator)[:k] for _ in range(batch)])


def ppo_accumulate(acc: GradientAccumulator, log_prob_fn: Callable[[Tensor, Tensor], Tensor], idx: Tensor,
                   slots: Tensor, old_log_probs: Tensor, advantages: Tensor, scale: float, clip_range: float,
                   adv_clip_max: float, log_prob_batch: int | None = 1) -> dict:
    """Accumulate into ``acc`` the gradient of the PPO loss of one minibatch, averaged over its trained steps.

    ``log_prob_fn(idx [m], steps [m]) -> [m]`` recomputes the summed log-probs with gradients, with per-sample steps;
    ``slots`` [b, k] are the step indices per sample; ``old_log_probs`` [B, S] (summed) and ``advantages`` [B] are the
    whole batch's. The k steps are recomputed in chunks of whole steps (:func:`log_prob_chunks`: at most
    ``log_prob_batch`` samples per call, at least one step; None: all k steps in one call), each chunk called once on
    its steps' samples concatenated step after step and backpropagated at once; the loss is step j's PPO loss
    (:func:`ppo_clip_loss`) divided by k, summed over j, whatever the chunks.
    """
    b, k = slots.shape
    stats: dict[str, float] = {}
    for chunk in log_prob_chunks(k, b, log_prob_batch):
        steps = slots[:, chunk.start:chunk.stop]  # [b, c]
        lp = log_prob_fn(idx.repeat(len(chunk)), steps.T.reshape(-1)).view(len(chunk), b) * scale
        loss = 0.0
        for i, j in enumerate(chunk):
            loss_j, st = _ppo_step_loss(lp[i], slots[:, j], idx, old_log_probs, advantages, scale, clip_range,
                                        adv_clip_max)
            loss = loss + loss_j / k
            for key, v in st.items():
                stats[key] = stats.get(key, 0.0) + v / k
        acc.backward(loss)
    return stats


def _ppo_step_loss(lp: Tensor, steps: Tensor, idx: Tensor, old_log_probs: Tensor, advantages: Tensor, scale: float,
                   clip_range: float, adv_clip_max: float) -> tuple[Tensor, dict]:
    """:func:`ppo_clip_loss` of one trained step: the scaled log-probs ``lp`` [b] of samples ``idx`` at ``steps``."""
    old = old_log_probs[idx.to(old_log_probs.device), steps.to(old_log_probs.device)].to(lp.device) * scale
    return ppo_clip_loss(lp, old, advantages[idx.to(advantages.device)].to(lp.device), clip_range, adv_clip_max)


def ppo_train(ctx, step: int, *, log_prob_fn, old_log_probs: Tensor, advantages: Tensor, scale: float,
              num_inner_epochs: int, num_minibatches: int, clip_range: float, adv_clip_max: float,
              timestep_fraction: float = 1.0, log_prob_batch: int | None = 1) -> dict:
    """The PPO updates of one training step: ``num_inner_epochs`` passes over the sampled batch, each shuffled
    (generator stream 1 + epoch) and split into ``num_minibatches`` minibatches, one ``ctx.update`` per minibatch
    (its log-probs recomputed ``log_prob_batch`` samples per call: :func:`ppo_accumulate`). Returns the mean loss and
    PPO statistics over the updates."""
    batch, num_steps = old_log_probs.shape
    totals: dict[str, float] = {}
    n_updates = 0
    for epoch in range(num_inner_epochs):
        g = ctx.generator(step, 1 + epoch)
        for idx in minibatches(batch, num_minibatches, g):
            slots = train_step_slots(len(idx), num_steps, timestep_fraction, g)
            acc = GradientAccumulator(ctx.params)
            st = ppo_accumulate(acc, log_prob_fn, idx, slots, old_log_probs, advantages, scale, clip_range,
                                adv_clip_max, log_prob_batch=log_prob_batch)
            ctx.update(acc.surrogate())
            st = {"loss": acc.value, "ratio": st["ratio"], "clipfrac": st["clipfrac"], "approx_kl": st["approx_kl"]}
            for key, v in st.items():
                totals[key] = totals.get(key, 0.0) + v
            n_updates += 1
    return {k: v / n_updates for k, v in totals.items()}


class PPOMethod(BaselineFromConfig):
    """What DDPO-clip and RLCM share, as a mixin of their dataclasses: the PPO settings' checks, the per-prompt
    tracker as checkpointed state, and one training step (rollout, advantages, :func:`ppo_train`).

    The dataclass provides the fields ``batch_size``, ``num_inner_epochs``, ``num_minibatches``, ``clip_range``,
    ``adv_clip_max``, ``stat_buffer_size``, ``stat_min_count``, ``log_prob_reduction``, ``log_prob_batch`` and
    ``tracker``, the class attribute ``config_name`` (its block under ``baselines:``, from :class:`BaselineFromConfig`),
    and the methods ``rollout(ctx, step)`` (a rollout with ``prompts``, ``rewards`` [B] and summed ``log_probs``
    [B, S]) and ``step_log_prob(ctx, roll, idx, steps) -> [b]`` (the summed log-probs of samples ``idx`` at their
    steps ``steps`` [b], or all at one int step, with gradients).
    """

    def check_ppo_settings(self) -> None:
        """Validate the shared PPO fields and create the tracker (call from ``__post_init__``): before any work, a
        rollout batch under which the method cannot learn is an error naming its config keys
        (:func:`rocm_rlhf.training.batching.check_batch`)."""
        from .batching import check_batch

        name = self.config_name
        check_positive(f"baselines.{name}.batch_size", self.batch_size)
        check_positive(f"baselines.{name}.num_inner_epochs", self.num_inner_epochs)
        check_positive(f"baselines.{name}.num_minibatches", self.num_minibatches)
        check_positive(f"baselines.{name}.clip_range", self.clip_range, integer=False)
        check_positive(f"baselines.{name}.adv_clip_max", self.adv_clip_max, integer=False)
        check_batch(name, {"batch_size": self.batch_size, "num_minibatches": self.num_minibatches})
        check_log_prob_batch(name, self.log_prob_batch)
        log_prob_scale((1,), self.log_prob_reduction)
        self.tracker = PerPromptStatTracker(self.stat_buffer_size, self.stat_min_count)

    def queries_per_step(self) -> int:
        return self.batch_size

    def extra_state(self) -> dict:
        return {"tracker": self.tracker.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.tracker.load_state_dict(state["tracker"])

    def ppo_step(self, ctx, step: int, timestep_fraction: float = 1.0):
        """One training step: ``roll = self.rollout(ctx, step)``, per-prompt advantages of its rewards, and the PPO
        updates of :func:`ppo_train` on log-probs scaled by :func:`log_prob_scale` of the pipeline's latent shape
        (:func:`latent_shape`, the shape the rollouts draw), ``log_prob_batch`` samples per recomputing call. Returns
        ``(roll, stats)``."""
        roll = self.rollout(ctx, step)
        adv = self.tracker.update(roll.prompts, roll.rewards)
        scale = log_prob_scale(latent_shape(ctx.pipe), self.log_prob_reduction)
        st = ppo_train(ctx, step, log_prob_fn=lambda idx, steps: self.step_log_prob(ctx, roll, idx, steps),
                       old_log_probs=roll.log_probs, advantages=adv, scale=scale,
                       num_inner_epochs=self.num_inner_epochs, num_minibatches=self.num_minibatches,
                       clip_range=self.clip_range, adv_clip_max=self.adv_clip_max,
                       timestep_fraction=timestep_fraction, log_prob_batch=self.log_prob_batch)
        return roll, st


def stats_out(reward: Tensor, **extra) -> dict:
    """The logged scalars: reward mean and std of the freshly sampled batch (:func:`~.loop.reward_stats`), plus
    ``extra``."""
    out = reward_stats(reward)
    out.update({k: float(v) for k, v in extra.items() if v is not None})
    return out

"""DPOK (Fan et al. 2023, arXiv 2305.16381), a baseline: policy gradient on DDIM with a value baseline and a per-step
regulariser towards the pretrained model.

Each step samples a rollout into a FIFO replay buffer of transitions, fits :class:`ValueNetwork` to the final rewards,
then makes ``policy_updates`` updates of ``-reward_weight * A * clip(ratio) + kl_weight * REG`` on buffer minibatches
(``A`` the reward minus the value; ``REG`` DPOK's noise-prediction MSE or the exact Gaussian KL, ``REGULARIZERS``).
API: :class:`DPOK` (defaults: DPOK's multi-prompt command; ``DPOK.from_config`` reads ``baselines.dpok``),
:class:`ValueNetwork`, :func:`pooled_text_embeddings`. The formulas, the source read and the provenance of each
default: docs/method.md, section 'The baselines' (DPOK).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..divergences import gaussian_divergence
from ..models import ddim_scheduler_for, latent_shape
from ..samplers.common import encode_prompts, gaussian_log_prob
from ..samplers.diffusion import ddim_step_mean_std, guided_model_output
from .ddim_policy import DiffusionRollout, kl_per_step, step_rollout
from .ppo import (BaselineFromConfig, GradientAccumulator, check_log_prob_batch, check_positive, log_prob_chunks,
                  log_prob_scale, stats_out)


class ConditionalLinear(nn.Module):
    """``Linear(x) * gamma_n``: a linear layer scaled per output by a learned embedding of the step index n."""

    def __init__(self, n_in: int, n_out: int, num_steps: int):
        super().__init__()
        self.lin = nn.Linear(n_in, n_out)
        self.embed = nn.Embedding(num_steps, n_out)
        nn.init.uniform_(self.embed.weight)
        nn.init.xavier_normal_(self.lin.weight)

    def forward(self, x: Tensor, n: Tensor) -> Tensor:
        return self.lin(x) * self.embed(n)


class ValueNetwork(nn.Module):
    """``V(x_{t_n}, c, n)``: DPOK's ValueMulti shape (flattened latent ++ text embedding, 3 step-conditioned ReLU
    layers of ``hidden`` units, a linear output)."""

    def __init__(self, latent_dim: int, text_dim: int, num_steps: int, hidden: int = 256):
        super().__init__()
        self.l1 = ConditionalLinear(latent_dim + text_dim, hidden, num_steps)
        self.l2 = ConditionalLinear(hidden, hidden, num_steps)
        self.l3 = ConditionalLinear(hidden, hidden, num_steps)
        self.out = nn.Linear(hidden, 1)
        nn.init.xavier_normal_(self.out.weight)

    def forward(self, latents: Tensor, text: Tensor, n: Tensor) -> Tensor:
        x = torch.cat([latents.flatten(1).float(), text.float()], 1)
        x = F.relu(self.l1(x, n))
        x = F.relu(self.l2(x, n))
        x = F.relu(self.l3(x, n))
        return self.out(x).squeeze(-1)


@torch.no_grad()
def pooled_text_embeddings(pipe, prompts: list[str], device) -> Tensor:
    """[B, D] the text encoder's pooled output (CLIP: the end-of-text token after the final layer norm), as DPOK's
    value function takes CLIP text features; the mean over tokens for encoders without a pooled output."""
    tok = pipe.tokenizer(list(prompts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    out = pipe.text_encoder(tok.input_ids.to(device))
    pooled = getattr(out, "pooler_output", None)
    return (pooled if pooled is not None else out[0].mean(1)).float()


REGULARIZERS = ("eps_mse", "gaussian_kl")
BUFFER_KEYS = ("state", "next_state", "step", "reward", "text", "log_prob", "ref_output")


@dataclass
class DPOK(BaselineFromConfig):
    """DPOK; defaults from google-research dpok (README multi-prompt command over train_online_pg.py defaults)."""

    batch_size: int = 6  # prompts (one image, one reward query each) per step: --g_batch_size, --num_samples 1
    sample_steps: int = 50  # DPOK samples with the pipeline default of 50 DDIM steps
    eta: float = 1.0
    guidance_scale: float = 7.5  # StableDiffusionPipeline default, used by DPOK
    reward_weight: float = 1000.0  # --reward_weight (README, multiple prompts)
    kl_weight: float = 0.1  # --kl_weight (README, multiple prompts)
    regularizer: str = "eps_mse"  # DPOK's mean squared noise-prediction difference; "gaussian_kl": the exact KL
    ratio_clip: float = 1e-4  # --ratio_clip
    policy_updates: int = 5  # --p_step
    policy_batch_size: int = 2  # --p_batch_size (README, multiple prompts)
    grad_accumulation: int = 12  # --gradient_accumulation_steps
    buffer_size: int = 1000  # --buffer_size (transitions)
    value_lr: float = 1e-4  # --v_lr
    value_batch_size: int = 256  # --v_batch_size
    value_updates: int = 5  # --v_step
    value_hidden: int = 256  # ValueMulti width
    log_prob_reduction: str = "mean"  # DPOK's step_forward_logprob averages over dimensions
    log_divergence: bool = True
    divergence_reduction: str = "mean"
    log_prob_batch: int | None = 1  # transitions per recomputing UNet call, whole minibatches; 1: one minibatch

    def __post_init__(self):
        check_positive("baselines.dpok.batch_size", self.batch_size)
        for name in ("sample_steps", "policy_updates", "policy_batch_size", "grad_accumulation", "buffer_size",
                     "value_batch_size", "value_updates", "value_hidden"):
            check_positive(f"dpok {name}", getattr(self, name))
        for name in ("reward_weight", "ratio_clip", "value_lr"):
            check_positive(f"dpok {name}", getattr(self, name), integer=False)
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"baselines.dpok.regularizer must be one of {REGULARIZERS}, got {self.regularizer!r}")
        if not self.kl_weight >= 0:
            raise ValueError(f"dpok kl_weight must be >= 0, got {self.kl_weight}")
        if not 0 < self.eta <= 1:
            raise ValueError(f"dpok eta must lie in (0, 1] (eta = 0 is deterministic: no policy), got {self.eta}")
        check_log_prob_batch("dpok", self.log_prob_batch)
        log_prob_scale((1,), self.log_prob_reduction)
        self.scheduler = None
        self.value: ValueNetwork | None = None
        self.value_opt: torch.optim.Optimizer | None = None
        self.buffer: dict | None = None

    # ------------------------------------------------------------------------------------------- loop protocol
    def setup(self, ctx) -> None:
        self.scheduler = ddim_scheduler_for(ctx.pipe)
        shape = latent_shape(ctx.pipe)
        text_dim = int(pooled_text_embeddings(ctx.pipe, [""], ctx.device).shape[-1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.generator(0, 7).initial_seed())  # the value net's initialisation
            self.value = ValueNetwork(math.prod(shape), text_dim, self.sample_steps, self.value_hidden)
        self.value.to(ctx.device)
        self.value_opt = torch.optim.AdamW(self.value.parameters(), lr=self.value_lr)
        self.buffer = None

    def queries_per_step(self) -> int:
        return self.batch_size

    def extra_state(self) -> dict:
        return {"value": self.value.state_dict(), "value_opt": self.value_opt.state_dict(),
                "buffer": self.buffer}

    def load_extra_state(self, state: dict) -> None:
        self.value.load_state_dict(state["value"])
        self.value_opt.load_state_dict(state["value_opt"])
        self.buffer = state["buffer"]

    # -------------------------------------------------------------------------------------------------- pieces
    def rollout(self, ctx, step: int) -> DiffusionRollout:
        return step_rollout(ctx, step, self.scheduler, batch_size=self.batch_size, num_steps=self.sample_steps,
                               guidance_scale=self.guidance_scale, eta=self.eta, reference=True)

    def add_to_buffer(self, ctx, roll: DiffusionRollout) -> None:
        """Append the rollout's B*T transitions (step-major, as DPOK) and keep the last ``buffer_size`` (on CPU)."""
        b, t = roll.log_probs.shape
        text = pooled_text_embeddings(ctx.pipe, roll.prompts, ctx.device).cpu()
        new = {
            "state": roll.latents[:, :-1].transpose(0, 1).reshape(b * t, *roll.latents.shape[2:]).cpu(),
            "next_state": roll.latents[:, 1:].transpose(0, 1).reshape(b * t, *roll.latents.shape[2:]).cpu(),
            "step": torch.arange(t).repeat_interleave(b),
            "reward": roll.rewards.float().cpu().repeat(t),
            "text": text.repeat(t, 1),
            "log_prob": roll.log_probs.transpose(0, 1).reshape(-1).cpu(),
            "ref_output": roll.ref_outputs.transpose(0, 1).reshape(b * t, *roll.ref_outputs.shape[2:]).cpu(),
        }
        prompts = [p for _ in range(t) for p in roll.prompts]
        if self.buffer is None:
            merged = {**new, "prompt": prompts}
        else:
            merged = {k: torch.cat([self.buffer[k], new[k]]) for k in BUFFER_KEYS}
            merged["prompt"] = list(self.buffer["prompt"]) + prompts
        self.buffer = {k: v[-self.buffer_size:] for k, v in merged.items()}

    def transition_stats(self, ctx, idx: Tensor) -> tuple[Tensor, Tensor]:
        """For buffer transitions ``idx``: (summed log pi_theta of the stored next state [b], the regulariser [b]),
        with gradients to the adapter. The regulariser (``regularizer``) is DPOK's ``mean_d (eps_theta - eps_pre)^2``
        of the guided noise predictions at the buffer state, or ``s * KL_n`` of the two Gaussian transitions."""
        buf = self.buffer
        dev, dtype = ctx.device, ctx.pipe.unet.dtype
        prompts = [buf["prompt"][i] for i in idx.tolist()]
        emb = encode_prompts(ctx.pipe.tokenizer, ctx.pipe.text_encoder, prompts, device=dev, dtype=dtype)
        neg = None if float(self.guidance_scale) == 1.0 else encode_prompts(ctx.pipe.tokenizer,
                                                                             ctx.pipe.text_encoder, [""],
                                                                             device=dev, dtype=dtype)
        self.scheduler.set_timesteps(self.sample_steps, device=dev)
        t = self.scheduler.timesteps[buf["step"][idx].to(self.scheduler.timesteps.device)].to(dev)
        state = buf["state"][idx].to(dev, dtype)
        with ctx.autocast():
            out = guided_model_output(ctx.pipe.unet, state, t, emb, neg, self.guidance_scale)
            mean, std, _ = ddim_step_mean_std(self.scheduler, out, t, state, self.eta)
        lp = gaussian_log_prob(buf["next_state"][idx].to(dev).to(mean.dtype), mean, std)
        ref_out = buf["ref_output"][idx].to(dev, mean.dtype)
        if self.regularizer == "eps_mse":
            reg = (out.to(mean.dtype) - ref_out).pow(2).flatten(1).mean(1)
        else:
            ref_mean = ddim_step_mean_std(self.scheduler, ref_out, t, state, self.eta)[0]
            scale = log_prob_scale(state.shape[1:], self.log_prob_reduction)
            reg = scale * gaussian_divergence("kl", mean, ref_mean.to(mean.dtype), std, reduction="sum")
        return lp, reg

    def value_step(self, ctx, step: int) -> float:
        buf = self.buffer
        n = buf["reward"].shape[0]
        k = min(self.value_batch_size, n)
        g = ctx.generator(step, 2)
        self.value_opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(self.value_updates):
            idx = torch.randperm(n, generator=g)[:k]
            pred = self.value(buf["state"][idx].to(ctx.device), buf["text"][idx].to(ctx.device),
                              buf["step"][idx].to(ctx.device))
            loss = F.mse_loss(pred, buf["reward"][idx].to(ctx.device)) / self.value_updates
            loss.backward()
            total += loss.item()
        self.value_opt.step()
        return total

    def policy_minibatches(self, ctx, g: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        """The ``grad_accumulation`` minibatches of one policy update, drawn in turn from ``g`` (each
        ``min(policy_batch_size, buffer)`` buffer transitions), with their advantages (reward minus value, no
        gradient): ``(indices, advantages)``."""
        buf = self.buffer
        n = buf["reward"].shape[0]
        idxs, advs = [], []
        for _ in range(self.grad_accumulation):
            idx = torch.randperm(n, generator=g)[: min(self.policy_batch_size, n)]
            with torch.no_grad():
                advs.append(buf["reward"][idx].to(ctx.device) - self.value(
                    buf["state"][idx].to(ctx.device), buf["text"][idx].to(ctx.device),
                    buf["step"][idx].to(ctx.device)))
            idxs.append(idx)
        return idxs, advs

    def policy_accumulate(self, ctx, acc: GradientAccumulator, idxs: list[Tensor], advs: list[Tensor],
                          scale: float) -> tuple[list[float], list[float]]:
        """Accumulate into ``acc`` the gradient of one policy update, the mean over its minibatches ``idxs`` of
        ``mean(-reward_weight * A * clip(ratio) + kl_weight * REG)``, the minibatches recomputed ``log_prob_batch``
        transitions per UNet call (:func:`~rocm_rlhf.training.ppo.log_prob_chunks`: whole minibatches, concatenated,
        each call backpropagated at once). Returns the per-minibatch means of the regulariser and of the ratio."""
        buf = self.buffer
        size = len(idxs[0])
        kls, ratios = [], []
        for chunk in log_prob_chunks(len(idxs), size, self.log_prob_batch):
            idx = torch.cat([idxs[i] for i in chunk])
            adv = torch.cat([advs[i] for i in chunk])
            lp, reg = self.transition_stats(ctx, idx)
            ratio = torch.exp((lp - buf["log_prob"][idx].to(lp.device, lp.dtype)) * scale)
            clipped = ratio.clamp(1.0 - self.ratio_clip, 1.0 + self.ratio_clip)
            term = (-self.reward_weight * adv.to(lp.dtype) * clipped + self.kl_weight * reg).view(len(chunk), size)
            acc.backward(term.mean(1).sum() / self.grad_accumulation)
            kls.extend(reg.detach().view(len(chunk), size).mean(1).tolist())
            ratios.extend(ratio.detach().view(len(chunk), size).mean(1).tolist())
        return kls, ratios

    def train_step(self, ctx, step: int) -> dict:
        roll = self.rollout(ctx, step)
        self.add_to_buffer(ctx, roll)
        value_loss = self.value_step(ctx, step)
        scale = log_prob_scale(roll.latents.shape[2:], self.log_prob_reduction)
        g = ctx.generator(step, 3)
        losses, kls, ratios = [], [], []
        for _ in range(self.policy_updates):
            acc = GradientAccumulator(ctx.params)
            idxs, advs = self.policy_minibatches(ctx, g)
            kl, ratio = self.policy_accumulate(ctx, acc, idxs, advs, scale)
            kls.extend(kl)
            ratios.extend(ratio)
            ctx.update(acc.surrogate())
            losses.append(acc.value)
        div = None
        if self.log_divergence:
            div = kl_per_step(roll.means, roll.ref_means, roll.stds, self.divergence_reduction).sum(1).mean()
        return stats_out(roll.rewards, loss=sum(losses) / len(losses), divergence_mean=div,
                            kl=sum(kls) / len(kls), ratio=sum(ratios) / len(ratios), value_loss=value_loss)

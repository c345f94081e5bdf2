"""The gold judge: does an image show what its prompt asks, and does it look like a real render?

It stands in for the paper's human evaluation, from the renderer's ground truth, and is never a training reward (it
has no gradients). Per image, the nearest real render of the world's template bank gives the predicted attributes;
``fidelity`` is the share of the prompt's mentioned attributes shown, ``realism = exp(-mse / tau)`` and
``gold = fidelity * realism``. API: :class:`GoldJudge` (``judge(images, prompts)`` -> fidelity, realism and gold per
image; ``predict_attributes``), ``DEFAULT_TAU``. The exact definition and tau's calibration: docs/method.md,
section 'The sandbox world' (The gold judge).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .captions import parse_caption
from .render import ATTRIBUTE_NAMES, ATTRIBUTE_VALUES, World, all_attributes

REALISM_REFERENCE_SD = 0.05
DEFAULT_TAU = 2 * REALISM_REFERENCE_SD**2  # 0.005: realism = exp(-1/2) at pixel-noise sd 0.05


class GoldJudge:
    """Gold score of images for sandbox prompts (the exact definition: docs/method.md, section 'The sandbox world').

    Args:
        world: the :class:`World` whose renders are the real images (its size and jitter define the bank).
        tau: realism temperature (mse units); ``None`` means ``DEFAULT_TAU = 0.005``.
        chunk_size: images compared with the bank at once (memory ~ chunk_size x 1,080 floats).
    """

    def __init__(self, world: World, tau: float | None = None, chunk_size: int = 256) -> None:
        if not isinstance(world, World):
            raise TypeError(f"world must be a rocm_rlhf.sandbox.render.World, got {type(world).__name__}")
        tau = DEFAULT_TAU if tau is None else float(tau)
        if not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau must be a positive number (mse units), got {tau!r}")
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
        self.world = world
        self.tau = tau
        self.chunk_size = int(chunk_size)
        bank, combo, shifts = world.template_bank()
        attrs = all_attributes()
        # Attribute indices (into SHAPES, COLOR_NAMES, SIZES, POSITIONS) of every template.
        self._template_attrs = {
            name: torch.tensor([ATTRIBUTE_VALUES[name].index(getattr(attrs[c], name)) for c in combo])
            for name in ATTRIBUTE_NAMES
        }
        self._template_shifts = torch.from_numpy(shifts)
        self._bank_cpu = bank.reshape(bank.shape[0], -1).contiguous()
        self._bank_by_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._parsed: dict[str, dict[str, str]] = {}

    def _bank(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._bank_by_device:
            flat = self._bank_cpu.to(device)
            self._bank_by_device[device] = (flat, (flat * flat).sum(dim=1))
        return self._bank_by_device[device]

    def _check_images(self, images: torch.Tensor) -> None:
        n = self.world.image_size
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (3, n, n):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor (B, 3, {n}, {n}) with values in [0, 1], got {shape}")

    @torch.no_grad()
    def predict_attributes(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Nearest template of each image: ``shape``, ``color``, ``size``, ``position`` (the predicted attributes as
        long indices into SHAPES, COLOR_NAMES, SIZES, POSITIONS), ``shift`` (B, 2) as (dx, dy), ``template`` (row of
        ``world.template_bank()``), ``mse`` to that template (float32) and ``finite`` (bool), all on images' device.
        """
        self._check_images(images)
        device = images.device
        flat_bank, bank_sq = self._bank(device)
        x_all = images.detach().reshape(images.shape[0], -1).to(torch.float32)
        finite = torch.isfinite(x_all).all(dim=1)
        x_all = torch.nan_to_num(x_all, nan=0.5, posinf=1.0, neginf=0.0)
        best = torch.empty(x_all.shape[0], dtype=torch.long, device=device)
        mse = torch.empty(x_all.shape[0], dtype=torch.float32, device=device)
        for start in range(0, x_all.shape[0], self.chunk_size):
            x = x_all[start : start + self.chunk_size]
            # ||x - t||^2 = ||x||^2 - 2 x.t + ||t||^2; ||x||^2 is constant per row, so it drops out of the argmin.
            dist = bank_sq[None, :] - 2.0 * (x @ flat_bank.T)
            k = dist.argmin(dim=1)
            best[start : start + x.shape[0]] = k
            mse[start : start + x.shape[0]] = ((x - flat_bank[k]) ** 2).mean(dim=1)
        best_cpu = best.cpu()
        out = {name: self._template_attrs[name][best_cpu].to(device) for name in ATTRIBUTE_NAMES}
        out["shift"] = self._template_shifts[best_cpu].to(device)
        out["template"] = best
        out["mse"] = mse
        out["finite"] = finite
        return out

    def _mentioned(self, prompt: str) -> dict[str, str]:
        parsed = self._parsed.get(prompt)
        if parsed is None:
            try:
                parsed = parse_caption(prompt)
            except ValueError as err:
                raise ValueError(f"the gold judge only scores sandbox prompts: {err}") from None
            self._parsed[prompt] = parsed
        return parsed

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Per image (B,): ``fidelity``, ``realism``, ``gold`` (float32) plus everything :meth:`predict_attributes`
        returns (the predicted attributes of the image, not the prompt's). ``prompts`` has one sandbox caption per
        image."""
        self._check_images(images)
        if isinstance(prompts, str) or len(prompts) != images.shape[0]:
            got = "a single string" if isinstance(prompts, str) else f"{len(prompts)} prompts"
            raise ValueError(f"need one prompt per image: {images.shape[0]} images but {got}")
        out = self.predict_attributes(images)
        pred = {name: out[name].cpu() for name in ATTRIBUTE_NAMES}
        fidelity = torch.empty(len(prompts), dtype=torch.float32)
        for i, prompt in enumerate(prompts):
            asked = self._mentioned(prompt)
            hits = sum(int(pred[name][i]) == ATTRIBUTE_VALUES[name].index(value) for name, value in asked.items())
            fidelity[i] = hits / len(asked)
        fidelity = fidelity.to(images.device)
        realism = torch.where(out["finite"], torch.exp(-out["mse"] / self.tau), torch.zeros_like(out["mse"]))
        out["fidelity"] = fidelity
        out["realism"] = realism
        out["gold"] = fidelity * realism
        return out

"""Shared pieces of the hub scorers (:mod:`rocm_rlhf.rewards.hub`): torch preprocessing, freezing, dtype parsing,
checkpoint loading and the LAION/ImageReward MLP head.

Preprocessing of float images in [0, 1] (B, 3, H, W), differentiable: :func:`clip_preprocess`,
:func:`blip_preprocess`, :func:`letterbox_preprocess` and their parts (:func:`resize_shortest_side`,
:func:`resize_longest_side`, :func:`resize_square`, :func:`center_crop`, :func:`pad_to_square`, :func:`normalize`,
``CLIP_MEAN``, ``CLIP_STD``). Also :class:`FrozenScorer`, :func:`parse_dtype`, :func:`check_inputs`,
:func:`load_checkpoint`, :func:`build_with_weights` and :class:`MLPHead`. The resize, crop and padding rules and the
measured distance to the PIL reference processors: docs/method.md, section 'Rewards and metrics' (Preprocessing).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import Scorer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
    "double": torch.float64,
}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``None`` -> float32; a torch dtype as is; a name such as "float16", "bf16", "float32"."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))} (or a torch.dtype)")
    return _DTYPES[key]


def check_inputs(images: torch.Tensor, prompts: list[str] | None, *, need_prompts: bool = True) -> None:
    """One clear error for images that are not (B, 3, H, W) floats or prompts that do not match them."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor of shape (B, 3, H, W) with values in [0, 1]; got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1] (got {images.dtype}); divide uint8 images by 255")
    if not need_prompts and prompts is None:
        return
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise ValueError(f"prompts must be a list of B strings, got {type(prompts).__name__}")
    if len(prompts) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts: pass one prompt per image")
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must all be strings")


def resize_shortest_side(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so that the shorter side is ``size`` (aspect kept, long side truncated to int), bicubic + antialias."""
    h, w = images.shape[-2:]
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    if (new_h, new_w) == (h, w):
        return images
    return F.interpolate(images, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to size x size ignoring the aspect ratio (BLIP's processor), bicubic + antialias."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False)


def resize_longest_side(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so that the longer side is ``size`` (aspect kept, the other side ``round(side * size / long)`` with
    Python's round, as open_clip's ``ResizeMaxSize``), bicubic + antialias, not clipped."""
    h, w = images.shape[-2:]
    scale = size / float(max(h, w))
    if scale == 1.0:
        return images
    new_h, new_w = round(h * scale), round(w * scale)
    return F.interpolate(images, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)


def pad_to_square(images: torch.Tensor, size: int, fill: float = 0.0) -> torch.Tensor:
    """Pad with ``fill`` to size x size: ``pad_h // 2`` rows on top and the rest below, ``pad_w // 2`` columns on the
    left and the rest on the right (open_clip's ``ResizeMaxSize``: ``F.pad(img, [pad_w // 2, pad_h // 2, pad_w -
    pad_w // 2, pad_h - pad_h // 2], fill)``)."""
    h, w = images.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"cannot pad {h}x{w} images to {size}x{size}; resize first")
    pad_h, pad_w = size - h, size - w
    if pad_h == pad_w == 0:
        return images
    return F.pad(images, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=fill)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot center-crop {h}x{w} images to {size}x{size}; resize first")
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


def normalize(images: torch.Tensor, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


def clip_preprocess(
    images: torch.Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD, *, clamp: bool = True
) -> torch.Tensor:
    """CLIP-style: resize shortest side to ``size`` (bicubic, antialias), [clip to [0, 1]], center crop, normalise."""
    resized = resize_shortest_side(images, size)
    if clamp:
        resized = resized.clamp(0.0, 1.0)
    return normalize(center_crop(resized, size), mean, std)


def blip_preprocess(
    images: torch.Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD, *, clamp: bool = True
) -> torch.Tensor:
    """BLIP-style (BlipImageProcessor): resize to size x size (bicubic, antialias, no crop), [clip], normalise."""
    resized = resize_square(images, size)
    if clamp:
        resized = resized.clamp(0.0, 1.0)
    return normalize(resized, mean, std)


def letterbox_preprocess(images: torch.Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """HPSv2 (open_clip ``ResizeMaxSize``): resize the longest side to ``size`` (bicubic, antialias, not clipped), pad
    with zeros to size x size (``pad // 2`` on top / left), normalise. Unlike the reference, an image whose longest
    side is already ``size`` is padded too (the reference returns it unpadded, which the ViT cannot take unless it is
    square)."""
    return normalize(pad_to_square(resize_longest_side(images, size), size), mean, std)


def at_least_f32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or kept in float64 (half and bfloat16 are promoted; float64 stays for exact checks)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def features(out: Any) -> torch.Tensor:
    """``get_image_features``/``get_text_features`` return a tensor in transformers 4 and an output object in 5."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class FrozenScorer(Scorer):
    """A scorer whose weights never train: ``requires_grad`` False everywhere, and always in eval mode (``train()``
    is a no-op, so dropout never fires even when a caller switches a parent module to training).

    :meth:`cast` sets the weights' dtype, except the parameters named in ``keep_float32`` (name or name prefix):
    scalars and small heads that set the score's scale (the CLIP logit scale, the MLP reward heads), which stay in at
    least float32 and are computed in it, since rounding them to 16 bits shifts every score (bfloat16 keeps 8
    significant bits: logit_scale 4.6052 becomes 4.59375, i.e. PickScore 1.1 % lower)."""

    #: parameter names (or prefixes, before a ".") kept in at least float32 by :meth:`cast`
    keep_float32: tuple[str, ...] = ()

    def freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenScorer":
        return super().train(False)

    def _kept_float32(self, name: str) -> bool:
        return any(name == k or name.startswith(k + ".") for k in self.keep_float32)

    def cast(self, dtype: str | torch.dtype | None) -> None:
        """``self.to(dtype)``, but the ``keep_float32`` parameters get ``promote_types(dtype, float32)`` (float32
        under float16/bfloat16, float64 under float64), from their values before the cast."""
        dtype = parse_dtype(dtype)
        high = torch.promote_types(dtype, torch.float32)
        kept = {n: p.detach().clone() for n, p in self.named_parameters() if self._kept_float32(n)}
        self.to(dtype)
        for name, value in kept.items():
            self.get_parameter(name).data = value.to(high)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights (that of the inputs to the networks), not counting ``keep_float32``."""
        for name, p in self.named_parameters():
            if not self._kept_float32(name):
                return p.dtype
        return next(self.parameters()).dtype

    #: text scorers: ``tokenize`` pads and truncates to this many tokens (set by each subclass with a tokenizer)
    max_tokens: int = 0

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask [B, max_tokens] of ``self.tokenizer``, on the scorer's device."""
        enc = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)


def load_checkpoint(path: str, *, weights_only: bool = True) -> dict[str, torch.Tensor]:
    """A ``torch.save``d state dict, unwrapped from ``{"state_dict": ...}`` and stripped of a DDP ``module.`` prefix."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"'{path}' holds more than tensors and torch.load(weights_only=True) refused it; if you trust the file, "
            "pass weights_only=False to the scorer"
        ) from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"'{path}' does not hold a state dict (got {type(obj).__name__})")
    sd = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            sd[key.removeprefix("module.")] = value
    return sd


def build_with_weights(
    factory: Callable[[], nn.Module], state_dict: Mapping[str, torch.Tensor], what: str
) -> nn.Module:
    """``factory()`` built on the meta device (no random init of a large model), then filled with ``state_dict``
    (strict: every parameter and persistent buffer must be given, and nothing else). Non-persistent
    ``position_ids`` buffers are recreated as ``arange``."""
    with torch.device("meta"):
        model = factory()
    try:
        model.load_state_dict(dict(state_dict), strict=True, assign=True)
    except RuntimeError as err:
        raise ValueError(f"the {what} checkpoint does not fit the expected architecture: {err}") from err
    for module_name, module in model.named_modules():
        for name, buf in list(module._buffers.items()):
            if buf is None or not buf.is_meta:
                continue
            if name == "position_ids":
                module._buffers[name] = torch.arange(buf.shape[-1]).expand(buf.shape).contiguous()
            else:  # pragma: no cover - architecture change in transformers
                raise ValueError(f"buffer {module_name}.{name} of the {what} model has no value after loading")
    return model


class MLPHead(nn.Module):
    """The MLP of the LAION improved aesthetic predictor, reused by ImageReward: Linear, Dropout(0.2), Linear,
    Dropout(0.2), Linear, Dropout(0.1), Linear, Linear, with no activations in between (as in the references; so the
    head is affine). State-dict keys ``layers.{0,2,4,6,7}.{weight,bias}``; widths are read from the weights
    (768-1024-128-64-16-1 for both released heads)."""

    LINEAR_INDICES = (0, 2, 4, 6, 7)

    def __init__(self, widths: tuple[int, ...] = (768, 1024, 128, 64, 16, 1)):
        super().__init__()
        if len(widths) != 6:
            raise ValueError(f"MLPHead needs 6 widths, got {widths}")
        w = widths
        self.layers = nn.Sequential(
            nn.Linear(w[0], w[1]),
            nn.Dropout(0.2),
            nn.Linear(w[1], w[2]),
            nn.Dropout(0.2),
            nn.Linear(w[2], w[3]),
            nn.Dropout(0.1),
            nn.Linear(w[3], w[4]),
            nn.Linear(w[4], w[5]),
        )

    @classmethod
    def widths_from(cls, state_dict: Mapping[str, torch.Tensor], prefix: str = "layers.") -> tuple[int, ...]:
        try:
            shapes = [state_dict[f"{prefix}{i}.weight"].shape for i in cls.LINEAR_INDICES]
        except KeyError as err:
            raise ValueError(
                f"MLP head weights not found: expected keys {prefix}{{0,2,4,6,7}}.weight, missing {err}"
            ) from None
        return (shapes[0][1],) + tuple(s[0] for s in shapes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Computed in the head's own dtype (float32 when the scorer keeps it so under 16-bit weights)."""
        return self.layers(x.to(self.layers[0].weight.dtype))

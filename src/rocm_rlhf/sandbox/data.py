"""Training data of the sandbox's models: rendered images with captions drawn from the grammar.

API: :func:`captioned_batch` (``n`` renders of random attributes and shifts, each with a random caption: template and
mentioned attributes drawn from the same generator) and :func:`to_model_range` (images in [0, 1] to the VAE's
[-1, 1], as Stable Diffusion).
"""

from __future__ import annotations

import numpy as np
import torch

from .captions import MENTION_PATTERNS, N_TEMPLATES, caption
from .render import Attributes, World


def captioned_batch(
    world: World, n: int, rng: np.random.Generator, combos: tuple[Attributes, ...] | None = None
) -> tuple[torch.Tensor, list[str], list[Attributes]]:
    """``n`` rendered images (B, 3, H, W) in [0, 1] with a random caption of each (random template and mentions)."""
    images, attrs = world.sample(n, rng, combos)
    templates = rng.integers(0, N_TEMPLATES, size=n)
    mentions = rng.integers(0, len(MENTION_PATTERNS), size=n)
    caps = [caption(a, int(t), MENTION_PATTERNS[int(m)]) for a, t, m in zip(attrs, templates, mentions)]
    return images, caps, attrs


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> [-1, 1], the VAE's input range (as Stable Diffusion)."""
    return images * 2 - 1

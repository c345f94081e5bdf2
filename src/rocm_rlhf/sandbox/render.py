"""The sandbox world's renderer: one simple shape per image, drawn deterministically from known attributes.

Attributes: ``SHAPES`` (circle, square, triangle), ``COLORS`` (red, green, blue, yellow), ``SIZES`` (small, large),
``POSITIONS`` (left, right, top, bottom, center), plus a whole-pixel shift of at most ``jitter``. Images are float32
(3, H, W) in [0, 1], anti-aliased by supersampling, gathered from a bank of every render built once.
API: :class:`Attributes`, :func:`all_attributes` (the 120 combinations), :func:`attribute_index`, :class:`World`
(``render``, ``render_batch``, ``sample``, ``template_bank``, ``coverage``).
Geometry, anchors and pixel conventions: docs/method.md, section 'The sandbox world' (The renderer).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.16, 0.14),
    "green": (0.18, 0.78, 0.22),
    "blue": (0.20, 0.36, 0.94),
    "yellow": (0.95, 0.85, 0.16),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
ATTRIBUTE_NAMES: tuple[str, ...] = ("shape", "color", "size", "position")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": COLOR_NAMES,
    "size": SIZES,
    "position": POSITIONS,
}

# Bounding-box side of each size at 32 x 32 pixels (scaled by image_size / 32), and the anchor offset.
SIZE_PIXELS_AT_32: dict[str, float] = {"small": 9.0, "large": 16.0}
ANCHOR_OFFSET_AT_32 = 7.0
SUPERSAMPLE = 4
# The smallest RGB (Euclidean) distance allowed between the background and any shape colour.
MIN_BACKGROUND_DISTANCE = 0.3


@dataclass(frozen=True)
class Attributes:
    """The ground truth of one image."""

    shape: str
    color: str
    size: str
    position: str

    def __post_init__(self) -> None:
        for name in ATTRIBUTE_NAMES:
            value = getattr(self, name)
            if value not in ATTRIBUTE_VALUES[name]:
                raise ValueError(f"unknown {name} {value!r}; choose one of {ATTRIBUTE_VALUES[name]}")

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTE_NAMES}


@lru_cache(maxsize=1)
def all_attributes() -> tuple[Attributes, ...]:
    """All 120 attribute combinations in a fixed order: shape, then colour, then size, then position (innermost)."""
    return tuple(Attributes(*combo) for combo in itertools.product(SHAPES, COLOR_NAMES, SIZES, POSITIONS))


@lru_cache(maxsize=1)
def _combo_index() -> dict[Attributes, int]:
    return {attrs: i for i, attrs in enumerate(all_attributes())}


def attribute_index(attrs: Attributes) -> int:
    """Index of ``attrs`` in :func:`all_attributes`."""
    try:
        return _combo_index()[attrs]
    except KeyError:
        raise TypeError(f"expected an Attributes instance, got {attrs!r}") from None


class World:
    """Deterministic renderer of one shape per image (the conventions: docs/method.md, section 'The sandbox world').

    Args:
        image_size: side H = W in pixels (at least 16).
        jitter: the largest random shift (pixels, each axis) used by :meth:`render_batch` and :meth:`sample`.
        background: background RGB in [0, 1]; must be at least ``MIN_BACKGROUND_DISTANCE`` from every colour.
    """

    def __init__(
        self,
        image_size: int = 32,
        jitter: int = 1,
        background: Sequence[float] = (0.12, 0.12, 0.12),
    ) -> None:
        if int(image_size) != image_size or image_size < 16:
            raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
        if int(jitter) != jitter or jitter < 0:
            raise ValueError(f"jitter must be a non-negative integer number of pixels, got {jitter!r}")
        bg = np.asarray(background, dtype=np.float64)
        if bg.shape != (3,) or not np.all((bg >= 0) & (bg <= 1)):
            raise ValueError(f"background must be 3 RGB values in [0, 1], got {background!r}")
        for name, rgb in COLORS.items():
            dist = float(np.linalg.norm(bg - np.asarray(rgb)))
            if dist < MIN_BACKGROUND_DISTANCE:
                raise ValueError(
                    f"background {tuple(bg)} is too close to the colour {name} {rgb} (RGB distance {dist:.2f} < "
                    f"{MIN_BACKGROUND_DISTANCE}); pick a darker or greyer background"
                )
        self.image_size = int(image_size)
        self.jitter = int(jitter)
        self.background = tuple(float(v) for v in bg)
        scale = self.image_size / 32.0
        self.size_pixels = {name: px * scale for name, px in SIZE_PIXELS_AT_32.items()}
        half = self.image_size / 2.0
        largest = max(self.size_pixels.values())
        self.anchor_offset = float(min(round(ANCHOR_OFFSET_AT_32 * scale), np.floor(half - largest / 2 - self.jitter)))
        if self.anchor_offset <= 2 * self.jitter:
            raise ValueError(
                f"image_size {self.image_size} with jitter {self.jitter} leaves the position anchors only "
                f"{self.anchor_offset} px apart, so shifted positions would overlap; use a larger image or less jitter"
            )
        self.anchors = {
            "center": (half, half),
            "left": (half - self.anchor_offset, half),
            "right": (half + self.anchor_offset, half),
            "top": (half, half - self.anchor_offset),
            "bottom": (half, half + self.anchor_offset),
        }
        # Shifts in a fixed order: dx outer, dy inner, each from -jitter to +jitter.
        span = range(-self.jitter, self.jitter + 1)
        self.shifts: tuple[tuple[int, int], ...] = tuple(itertools.product(span, span))
        self._shift_index = {shift: i for i, shift in enumerate(self.shifts)}
        self._mask_cache: dict[tuple[str, str, str, int, int], np.ndarray] = {}
        self._bank: np.ndarray | None = None
        sub = (np.arange(self.image_size * SUPERSAMPLE) + 0.5) / SUPERSAMPLE  # sub-pixel centres
        self._sub_y, self._sub_x = np.meshgrid(sub, sub, indexing="ij")

    def __repr__(self) -> str:
        return f"World(image_size={self.image_size}, jitter={self.jitter}, background={self.background})"

    @property
    def n_shifts(self) -> int:
        return len(self.shifts)

    # ----------------------------------------------------------------------------------------------- rendering
    def coverage(self, shape: str, size: str, position: str, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
        """Anti-aliased coverage (H, W) in [0, 1] of a shape; cached."""
        dx, dy = (int(v) for v in shift)
        if (dx, dy) != tuple(shift):
            raise ValueError(f"shift must be whole pixels, got {shift!r}")
        key = (shape, size, position, dx, dy)
        mask = self._mask_cache.get(key)
        if mask is not None:
            return mask
        Attributes(shape, "red", size, position)  # validates the names
        cx, cy = self.anchors[position]
        cx, cy = cx + dx, cy + dy
        d = self.size_pixels[size]
        x, y = self._sub_x, self._sub_y
        if shape == "circle":
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= (d / 2) ** 2
        elif shape == "square":
            inside = (np.abs(x - cx) <= d / 2) & (np.abs(y - cy) <= d / 2)
        else:  # triangle: apex at the top centre, base at the bottom of the bounding box
            top = cy - d / 2
            inside = (y >= top) & (y <= cy + d / 2) & (np.abs(x - cx) <= (y - top) / 2)
        n = self.image_size
        mask = inside.reshape(n, SUPERSAMPLE, n, SUPERSAMPLE).mean(axis=(1, 3)).astype(np.float32)
        mask.setflags(write=False)
        self._mask_cache[key] = mask
        return mask

    def _compose(self, attrs: Attributes, shift: tuple[int, int]) -> np.ndarray:
        cov = self.coverage(attrs.shape, attrs.size, attrs.position, shift)[None]
        bg = np.asarray(self.background, dtype=np.float32)[:, None, None]
        fg = np.asarray(COLORS[attrs.color], dtype=np.float32)[:, None, None]
        return (bg * (1.0 - cov) + fg * cov).astype(np.float32)

    def render(self, attrs: Attributes, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
        """One image, float32 (3, H, W) in [0, 1]: ``attrs`` at its anchor moved by ``shift = (dx, dy)`` pixels.

        Any shift with ``|dx|, |dy| <= jitter`` keeps the shape on the canvas; larger shifts are refused.
        """
        if not isinstance(attrs, Attributes):
            raise TypeError(f"expected an Attributes instance, got {attrs!r}")
        if max(abs(int(shift[0])), abs(int(shift[1]))) > self.jitter:
            raise ValueError(f"shift {shift!r} exceeds jitter {self.jitter}: the shape could leave the canvas")
        if self._bank is not None:
            return self._bank[self.template_index(attrs, shift)].copy()
        return self._compose(attrs, shift)

    def template_index(self, attrs: Attributes, shift: tuple[int, int] = (0, 0)) -> int:
        """Row of (attrs, shift) in :meth:`template_bank`: ``combo_index * n_shifts + shift_index``."""
        try:
            s = self._shift_index[(int(shift[0]), int(shift[1]))]
        except KeyError:
            raise ValueError(f"shift {shift!r} is outside [-{self.jitter}, {self.jitter}]^2") from None
        return attribute_index(attrs) * self.n_shifts + s

    def _bank_array(self) -> np.ndarray:
        if self._bank is None:
            bank = np.stack([self._compose(a, s) for a in all_attributes() for s in self.shifts])
            bank.setflags(write=False)
            self._bank = bank
        return self._bank

    def template_bank(self) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Every canonical render: ``(images (T, 3, H, W) float32, combo_index (T,), shifts (T, 2) as (dx, dy))``.

        T = 120 * (2 * jitter + 1)^2, ordered combo-major (as :func:`all_attributes`), shift-minor (as
        ``self.shifts``). The tensor is a fresh copy (the cache stays read-only).
        """
        bank = torch.from_numpy(self._bank_array().copy())
        combo = np.repeat(np.arange(len(all_attributes())), self.n_shifts)
        shifts = np.tile(np.asarray(self.shifts, dtype=np.int64), (len(all_attributes()), 1))
        return bank, combo, shifts

    def random_shifts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` shifts (dx, dy), uniform on [-jitter, jitter]^2, drawn from ``rng`` (an (n, 2) int array)."""
        return rng.integers(-self.jitter, self.jitter + 1, size=(n, 2))

    def render_batch(self, attrs_list: Sequence[Attributes], rng: np.random.Generator | None) -> torch.Tensor:
        """A float32 tensor (B, 3, H, W): each ``attrs`` with its own random shift drawn from ``rng``.

        ``rng`` is a ``numpy.random.Generator`` (the only randomness); ``None`` renders every image unshifted.
        """
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng)}")
        n = len(attrs_list)
        combos = np.fromiter((attribute_index(a) for a in attrs_list), dtype=np.int64, count=n)
        if rng is None:
            shift_idx = np.full(n, self._shift_index[(0, 0)], dtype=np.int64)
        else:
            shifts = self.random_shifts(n, rng) + self.jitter  # in [0, 2 * jitter]
            shift_idx = shifts[:, 0] * (2 * self.jitter + 1) + shifts[:, 1]
        bank = self._bank_array()
        return torch.from_numpy(bank[combos * self.n_shifts + shift_idx])

    def sample(
        self, n: int, rng: np.random.Generator, combos: Sequence[Attributes] | None = None
    ) -> tuple[torch.Tensor, list[Attributes]]:
        """``n`` images with attributes uniform over ``combos`` (default: all 120) and random shifts."""
        combos = all_attributes() if combos is None else tuple(combos)
        if not combos:
            raise ValueError("combos is empty: pass at least one Attributes")
        idx = rng.integers(0, len(combos), size=n)
        attrs_list = [combos[i] for i in idx]
        return self.render_batch(attrs_list, rng), attrs_list

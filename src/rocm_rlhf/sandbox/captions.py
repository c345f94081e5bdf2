"""The sandbox's caption grammar: captions of rendered attributes, and parsing them back.

A caption names the colour and the shape and may mention the size and the position (``MENTION_PATTERNS``), in one of
the word orders of ``TEMPLATES`` ("a large red circle on the left", "on the left, a large red circle", ...). Every
attribute value has its own word, so parsing recovers exactly the mentioned attributes.
API: :func:`caption`, :func:`all_captions` (every distinct text; its index is the stable prompt id),
:func:`parse_caption`, :func:`normalize_caption`, :class:`CaptionSpec`. The templates: docs/method.md,
section 'The sandbox world' (The caption grammar).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import numpy as np

from .render import ATTRIBUTE_NAMES, COLOR_NAMES, POSITIONS, SHAPES, SIZES, Attributes

POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
TEMPLATES: tuple[str, ...] = (
    "a {np} {pos}",
    "{pos}, a {np}",
    "a {color} {shape}, {size}, {pos}",
    "an image of a {np} {pos}",
)
N_TEMPLATES = len(TEMPLATES)
OPTIONAL_ATTRIBUTES: tuple[str, ...] = ("size", "position")
# Which optional attributes a caption mentions (colour and shape always are).
MENTION_PATTERNS: tuple[tuple[str, ...], ...] = ((), ("size",), ("position",), ("size", "position"))


def _mention_set(mention: Iterable[str] | None) -> frozenset[str]:
    if mention is None:
        return frozenset(OPTIONAL_ATTRIBUTES)
    if isinstance(mention, str):
        mention = (mention,)
    out = set()
    for name in mention:
        if name in ("shape", "color"):
            continue  # always mentioned
        if name not in OPTIONAL_ATTRIBUTES:
            raise ValueError(f"mention must name attributes among {ATTRIBUTE_NAMES}, got {name!r}")
        out.add(name)
    return frozenset(out)


def caption(attrs: Attributes, template_id: int = 0, mention: Iterable[str] | None = None) -> str:
    """The caption of ``attrs`` with template ``template_id``, mentioning colour, shape and the optional attributes
    named in ``mention`` (an iterable among "size", "position"; ``None`` means both)."""
    if not isinstance(attrs, Attributes):
        raise TypeError(f"expected an Attributes instance, got {attrs!r}")
    if not (isinstance(template_id, (int, np.integer)) and 0 <= template_id < N_TEMPLATES):
        raise ValueError(f"template_id must be an integer in [0, {N_TEMPLATES}), got {template_id!r}")
    m = _mention_set(mention)
    size = attrs.size if "size" in m else ""
    pos = POSITION_PHRASES[attrs.position] if "position" in m else ""
    np_ = " ".join(w for w in (size, attrs.color, attrs.shape) if w)
    t = int(template_id)
    if t == 0:
        text = f"a {np_}" + (f" {pos}" if pos else "")
    elif t == 1:
        text = (f"{pos}, " if pos else "") + f"a {np_}"
    elif t == 2:
        text = f"a {attrs.color} {attrs.shape}" + (f", {size}" if size else "") + (f", {pos}" if pos else "")
    else:
        text = f"an image of a {np_}" + (f" {pos}" if pos else "")
    return text


@dataclass(frozen=True)
class CaptionSpec:
    """One distinct caption of the grammar; ``size``/``position`` are "" when the caption does not mention them."""

    text: str
    template_id: int
    shape: str
    color: str
    size: str
    position: str

    def mentioned(self) -> dict[str, str]:
        """The attributes the caption mentions (always shape and color), as :func:`parse_caption` returns them."""
        return {name: getattr(self, name) for name in ATTRIBUTE_NAMES if getattr(self, name)}


@lru_cache(maxsize=1)
def all_captions() -> tuple[CaptionSpec, ...]:
    """Every distinct caption text, in a fixed order (template, mention pattern, shape, colour, size, position).

    A text produced by several templates (e.g. "a red circle" by templates 0 and 1) appears once, with the first
    template. The position of a caption in this tuple is its stable id (used for prompt ids).
    """
    seen: dict[str, CaptionSpec] = {}
    for t in range(N_TEMPLATES):
        for pattern in MENTION_PATTERNS:
            sizes = SIZES if "size" in pattern else ("",)
            positions = POSITIONS if "position" in pattern else ("",)
            for shape, color, size, position in itertools.product(SHAPES, COLOR_NAMES, sizes, positions):
                attrs = Attributes(shape, color, size or SIZES[0], position or POSITIONS[0])
                text = caption(attrs, t, pattern)
                spec = CaptionSpec(text, t, shape, color, size, position)
                previous = seen.get(text)
                if previous is None:
                    seen[text] = spec
                elif previous.mentioned() != spec.mentioned():  # the grammar would be ambiguous
                    raise AssertionError(f"caption {text!r} is produced by {previous} and {spec}")
    return tuple(seen.values())


def normalize_caption(text: str) -> str:
    """Lower case, single spaces, no space before a comma and one after it."""
    text = " ".join(str(text).lower().split())
    return re.sub(r"\s*,\s*", ", ", text).strip()


_WORD_TO_ATTRIBUTE = {w: "shape" for w in SHAPES} | {w: "color" for w in COLOR_NAMES} | {w: "size" for w in SIZES}
_WORD_TO_ATTRIBUTE |= {w: "position" for w in POSITIONS}


def parse_caption(text: str) -> dict[str, str]:
    """The attributes a caption of the grammar mentions: ``{"shape", "color"[, "size"][, "position"]} -> value``.

    Case and extra whitespace are ignored. Raises ``ValueError`` for any text the grammar cannot produce.
    """
    if not isinstance(text, str):
        raise ValueError(f"a caption must be a string, got {type(text).__name__}: {text!r}")
    norm = normalize_caption(text)
    found: dict[str, str] = {}
    for word in re.findall(r"[a-z]+", norm):
        name = _WORD_TO_ATTRIBUTE.get(word)
        if name is None:
            continue
        if name in found:
            raise ValueError(f"caption {text!r} names two {name}s ({found[name]!r} and {word!r}); " + _GRAMMAR_HINT)
        found[name] = word
    missing = [n for n in ("color", "shape") if n not in found]
    if missing:
        raise ValueError(f"caption {text!r} names no {' and no '.join(missing)}; " + _GRAMMAR_HINT)
    attrs = Attributes(found["shape"], found["color"], found.get("size", SIZES[0]), found.get("position", POSITIONS[0]))
    mention = tuple(n for n in OPTIONAL_ATTRIBUTES if n in found)
    if not any(caption(attrs, t, mention) == norm for t in range(N_TEMPLATES)):
        raise ValueError(f"caption {text!r} is not a sentence of the sandbox grammar; " + _GRAMMAR_HINT)
    return {name: found[name] for name in ATTRIBUTE_NAMES if name in found}


_GRAMMAR_HINT = (
    "sandbox captions look like 'a large red circle on the left', 'on the left, a large red circle', "
    "'a red circle, large, on the left' or 'an image of a red circle' (see rocm_rlhf.sandbox.captions.TEMPLATES)"
)

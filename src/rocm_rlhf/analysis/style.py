"""One look per arm, the same in every figure: colour, marker and line style keyed by method (and, for ROCM, by
divergence), and the shades that tell the betas of one divergence apart.

API: :data:`ARM_STYLES` (the table), :func:`style_key` and :func:`arm_style` (an arm's matplotlib keyword
arguments), :func:`beta_styles` (several betas of one divergence in one panel), :func:`legend_label_seeds` (the
words for how many training seeds a line averages), :func:`contrast_ratio`.
Colours: Okabe & Ito's palette for ROCM's divergences, Paul Tol's "muted" palette for the baselines, black for ROCM
at beta = 0, grey for the base model; every colour has a contrast ratio of at least 3 against the white axes
(WCAG 2's formula; Okabe-Ito's yellow, orange and sky blue and Tol's sand and cyan fall below and are not used), and
the eight colours and black stay at least 13 CIELAB units apart under simulated protanopia, deuteranopia and
tritanopia (Machado et al. 2009, full severity). Every entry also has its own marker and line style, so lines stay
apart in grey scale too.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

from .. import runs


class ArmStyle(NamedTuple):
    """colour (hex), marker, line style (a matplotlib name or dash tuple), and whether the marker is hollow."""

    color: str
    marker: str
    linestyle: str | tuple
    hollow: bool = False

    def kwargs(self) -> dict:
        """Keyword arguments of ``Axes.plot``."""
        kw = {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}
        if self.hollow:
            kw["markerfacecolor"] = "white"
        return kw


BASE_KEY = runs.BASE
ZERO_KEY = f"rocm-{runs.UNREGULARISED}"

ARM_STYLES: dict[str, ArmStyle] = {
    BASE_KEY: ArmStyle("#666666", "x", ":"),
    runs.BASE_DIFFUSION: ArmStyle("#8C564B", "+", (0, (2, 3))),
    ZERO_KEY: ArmStyle("#000000", "D", "-", hollow=True),
    "rocm-kl": ArmStyle("#0072B2", "o", "--"),
    "rocm-js": ArmStyle("#D55E00", "s", "-."),
    "rocm-hellinger": ArmStyle("#009E73", "^", (0, (1, 1))),
    "rocm-fisher": ArmStyle("#CC79A7", "v", (0, (5, 1.5))),
    "rlcm": ArmStyle("#332288", "P", (0, (3, 1, 1, 1, 1, 1))),
    "ddpo": ArmStyle("#117733", "X", (0, (8, 2))),
    "d3po": ArmStyle("#999933", "*", (0, (4, 1.5, 1, 1.5))),
    "dpok": ArmStyle("#882255", "h", (0, (6, 1, 1, 1, 1, 1, 1, 1))),
}
"""The style of each kind of arm: the base models (LCM, diffusion), ROCM at beta = 0, ROCM per divergence (one style for all its
betas; :func:`beta_styles` shades them), each baseline. Keys: :func:`style_key`."""

BETA_MARKERS = ("o", "s", "^", "v", "P", "X", "*", "h")
BETA_LINESTYLES = ("--", "-.", (0, (1, 1)), (0, (5, 1.5)), (0, (3, 1, 1, 1, 1, 1)), (0, (8, 2)),
                   (0, (4, 1.5, 1, 1.5)), (0, (6, 1, 1, 1, 1, 1, 1, 1)))
"""Marker and line style of the i-th beta (increasing) of a divergence in :func:`beta_styles` (none is ROCM at
beta = 0's solid line and open diamond, which shares those panels)."""


SCORE_FUNCTION_LOOKS = {"rocm_sf": ("d", (0, (2, 1))), "rocm_hybrid": ("p", (0, (1, 2)))}
"""Marker and line style of ROCM's score-function variants: drawn in their divergence's colour (black at beta = 0),
hollow, so that the regulariser reads from the colour and the estimator from the marker and line."""


def style_key(method: str, divergence: str = runs.UNREGULARISED, beta: float = math.nan) -> str:
    """The key of an arm's look: 'base', 'rocm-none' (ROCM at beta = 0), 'rocm-<divergence>', a baseline's name (the
    keys of :data:`ARM_STYLES`), or '<score-function method>-<divergence>' ('none' at beta = 0)."""
    if method in runs.SCORE_FUNCTION_METHODS:
        return f"{method}-{runs.UNREGULARISED if runs.is_unregularised(divergence, beta) else divergence}"
    if method == "rocm":
        if runs.is_unregularised(divergence, beta):
            return ZERO_KEY
        return f"rocm-{divergence}"
    if method in runs.UNTRAINED or method in runs.BASELINES:
        return method
    raise ValueError(f"no figure style for method {method!r}; known: {', '.join(runs.ARM_METHODS)}")


def arm_style(method: str, divergence: str = runs.UNREGULARISED, beta: float = math.nan) -> dict:
    """An arm's ``Axes.plot`` keyword arguments (colour, marker, line style, hollow marker face)."""
    key = style_key(method, divergence, beta)
    if method in runs.SCORE_FUNCTION_METHODS:
        marker, linestyle = SCORE_FUNCTION_LOOKS[method]
        colour = ARM_STYLES[style_key("rocm", divergence, beta)].color
        return ArmStyle(colour, marker, linestyle, hollow=True).kwargs()
    return ARM_STYLES[key].kwargs()


def _mix(color: str, target: float, t: float) -> str:
    """``color`` moved a fraction ``t`` of the way to grey level ``target`` (0 black, 1 white), as hex."""
    rgb = [int(color[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 * (c + t * (target - c))):02X}" for c in rgb)


def beta_styles(divergence: str, n: int) -> list[dict]:
    """Styles of ``n`` increasing betas of one divergence drawn in one panel: the divergence's colour for the
    smallest beta, darker shades (up to 55 % of the way to black) for the larger ones, so every shade keeps at
    least the divergence colour's contrast on white; each beta has its own marker and line style
    (:data:`BETA_MARKERS`, :data:`BETA_LINESTYLES`). With one beta, the divergence's own style."""
    base = ARM_STYLES[style_key("rocm", divergence, 1.0)]
    if n == 1:
        return [base.kwargs()]
    return [{"color": _mix(base.color, 0.0, 0.55 * i / (n - 1)), "marker": BETA_MARKERS[i % len(BETA_MARKERS)],
             "linestyle": BETA_LINESTYLES[i % len(BETA_LINESTYLES)]} for i in range(n)]


def contrast_ratio(color: str, background: str = "#FFFFFF") -> float:
    """WCAG 2 contrast ratio of two hex colours (1 to 21)."""

    def lum(c: str) -> float:
        rgb = [int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        lin = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((lum(color), lum(background)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def legend_label_seeds(n_seeds: Sequence[int], band: str) -> str:
    """Words for a legend about how many training seeds a line averages and what its band is: 'one training seed'
    (no band), 'mean, <band> over 3 training seeds', or 'mean over 1–3 training seeds, <band> where ≥ 2'."""
    ns = sorted({int(n) for n in n_seeds})
    if not ns or ns == [1]:
        return "one training seed"
    if len(ns) == 1:
        return f"mean, {band} over {ns[0]} training seeds"
    return f"mean over {ns[0]}–{ns[-1]} training seeds, {band} where ≥ 2"

"""Rendering of the paper's tables as Markdown and LaTeX, and writing them.

API: :func:`cell_text` (one ``mean ± std`` cell, bold and dagger as asked), :func:`best_flags` (which cells are
bold), :func:`markdown` (a pipe table), :func:`latex` (a booktabs ``tabular``), :func:`tex_escape`,
:func:`md_escape`, :func:`out_stem` (an output path without its extension) and :func:`write_table` (``<stem>.csv``,
``<stem>.md`` and ``<stem>.tex``, each written atomically). Knows nothing of arms or statistics.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..infra.utils import atomic_path

DAGGER = "†"
MISSING = "–"
"""Shown in a Markdown cell of a grid for a combination that was not run (LaTeX: ``--``)."""


def out_stem(stem: str | os.PathLike) -> Path:
    """``stem`` without a known extension (so 'paper/table1.csv' and 'paper/table1' mean the same)."""
    p = Path(stem)
    if p.suffix in (".csv", ".tex", ".md", ".pdf", ".png"):
        p = p.with_suffix("")
    return p


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_table(stem: str | os.PathLike, long: pd.DataFrame, md: str, tex: str) -> None:
    """Write ``<stem>.csv`` (``long`` without index), ``<stem>.md`` and ``<stem>.tex``, each atomically."""
    stem = out_stem(stem)
    with atomic_path(stem.with_name(stem.name + ".csv")) as tmp:
        long.to_csv(tmp, index=False)
    _write_text(stem.with_name(stem.name + ".md"), md)
    _write_text(stem.with_name(stem.name + ".tex"), tex)


def _num(x: float, decimals: int) -> str:
    """``x`` at ``decimals`` places; a value that rounds to zero prints as 0, never as -0."""
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def signed(x: float, decimals: int) -> str:
    """``x`` with its sign at ``decimals`` places (+0.012, -0.104); a value that rounds to zero prints as +0.000,
    never as -0.000."""
    text = f"{x:+.{decimals}f}"
    return "+" + text[1:] if float(text) == 0 else text


def cell_text(
    mean: float,
    std: float,
    n_seeds: int,
    *,
    decimals: int = 3,
    bold: bool = False,
    mark: bool = False,
    style: str = "md",
    ci: tuple[float, float] | None = None,
) -> str:
    """One table cell: ``mean ± std`` (std omitted with one seed or NaN std), or with ``ci`` ``mean [low, high]``;
    bold and dagger as asked.

    style "md": ``**0.700 ± 0.014**†``; style "tex": ``$\\mathbf{0.700 \\pm 0.014}^{\\dagger}$``; style "plain":
    ``0.700 ± 0.014`` (no markers).
    """
    if ci is not None and all(math.isfinite(float(v)) for v in ci):
        spread = f" [{_num(ci[0], decimals)}, {_num(ci[1], decimals)}]"
    elif n_seeds > 1 and std is not None and math.isfinite(std):
        spread = (r" \pm " if style == "tex" else " ± ") + _num(std, decimals)
    else:
        spread = ""
    body = _num(mean, decimals) + spread
    if style == "tex":
        if bold:
            body = rf"\mathbf{{{body}}}"
        if mark:
            body += r"^{\dagger}"
        return f"${body}$"
    if style == "plain":
        return body
    if bold:
        body = f"**{body}**"
    return body + (DAGGER if mark else "")


def best_flags(means: pd.Series, decimals: int, lower: bool) -> pd.Series:
    """True where the rounded mean equals the best rounded mean (the lowest if ``lower``; NaN is never best)."""
    ok = means.dropna()
    if len(ok) == 0:
        return pd.Series(False, index=means.index)
    best = ok.min() if lower else ok.max()
    target = _num(best, decimals)
    return means.map(lambda m: isinstance(m, float) and math.isfinite(m) and _num(m, decimals) == target).astype(bool)


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters; β becomes ``$\\beta$``, ± ``$\\pm$``."""
    out = "".join(_TEX_ESCAPES.get(c, c) for c in str(text))
    return out.replace("β", r"$\beta$").replace("±", r"$\pm$")


def md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def markdown(header: list[str], rows: list[list[str]], align: str) -> str:
    """A pipe table: the header (escaped here), an alignment row ('l' left, else centred), the rows as given."""
    lines = [
        "| " + " | ".join(md_escape(h) for h in header) + " |",
        "|" + "|".join(":---" if a == "l" else ":---:" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def latex(header: list[str], rows: list[list[str]], align: str, midrules_before: Iterable[int] = ()) -> str:
    """A booktabs ``tabular`` (no ``table`` environment), with a ``\\midrule`` before each row index given."""
    before = set(midrules_before)
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        if i in before and i > 0:
            lines.append(r"\midrule")
        lines.append(" & ".join(r) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"

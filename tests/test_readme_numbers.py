"""Every number the README quotes about the sandbox results comes from the committed result files: the tables it
shows are the committed tables, verbatim, and each decimal number of the section's text equals a number of those
files at the precision quoted."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGS = REPO / "paper_figures"
NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w.])")


def _results_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Results on the sandbox")
    return text[start:text.index("\n## ", start + 1)]


def _committed_numbers() -> list[float]:
    files = [*FIGS.glob("*.md"), *FIGS.glob("*.csv"), *(FIGS / "data").glob("*"), *(FIGS / "replication").rglob("*.*"),
             *(FIGS / "nondiff").rglob("*.md"), *(FIGS / "nondiff").rglob("*.csv"),
             *(FIGS / "adaptive").rglob("*.md"), *(FIGS / "adaptive").rglob("*.csv")]
    return [float(x) for f in files for x in NUMBER.findall(f.read_text(encoding="utf-8"))]


def _blocks(section: str) -> dict[str, str]:
    """The committed tables the README shows: <!-- paper_figures/[<config name>/]<name>.md --> ... <!-- end -->
    blocks."""
    return dict(re.findall(r"<!-- (paper_figures/[\w./-]+\.md) -->\n(.*?)<!-- end -->", section, re.S))


def test_the_readme_shows_the_committed_tables_verbatim():
    blocks = _blocks(_results_section())
    assert {"paper_figures/table1.md", "paper_figures/table_divergence_beta.md"} <= set(blocks)
    for path, shown in blocks.items():
        assert shown.strip() == (REPO / path).read_text(encoding="utf-8").strip(), f"README's copy of {path} is stale"


def test_every_number_quoted_in_the_text_is_in_the_committed_results():
    section = _results_section()
    for block in _blocks(section).values():
        section = section.replace(block, "")
    committed = _committed_numbers()
    quoted = NUMBER.findall(section)
    assert len(quoted) >= 10  # the section does quote results
    missing = []
    for q in quoted:
        places = len(q.split(".")[1])
        if not any(abs(round(c, places) - float(q)) < 0.5 * 10 ** -places for c in committed):
            missing.append(q)
    assert not missing, f"README quotes numbers that no committed result file holds: {missing}"


def test_the_committed_replication_agrees_with_the_committed_run_within_their_cis():
    """The default design at 100 steps run twice from scratch with different training seeds (config/replication.yaml:
    the stand-in for another machine's floating point, where a rerun behaves like new seeds): on every metric, each
    trained arm's 95% CIs overlap and the two means differ by less than 1.96 of their combined standard error (each CI's
    half-width / 1.96). ROCM arms are matched by arm (the same beta must have been chosen), baselines by method (their
    chosen learning rates may differ)."""
    import numpy as np
    import pandas as pd

    figs = REPO / "paper_figures"

    def table(path):
        t = pd.read_csv(path)
        t = t[~t["method"].isin(["base", "base-ddim"])]  # untrained: the same images in both runs
        t["key"] = np.where(t["method"] == "rocm", t["arm"], t["method"])
        return t.set_index(["key", "metric"])

    # the replication is of the 100-step design (config/replication.yaml keeps 100 steps): the default's run of it,
    # with the adaptive arms beside it, is committed in paper_figures/adaptive/ (config/adaptive.yaml)
    a, b = table(figs / "adaptive" / "table1.csv"), table(figs / "replication" / "table1.csv")
    shared = a.index.intersection(b.index)
    # every fixed-beta ROCM arm, beta = 0 and every baseline, on all six metrics
    assert len(shared) == len(b) == 9 * 6, sorted(set(b.index) - set(a.index))
    a, b = a.loc[shared], b.loc[shared]
    overlap = ~((a["ci_high"] < b["ci_low"]) | (b["ci_high"] < a["ci_low"]))
    se = np.sqrt(((a["ci_high"] - a["ci_low"]) / 3.92) ** 2 + ((b["ci_high"] - b["ci_low"]) / 3.92) ** 2)
    z = (a["mean"] - b["mean"]) / se
    assert overlap.all(), list(shared[~overlap.to_numpy()])
    assert (z.abs() < 1.96).all(), z[z.abs() >= 1.96].round(2).to_dict()

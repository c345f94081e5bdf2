"""Tests of rocm_rlhf.analysis (arms, tables, figures, logs) on small score tables and training logs with planted
values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.container
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from PIL import Image

from rocm_rlhf.analysis import arms, figures, stats, style, tables
from rocm_rlhf import runs as rocm_runs
from rocm_rlhf.analysis import logs as training_logs

torch.set_num_threads(1)

N_BOOT = 2000
UNITS = [(f"p{i}", 0) for i in range(12)]  # 12 prompts, one sample seed: exact sign-flip p = 2/4096 at best
U = np.linspace(-0.055, 0.055, len(UNITS))  # unit effect shared by all arms (pairing removes it); mean 0
NULL = np.array([0.01, -0.01, 0.02, -0.02, 0.03, -0.03, 0.04, -0.04, 0.05, -0.05, 0.06, -0.06])  # sums to 0
SEED_OFFSET = {0: -0.01, 1: 0.01, 2: 0.0}  # per-seed shift of multi-seed arms: std 0.02 / sqrt(2) (2 seeds), 0.01 (3)
JITTER = 0.0005 * np.linspace(-1, 1, len(UNITS))  # arm i adds i * JITTER (mean 0): no two paired differences tie

# arm: (method, divergence, beta, seeds, {metric: arm effect}); "null" adds NULL to the gold values
ARMS = {
    "base": ("base", "none", np.nan, [0], {"gold": 0.50, "proxy_pick": 0.30}),
    "rocm-none-b0": ("rocm", "none", 0.0, [0, 1], {"gold": 0.30, "proxy_pick": 0.90}),
    "rocm-kl-b0.01": ("rocm", "kl", 0.01, [0, 1], {"gold": 0.45, "proxy_pick": 0.80}),
    "rocm-kl-b0.1": ("rocm", "kl", 0.1, [0, 1], {"gold": 0.70, "proxy_pick": 0.60}),  # planted best and effect
    "rocm-kl-b1": ("rocm", "kl", 1.0, [0, 1], {"gold": 0.55, "proxy_pick": 0.35}),
    "rocm-js-b0.1": ("rocm", "js", 0.1, [0, 1], {"gold": 0.40, "proxy_pick": 0.85}),
    "rocm-js-b1": ("rocm", "js", 1.0, [0, 1], {"gold": 0.50, "proxy_pick": 0.40}),  # gold: null vs base
    "rlcm": ("rlcm", "none", np.nan, [0, 1], {"gold": 0.48, "proxy_pick": 0.50}),
}
NULL_ARMS = {"rocm-js-b1"}
ARMS3 = {arm: (*spec[:3], [0, 1, 2] if len(spec[3]) > 1 else spec[3], spec[4]) for arm, spec in ARMS.items()}
"""ARMS with three training seeds per trained arm: Table 1's significance counts the spread of the training runs, and
with two seeds (one degree of freedom) nothing survives Holm's correction."""


def make_scores(arm_specs=ARMS) -> pd.DataFrame:
    rows = []
    for i, (arm, (method, div, beta, seeds, effects)) in enumerate(arm_specs.items()):
        for seed in seeds:
            off = SEED_OFFSET[seed] if len(seeds) > 1 else 0.0
            for metric, eff in effects.items():
                vals = eff + off + U + i * JITTER + (NULL if (arm in NULL_ARMS and metric == "gold") else 0.0)
                for (pid, ss), v in zip(UNITS, vals):
                    rows.append(
                        dict(
                            run_id=f"{arm}-s{seed}",
                            arm=arm,
                            method=method,
                            divergence=div,
                            beta=beta,
                            seed=seed,
                            prompt_id=pid,
                            sample_seed=ss,
                            metric=metric,
                            value=float(v),
                        )
                    )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def scores():
    return make_scores()


@pytest.fixture(scope="module")
def scores3():
    return make_scores(ARMS3)


def _md_rows(path) -> dict[str, list[str]]:
    """Markdown pipe table -> {first cell: other cells}."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("|:"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            out[cells[0]] = cells[1:]
    return out


# ------------------------------------------------------------------------------------------------------ choose_beta


def test_choose_beta_picks_the_planted_best(scores):
    assert arms.choose_beta(scores, "gold") == {"kl": 0.1, "js": 1.0}
    assert arms.choose_beta(scores, "proxy_pick") == {"kl": 0.01, "js": 0.1}
    assert arms.choose_beta(scores, "gold", lower_is_better=True) == {"kl": 0.01, "js": 0.1}
    assert list(arms.choose_beta(scores, "gold")) == ["kl", "js"]  # DIVERGENCES order


def test_chosen_table_is_the_choice_the_stages_share(scores3, tmp_path):
    """results/stats/chosen.csv: per divergence the arm choose_arms picks, read back by runs.read_chosen, which the
    workflow uses to plan the confirmatory runs and the report stages to show the chosen rows."""
    table = arms.chosen_table(scores3, "gold")
    assert list(table.columns[:len(rocm_runs.CHOSEN_COLUMNS)]) == list(rocm_runs.CHOSEN_COLUMNS) and set(table["method"]) == {"rocm"}
    assert dict(zip(table["divergence"], table["arm"])) == arms.choose_arms(scores3, "gold")
    assert table.set_index("divergence").loc["kl", "candidates"] == "0.01 0.1 1"
    assert (table["n_seeds"] == 3).all() and (table["metric"] == "gold").all()
    table.to_csv(tmp_path / "chosen.csv", index=False)
    back = rocm_runs.read_chosen(tmp_path / "chosen.csv")
    assert {d: rocm_runs.rocm_run(d, b, 0).arm for d, b in back.items()} == arms.choose_arms(scores3, "gold")
    assert rocm_runs.read_chosen_lrs(tmp_path / "chosen.csv") == {}  # the baselines were not tuned


TUNED = {**{arm: spec for arm, spec in ARMS.items() if arm != "rlcm"},
         "rlcm-lr0.0003": ("rlcm", "none", np.nan, [0], {"gold": 0.40, "proxy_pick": 0.50}),
         "rlcm-lr0.003": ("rlcm", "none", np.nan, [0], {"gold": 0.60, "proxy_pick": 0.70}),  # planted best on gold
         "rlcm-lr0.03": ("rlcm", "none", np.nan, [0], {"gold": 0.10, "proxy_pick": 0.95}),  # best proxy, worst gold
         "ddpo-lr1e-05": ("ddpo", "none", np.nan, [0], {"gold": 0.52, "proxy_pick": 0.30}),  # planted best on gold
         "ddpo-lr0.0001": ("ddpo", "none", np.nan, [0], {"gold": 0.35, "proxy_pick": 0.40})}
"""ARMS with the baselines tuned over learning rates (arms <method>-lr<lr>, seed 0), a planted best per method."""


def test_chosen_table_chooses_each_tuned_baselines_learning_rate_like_beta(tmp_path):
    """Tuned baselines (arms <method>-lr<lr>): the learning rate with the best validation mean is chosen per method,
    by the same rule as beta (best mean over seeds; ties to the smaller setting), and read back by the workflow."""
    scores = make_scores(TUNED)
    table = arms.chosen_table(scores, "gold").set_index("arm")
    assert list(table.index) == ["rocm-kl-b0.1", "rocm-js-b1", "rlcm-lr0.003", "ddpo-lr1e-05"]
    assert table.loc["rlcm-lr0.003", "candidates"] == "0.0003 0.003 0.03" and table.loc["rlcm-lr0.003", "lr"] == "0.003"
    assert arms.chosen_table(scores, "proxy_pick").set_index("method").loc["rlcm", "arm"] == "rlcm-lr0.03"
    table.reset_index().to_csv(tmp_path / "chosen.csv", index=False)
    assert rocm_runs.read_chosen_lrs(tmp_path / "chosen.csv") == {"rlcm": "0.003", "ddpo": "1e-05"}
    assert rocm_runs.read_chosen(tmp_path / "chosen.csv") == {"kl": "0.1", "js": "1"}


def test_tuning_table_reports_every_candidate_on_the_seeds_the_choice_compared(tmp_path):
    """table_tuning: each divergence's betas and each baseline's learning rates on validation, the chosen one bold;
    the means are over the seeds every candidate has (the sweep's seed 0, although the chosen beta has two)."""
    from rocm_rlhf.analysis.tables import tuning_table

    scores = make_scores(TUNED)
    # as in the pipeline: the sweep at seed 0, the chosen beta's confirmatory seed 1 (scored on validation too)
    scores = scores[~((scores["divergence"] == "kl") & (scores["arm"] != "rocm-kl-b0.1") & (scores["seed"] == 1))]
    chosen = arms.chosen_table(scores, "gold")
    chosen.to_csv(tmp_path / "chosen.csv", index=False)
    back = pd.read_csv(tmp_path / "chosen.csv", dtype={"beta": str, "lr": str})  # as the stage reads it
    long = tuning_table(scores, back, ["gold", "proxy_pick"], tmp_path / "table_tuning")
    assert len(long) == 3 + 2 + 3 + 2  # kl: 3 betas, js: 2, rlcm: 3 learning rates, ddpo: 2
    assert list(long.loc[long["chosen"], "arm"]) == ["rocm-kl-b0.1", "rocm-js-b1", "rlcm-lr0.003", "ddpo-lr1e-05"]
    kl = long.set_index("arm").loc["rocm-kl-b0.1"]
    seed0 = scores[(scores["arm"] == "rocm-kl-b0.1") & (scores["seed"] == 0) & (scores["metric"] == "gold")]
    assert kl["n_seeds"] == 1 and kl["gold"] == pytest.approx(seed0["value"].mean())
    md = (tmp_path / "table_tuning.md").read_text()
    assert "| RLCM | lr=0.0003 | 0.400 |" in md and "|  | **lr=0.003** | **0.600** |" in md and "| DDPO | **lr=1e-05** |" in md
    assert (tmp_path / "table_tuning.tex").read_text().count("\\midrule") == 4  # header rule + one per method


def test_choose_beta_errors(scores):
    with pytest.raises(ValueError, match="imagereward"):
        arms.choose_beta(scores, "imagereward")
    no_rocm = scores[scores["method"] != "rocm"]
    with pytest.raises(ValueError, match="regularised ROCM"):
        arms.choose_beta(no_rocm, "gold")
    with pytest.raises(ValueError, match="beta"):
        arms.choose_beta(scores.drop(columns="beta"), "gold")
    bad = scores.copy()
    bad.loc[bad["arm"] == "rlcm", "method"] = "ppo"
    with pytest.raises(ValueError, match="unknown method"):
        arms.choose_beta(bad, "gold")


# ------------------------------------------------------------------------------------------------------ table 1


def test_table1_cells_bold_and_daggers(scores3, tmp_path):
    scores = scores3
    stem = tmp_path / "table1"
    long = tables.table1(scores, ["proxy_pick"], "gold", ["base"], stem, n_boot=N_BOOT)
    for ext in ("csv", "tex", "md"):
        assert (tmp_path / f"table1.{ext}").stat().st_size > 0
    # rows: base, ROCM beta=0, each divergence at its chosen beta (kl 0.1, js 1), baselines; gold first
    order = ["base", "rocm-none-b0", "rocm-kl-b0.1", "rocm-js-b1", "rlcm"]
    assert list(dict.fromkeys(long["arm"])) == order
    assert list(long["metric"].iloc[:2]) == ["gold", "proxy_pick"]
    assert len(long) == 10

    # machine-readable numbers: mean of per-seed means, sample std over seeds
    r = long.set_index(["arm", "metric"])
    assert r.loc[("rocm-kl-b0.1", "gold"), "mean"] == pytest.approx(0.70, abs=1e-12)
    assert r.loc[("rocm-kl-b0.1", "gold"), "std"] == pytest.approx(0.01, abs=1e-12)
    assert r.loc[("rocm-kl-b0.1", "gold"), "n_seeds"] == 3
    assert r.loc[("base", "gold"), "n_seeds"] == 1 and np.isnan(r.loc[("base", "gold"), "std"])
    # p_holm is the comparison family's (stats.comparison_family: every arm x the controls base and rlcm x every
    # metric, one Holm family of 6 x 2 x 2 = 24), the table the stats stage writes to comparisons.csv
    ref = stats.comparison_family(scores, n_boot=N_BOOT)
    assert len(ref) == 24
    ref = ref[ref["arm_b"] == "base"].set_index(["arm_a", "metric"])
    for arm in order[1:-1]:
        for m in ("gold", "proxy_pick"):
            assert r.loc[(arm, m), "p_holm_vs_base"] == pytest.approx(ref.loc[(arm, m), "p_holm"], rel=1e-12)
            assert r.loc[(arm, m), "better_than_controls"] == (ref.loc[(arm, m), "significant"]
                                                                and ref.loc[(arm, m), "mean_diff"] > 0)
    assert r.loc[("rocm-kl-b0.1", "gold"), "p_holm_vs_base"] < 0.05  # planted effect 0.2, run spread 0.01
    assert r.loc[("rocm-js-b1", "gold"), "p_holm_vs_base"] > 0.5  # planted null
    assert np.isnan(r.loc[("base", "gold"), "p_holm_vs_base"])
    assert np.isnan(r.loc[("rlcm", "gold"), "p_holm_vs_base"])  # a control of the family: never compared

    # cells: mean [95% CI] of the hierarchical bootstrap (seeds, then prompts), the stats stage's seed_summary
    summ = stats.seed_summary(scores, n_boot=N_BOOT).set_index(["arm", "metric"])
    for arm in order:
        for m in ("gold", "proxy_pick"):
            assert r.loc[(arm, m), "ci_low"] == summ.loc[(arm, m), "ci_low"]
            assert r.loc[(arm, m), "ci_low"] < r.loc[(arm, m), "mean"] < r.loc[(arm, m), "ci_high"]

    def cell(arm, m):
        s = summ.loc[(arm, m)]
        return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"

    md = _md_rows(tmp_path / "table1.md")
    assert md["Method"] == ["gold ↑", "proxy_pick ↑"]
    assert md["Base"] == [cell("base", "gold"), cell("base", "proxy_pick")]
    kl = "rocm-kl-b0.1"
    assert md["ROCM-KL (β=0.1)"] == [f"**{cell(kl, 'gold')}**†", f"{cell(kl, 'proxy_pick')}†"]  # best gold, big effects
    zero = "rocm-none-b0"
    assert md["ROCM (β=0)"] == [cell(zero, "gold"), f"**{cell(zero, 'proxy_pick')}**†"]  # worse gold: no dagger
    assert md["ROCM-JS (β=1)"] == [cell("rocm-js-b1", "gold"), f"{cell('rocm-js-b1', 'proxy_pick')}†"]  # null gold
    assert md["RLCM"] == [cell("rlcm", "gold"), cell("rlcm", "proxy_pick")]  # a control: never a dagger
    assert sum("**" in c for cells in md.values() for c in cells) == 2  # one bold per column
    assert "all 24 comparisons" in (tmp_path / "table1.md").read_text()
    assert "95% CI: hierarchical bootstrap over training seeds, then prompts" in (tmp_path / "table1.md").read_text()

    tex = (tmp_path / "table1.tex").read_text()
    assert tex.startswith(r"\begin{tabular}{lcc}") and r"\bottomrule" in tex
    assert tex.count(r"\midrule") == 3  # below the header, then base | ROCM | baselines
    line = next(line for line in tex.splitlines() if line.startswith(r"ROCM-KL ($\beta$=0.1)"))
    assert line == (rf"ROCM-KL ($\beta$=0.1) & $\mathbf{{{cell(kl, 'gold')}}}^{{\dagger}}$ & "
                    rf"${cell(kl, 'proxy_pick')}^{{\dagger}}$ \\")
    assert r"gold $\uparrow$ & proxy\_pick $\uparrow$" in tex
    back = pd.read_csv(tmp_path / "table1.csv")
    assert list(back.columns) == list(long.columns) and len(back) == len(long)


def test_table1_with_two_training_seeds_has_no_daggers_against_a_single_base_run(scores, tmp_path):
    # 2 seeds per trained arm: the spread of the runs has one degree of freedom, and the run-aware p (about 0.03 for
    # an effect of 20 run standard errors) does not survive Holm over 24 comparisons; against rlcm (same seeds,
    # paired) the seed offsets cancel and the effects are significant
    long = tables.table1(scores, ["proxy_pick"], "gold", ["base", "rlcm"], tmp_path / "t", n_boot=N_BOOT)
    assert not long["better_than_controls"].any()
    r = long.set_index(["arm", "metric"])
    assert r.loc[("rocm-kl-b0.1", "gold"), "p_holm_vs_base"] > 0.05
    assert r.loc[("rocm-kl-b0.1", "gold"), "p_holm_vs_rlcm"] < 0.05


def test_table1_dagger_needs_every_control_and_all_betas(scores3, tmp_path):
    long = tables.table1(
        scores3, ["gold", "proxy_pick"], "gold", ["base", "rlcm"], tmp_path / "t", rocm_betas="all", n_boot=N_BOOT
    )
    assert list(dict.fromkeys(long["arm"])) == [
        "base",
        "rocm-none-b0",
        "rocm-kl-b0.01",
        "rocm-kl-b0.1",
        "rocm-kl-b1",
        "rocm-js-b0.1",
        "rocm-js-b1",
        "rlcm",
    ]
    flag = long.set_index(["arm", "metric"])["better_than_controls"]
    assert flag[("rocm-kl-b0.1", "gold")]  # 0.70 beats base 0.50 and rlcm 0.48
    assert flag[("rocm-kl-b0.1", "proxy_pick")]  # 0.60 > 0.30 and > 0.50
    assert not flag[("rocm-js-b1", "proxy_pick")]  # 0.40 beats base (0.30) but not rlcm (0.50)
    assert not flag[("rocm-kl-b1", "gold")]  # 0.55 beats rlcm, but 0.05 over base is 8.7 run standard errors only
    assert not flag[("rlcm", "proxy_pick")] and not flag[("base", "gold")]  # controls never get a dagger
    md = _md_rows(tmp_path / "t.md")
    assert re.fullmatch(r"0\.400 \[0\.3\d\d, 0\.4\d\d\]", md["ROCM-JS (β=1)"][1])  # mean [95% CI], no dagger


def test_table1_lower_is_better_flips_bold_and_direction(scores3, tmp_path):
    long = tables.table1(scores3, [], "gold", ["base"], tmp_path / "t", lower_is_better=["gold"], n_boot=N_BOOT)
    best = long.loc[long["best"], "arm"].tolist()
    # lower is better: choose_beta now picks kl 0.01 and js 0.1; the lowest shown gold is ROCM beta=0 (0.30)
    assert best == ["rocm-none-b0"]
    assert set(long["arm"]) == {"base", "rocm-none-b0", "rocm-kl-b0.01", "rocm-js-b0.1", "rlcm"}
    flag = long.set_index("arm")["better_than_controls"]
    # lower than base (0.50) by 0.2 and 0.1: better when lower is better; by 0.05 (kl 0.01): not significant with 3
    # seeds; rlcm is a control of the comparisons
    assert flag[["rocm-none-b0", "rocm-js-b0.1"]].all()
    assert not flag[["base", "rocm-kl-b0.01", "rlcm"]].any()
    assert "gold ↓" in (tmp_path / "t.md").read_text()


def test_table1_bad_input(scores, tmp_path):
    with pytest.raises(ValueError, match="imagereward"):
        tables.table1(scores, ["imagereward"], "gold", ["base"], tmp_path / "t")
    with pytest.raises(ValueError, match="control arm.*ddpo"):
        tables.table1(scores, ["gold"], "gold", ["ddpo"], tmp_path / "t")
    partial = scores[~((scores["arm"] == "rlcm") & (scores["metric"] == "proxy_pick"))]
    with pytest.raises(ValueError, match="proxy_pick.*rlcm"):
        tables.table1(partial, ["proxy_pick"], "gold", ["base"], tmp_path / "t")
    assert not (tmp_path / "t.csv").exists()


# ------------------------------------------------------------------------------------------------ divergence x beta


def test_divergence_beta_table(scores, tmp_path):
    long = tables.divergence_beta_table(scores, "gold", tmp_path / "db")
    for ext in ("csv", "tex", "md"):
        assert (tmp_path / f"db.{ext}").stat().st_size > 0
    md = _md_rows(tmp_path / "db.md")
    assert md["Divergence"] == ["β = 0", "β = 0.01", "β = 0.1", "β = 1"]
    assert md["KL"] == ["0.300 ± 0.014", "0.450 ± 0.014", "**0.700 ± 0.014**", "0.550 ± 0.014"]
    assert md["JS"] == ["0.300 ± 0.014", "–", "0.400 ± 0.014", "**0.500 ± 0.014**"]
    assert len(long) == 7  # KL: 4 cells, JS: 3 (beta = 0 in both rows)
    assert long.loc[long["best"], "arm"].tolist() == ["rocm-kl-b0.1", "rocm-js-b1"]
    assert long.loc[(long["divergence"] == "js") & (long["beta"] == 0), "arm"].item() == "rocm-none-b0"
    tex = (tmp_path / "db.tex").read_text()
    assert r"JS & $0.300 \pm 0.014$ & -- & $0.400 \pm 0.014$ & $\mathbf{0.500 \pm 0.014}$ \\" in tex
    with pytest.raises(ValueError, match="regularised ROCM"):
        tables.divergence_beta_table(scores[scores["method"] != "rocm"], "gold", tmp_path / "x")
    with pytest.raises(ValueError, match="hps"):
        tables.divergence_beta_table(scores, "hps", tmp_path / "x")


# ------------------------------------------------------------------------------------------------------ figures


def _png_size(path):
    with Image.open(path) as im:
        return im.size


def test_fig_beta_sweep(scores, tmp_path):
    out = figures.fig_beta_sweep(scores, "proxy_pick", "gold", tmp_path / "sweep")
    assert out.pdf.stat().st_size > 1000 and out.png.stat().st_size > 1000
    assert out.pdf.read_bytes().startswith(b"%PDF")
    assert len(out.figure.axes) == 4  # 2 rows (reward, quality) x 2 divergences (kl, js)
    assert _png_size(out.png) == (round(figures.TEXT_WIDTH * figures.DPI), round(3.0 * figures.DPI))
    ax_kl_gold = out.figure.axes[2]  # row-major: [reward kl, reward js, quality kl, quality js]
    assert ax_kl_gold.get_xscale() == "log"
    lines = [ln for ln in ax_kl_gold.lines if len(ln.get_xdata()) == 3]
    assert len(lines) == 1
    np.testing.assert_allclose(lines[0].get_xdata(), [0.01, 0.1, 1.0])
    np.testing.assert_allclose(lines[0].get_ydata(), [0.45, 0.70, 0.55], atol=1e-12)
    labels = [t.get_text() for t in ax_kl_gold.get_xticklabels()]
    assert labels[0] == "0"  # beta = 0 tick at the left
    ys = {round(float(ln.get_ydata()[0]), 9) for ln in ax_kl_gold.lines if len(ln.get_ydata()) == 2}
    assert 0.5 in ys  # base model reference line (axhline has 2 points)
    # without the base model and the beta = 0 arm: no reference line, no beta = 0 tick
    bare = figures.fig_beta_sweep(
        scores[~scores["arm"].isin(["base", "rocm-none-b0"])], "proxy_pick", "gold", tmp_path / "bare"
    )
    assert len(bare.figure.axes) == 4 and "0" not in [t.get_text() for t in bare.figure.axes[2].get_xticklabels()]
    assert all(len(ln.get_xdata()) == 3 for ln in bare.figure.axes[2].lines)
    with pytest.raises(ValueError, match="regularised ROCM"):
        figures.fig_beta_sweep(scores[scores["method"] != "rocm"], "proxy_pick", "gold", tmp_path / "x")
    with pytest.raises(ValueError, match="pickscore"):
        figures.fig_beta_sweep(scores, "pickscore", "gold", tmp_path / "x")


def test_figures_are_byte_reproducible(scores, tmp_path):
    a = figures.fig_beta_sweep(scores, "proxy_pick", "gold", tmp_path / "a", width=figures.COLUMN_WIDTH)
    b = figures.fig_beta_sweep(scores, "proxy_pick", "gold", tmp_path / "b.pdf", width=figures.COLUMN_WIDTH)
    assert b.png == tmp_path / "b.png"
    assert a.pdf.read_bytes() == b.pdf.read_bytes()
    assert a.png.read_bytes() == b.png.read_bytes()
    assert _png_size(a.png)[0] == round(figures.COLUMN_WIDTH * figures.DPI)


# ------------------------------------------------------------------------------------------------ training logs


def _write_run(root, run_id, meta, n_steps=10, divergence=True, device="cpu", drop=()):
    d = root / run_id
    d.mkdir(parents=True)
    seed = meta["seed"]
    step = np.arange(1, n_steps + 1)
    base = {"rocm": 0.3, "rlcm": 0.2}[meta["method"]] + 0.1 * (meta.get("beta") or 0)
    log = pd.DataFrame(
        {
            "step": step,
            "wall_s": step * 1.5,
            "device_hours": step * 0.001 * (1 + 0.5 * seed),  # seeds log at different x
            "device": device,
            "reward_queries": step * 16,
            "reward_mean": base + 0.05 * step + 0.01 * seed,
            "reward_std": 0.1,
            "loss": -0.1 * step,
        }
    )
    if divergence:
        log["divergence_mean"] = 0.001 * step * (1 + seed)
        for k in range(4):
            log[f"div_step_{k}"] = 0.0002 * step * (k + 1)
    log = log.drop(columns=list(drop))
    log.to_csv(d / "log.csv", index=False)
    _write_curve(d, log["step"].iloc[-1], step_hours=0.001 * (1 + 0.5 * seed), queries=16,
                 level=base, slope=0.05, offset=0.01 * seed)
    (d / "run.json").write_text(json.dumps({"run_id": run_id, **meta, "device": device}))
    return d


def _write_curve(d, n_steps, *, step_hours, queries, level, slope, offset, every=5):
    """A held-out probe curve.csv: steps 0, every, 2 every ...; gold = level + slope x step (+ offset), proxy_pick
    twice that."""
    steps = np.arange(0, n_steps + 1, every)
    rows = []
    for metric, k in (("gold", 1.0), ("proxy_pick", 2.0)):
        rows.append(pd.DataFrame({"step": steps, "reward_queries": steps * queries, "device_hours": steps * step_hours,
                                  "wall_s": steps * 1.5, "metric": metric,
                                  "mean": k * (level + slope * steps + offset * (steps > 0)), "n_images": 8}))
    pd.concat(rows).to_csv(d / "curve.csv", index=False)


@pytest.fixture()
def run_dirs(tmp_path):
    root = tmp_path / "runs"
    dirs = []
    for seed in (0, 1):
        dirs.append(
            _write_run(
                root, f"rocm-none-b0-s{seed}", {"method": "rocm", "divergence": "none", "beta": 0.0, "seed": seed}
            )
        )
        for beta in (0.1, 1.0):
            dirs.append(
                _write_run(
                    root,
                    f"rocm-kl-b{beta:g}-s{seed}",
                    {"method": "rocm", "divergence": "kl", "beta": beta, "seed": seed},
                )
            )
        dirs.append(_write_run(root, f"rlcm-s{seed}", {"method": "rlcm", "seed": seed}, divergence=False))
    return dirs


def test_load_training_logs(run_dirs, tmp_path):
    logs = training_logs.load_training_logs(run_dirs)
    assert list(logs.columns[:6]) == ["run_id", "arm", "method", "divergence", "beta", "seed"]
    assert len(logs) == 8 * 10
    assert set(logs["arm"]) == {"rocm-none-b0", "rocm-kl-b0.1", "rocm-kl-b1", "rlcm"}
    rl = logs[logs["method"] == "rlcm"]
    assert (rl["divergence"] == "none").all() and rl["beta"].isna().all() and rl["divergence_mean"].isna().all()
    assert "div_step_3" in logs.columns
    kl = logs[logs["run_id"] == "rocm-kl-b0.1-s1"]
    np.testing.assert_allclose(kl["reward_mean"], 0.31 + 0.05 * np.arange(1, 11) + 0.01)

    bad = _write_run(
        tmp_path / "bad",
        "rocm-kl-b9-s0",
        {"method": "rocm", "divergence": "kl", "beta": 9.0, "seed": 0},
        drop=["reward_queries"],
    )
    with pytest.raises(ValueError, match="reward_queries"):
        training_logs.load_training_logs([bad])
    with pytest.raises(ValueError, match="nowhere.*does not exist"):
        training_logs.load_training_logs([tmp_path / "nowhere"])
    with pytest.raises(ValueError, match="same run_id"):
        training_logs.load_training_logs([run_dirs[0], run_dirs[0]])


def test_load_training_logs_takes_each_runs_identity_from_its_run_id(tmp_path):
    """run.json's run_id is parsed by rocm_rlhf.runs.parse_run: arm, method, divergence, beta and seed follow."""
    d = _write_run(tmp_path, "rocm-js-b1e-05-s3", {"method": "rocm", "seed": 3})  # no divergence or beta in run.json
    logs = training_logs.load_training_logs(d)
    head = logs.iloc[0]
    assert list(logs.columns[:6]) == list(training_logs.RUN_META)
    assert (head["run_id"], head["arm"], head["method"], head["divergence"], head["seed"]) == (
        "rocm-js-b1e-05-s3", "rocm-js-b1e-05", "rocm", "js", 3)
    assert head["beta"] == 1e-05 and logs["beta"].dtype == float and logs["seed"].dtype == np.int64
    base_like = _write_run(tmp_path, "rlcm-s1", {"method": "rlcm", "seed": 1}, divergence=False)
    rl = training_logs.load_training_logs([base_like])
    assert (rl["arm"] == "rlcm").all() and (rl["divergence"] == "none").all() and rl["beta"].isna().all()

    for run_id, meta, words in (
        ("rocm-kl-b10.0-s0", {"method": "rocm", "seed": 0}, "non-canonical"),
        ("ppo-s0", {"method": "rlcm", "seed": 0}, "is not a run id"),
        ("rocm-kl-b1-s0", {"method": "rlcm", "seed": 0}, "method 'rlcm' disagrees with run id"),
        ("rocm-kl-b1-s1", {"method": "rocm", "seed": 0}, "seed 0 disagrees with run id"),
    ):
        bad = _write_run(tmp_path / "bad" / run_id, run_id, meta)
        with pytest.raises(ValueError, match=words):
            training_logs.load_training_logs(bad)


def test_mean_over_seeds_interpolates_on_the_common_range():
    x1 = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    x2 = np.array([0.5, 1.5, 3.0])  # covers [0.5, 3]: the common range
    grid, mean, std = training_logs.mean_over_seeds([(x1, x1), (x2, 2 * x2)])
    np.testing.assert_allclose(grid, [0.5, 1.0, 1.5, 2.0, 3.0])
    np.testing.assert_allclose(mean, 1.5 * grid)  # both curves are linear: interpolation is exact
    np.testing.assert_allclose(std, grid / np.sqrt(2))  # sample std of (x, 2x)
    g1, m1, s1 = training_logs.mean_over_seeds([(x1[::-1], x1[::-1])])  # unsorted input, one seed: no std
    np.testing.assert_allclose(g1, x1) and np.testing.assert_allclose(m1, x1)
    assert np.isnan(s1).all()
    with pytest.raises(ValueError, match="share no x range"):
        training_logs.mean_over_seeds([(x1, x1), (x1 + 10, x1)])


def test_fig_efficiency(run_dirs, tmp_path):
    curves = training_logs.load_curves(run_dirs)
    out = figures.fig_efficiency(curves, tmp_path / "eff", ["gold", "proxy_pick"], chosen_betas={"kl": 0.1})
    assert out.pdf.stat().st_size > 1000 and out.png.stat().st_size > 1000
    axes = np.array(out.figure.axes).reshape(2, 2)  # rows: gold, proxy_pick; columns: device-hours, queries
    ax = axes[0, 0]
    labels = [ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")]
    assert labels == ["ROCM (β=0)", "ROCM-KL (β=0.1)", "RLCM"]
    assert axes[1, 0].get_xlabel() == "CPU core-hours" and axes[1, 1].get_xlabel() == "reward queries"
    assert "held-out gold" in ax.get_ylabel() and "held-out proxy_pick" in axes[1, 0].get_ylabel()
    # the ROCM-KL line is the seed mean of the held-out probe on the common grid of device hours (step 0 is the
    # dotted line of the untrained LCM, at zero cost, off the log axis)
    kl = curves[(curves["arm"] == "rocm-kl-b0.1") & (curves["metric"] == "gold") & (curves["step"] > 0)]
    ref = training_logs.mean_over_seeds([(g["device_hours"], g["mean"]) for _, g in kl.groupby("run_id")])
    line = next(ln for ln in ax.lines if ln.get_label() == "ROCM-KL (β=0.1)")
    np.testing.assert_allclose(line.get_xdata(), ref[0])
    np.testing.assert_allclose(line.get_ydata(), ref[1])
    start = curves[(curves["step"] == 0) & (curves["metric"] == "gold")]["mean"]  # every run here is an LCM run
    assert any(ln.get_linestyle() == ":" and ln.get_ydata()[0] == pytest.approx(start.mean()) for ln in ax.lines)
    want = [style.arm_style("rocm", "none", 0.0), style.arm_style("rocm", "kl", 0.1), style.arm_style("rlcm")]
    shown = [ln for ln in ax.lines if not ln.get_label().startswith("_")]
    assert [ln.get_color() for ln in shown] == [w["color"] for w in want]
    assert len({ln.get_marker() for ln in shown}) == 3 and len({str(w["linestyle"]) for w in want}) == 3
    assert all(a.get_xscale() == "log" for a in axes.flat)
    with pytest.raises(ValueError, match="several betas"):
        figures.fig_efficiency(curves, tmp_path / "x", ["gold"])
    with pytest.raises(ValueError, match="not in the logs"):
        figures.fig_efficiency(curves, tmp_path / "x", ["gold"], chosen_betas={"kl": 0.5})
    with pytest.raises(ValueError, match="imagereward"):
        figures.fig_efficiency(curves, tmp_path / "x", ["imagereward"], chosen_betas={"kl": 0.1})
    mixed = curves.copy()
    mixed.loc[mixed["method"] == "rlcm", "device"] = "cuda"
    with pytest.raises(ValueError, match="mix devices"):
        figures.fig_efficiency(mixed, tmp_path / "x", ["gold"], chosen_betas={"kl": 0.1})


def test_fig_training_curves(run_dirs, tmp_path):
    logs = training_logs.load_training_logs(run_dirs)
    out = figures.fig_training_curves(logs, tmp_path / "curves", log_divergence=True)
    assert out.pdf.stat().st_size > 1000 and out.png.stat().st_size > 1000
    assert len(out.figure.axes) == 2  # (reward, divergence) x one divergence (kl)
    top, bottom = out.figure.axes
    assert [ln.get_label() for ln in top.lines] == ["β=0", "β=0.1", "β=1"]
    assert len(bottom.lines) == 2 and bottom.get_yscale() == "log"  # beta = 0 optimises no divergence
    np.testing.assert_allclose(bottom.lines[0].get_ydata(), 0.0015 * np.arange(1, 11))  # mean of 1x and 2x
    np.testing.assert_allclose(top.lines[2].get_ydata(), 0.4 + 0.05 * np.arange(1, 11) + 0.005)
    with pytest.raises(ValueError, match="regularised ROCM"):
        figures.fig_training_curves(logs[logs["method"] == "rlcm"], tmp_path / "x")
    with pytest.raises(ValueError, match="load_training_logs"):
        figures.fig_training_curves(logs.drop(columns="arm"), tmp_path / "x")


# ------------------------------------------------------------------------------------------------------ gallery


def test_fig_divergence_gallery(tmp_path):
    rng = np.random.default_rng(0)
    prompts = ["a red circle", "a small blue square on the left", "a green triangle"]
    images = {k: rng.uniform(size=(3, 8, 8, 3)) for k in ("rocm-kl-b0.1", "base", "rocm-js-b1")}
    out = figures.fig_divergence_gallery(images, prompts, tmp_path / "gallery")
    assert out.pdf.stat().st_size > 1000 and out.png.stat().st_size > 1000
    axes = out.figure.axes
    assert len(axes) == 9
    assert [axes[3 * r].get_ylabel() for r in range(3)] == ["Base", "ROCM-KL (β=0.1)", "ROCM-JS (β=1)"]
    np.testing.assert_array_equal(axes[0].images[0].get_array(), images["base"][0])  # base row first
    np.testing.assert_array_equal(axes[5].images[0].get_array(), images["rocm-kl-b0.1"][2])
    assert axes[1].get_title().replace("\n", " ") == prompts[1]
    assert _png_size(out.png)[0] == round(figures.TEXT_WIDTH * figures.DPI)
    with pytest.raises(ValueError, match="holds 2 images but there are 3 prompts"):
        figures.fig_divergence_gallery({"base": images["base"][:2]}, prompts, tmp_path / "x")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        figures.fig_divergence_gallery({"base": images["base"] * 255}, prompts, tmp_path / "x")
    with pytest.raises(ValueError, match="channels last"):
        figures.fig_divergence_gallery({"base": images["base"].transpose(0, 3, 1, 2)}, prompts, tmp_path / "x")


# ------------------------------------------------------------------------------------ figures: style, seeds, layout


def test_style_table_one_look_per_arm():
    looks = {k: (v.color, v.marker, str(v.linestyle)) for k, v in style.ARM_STYLES.items()}
    for i in range(3):  # colour, marker and line style each tell every arm apart
        assert len({look[i] for look in looks.values()}) == len(looks)
    assert all(style.contrast_ratio(v.color) >= 3.0 for v in style.ARM_STYLES.values())
    assert style.style_key("rocm", "kl", 0.0) == style.style_key("rocm", "none", 0.0) == "rocm-none"
    assert style.arm_style("dpok") != style.arm_style("rocm", "none", 0.0)  # both were solid black circles
    shades = style.beta_styles("fisher", 3)
    assert shades[0]["color"] == style.ARM_STYLES["rocm-fisher"].color
    assert len({s["color"] for s in shades}) == len({s["marker"] for s in shades}) == 3
    assert all(style.contrast_ratio(s["color"]) >= 3.0 for s in shades)
    with pytest.raises(ValueError, match="ppo"):
        style.style_key("ppo")


def test_smooth_steps_and_t_interval():
    y = np.array([0.0, 3.0, 0.0, 3.0, 0.0, 3.0, 0.0])
    np.testing.assert_allclose(figures.smooth_steps(y, 3), [0, 1, 2, 1, 2, 1, 0])
    np.testing.assert_allclose(figures.smooth_steps(y, 5)[2:5], [1.2, 1.8, 1.2])
    np.testing.assert_allclose(figures.smooth_steps(np.arange(9.0), 5), np.arange(9.0))  # linear trend kept
    np.testing.assert_array_equal(figures.smooth_steps(y, 1), y)
    with pytest.raises(ValueError, match="odd"):
        figures.smooth_steps(y, 4)
    lo, hi = figures.t_interval([1.0, 2.0], [1.0, np.nan], [3, 1])
    half = 4.302652729911275 / np.sqrt(3)  # t_{0.975, 2}
    np.testing.assert_allclose([lo[0], hi[0]], [1 - half, 1 + half])
    assert np.isnan(lo[1]) and np.isnan(hi[1])  # one seed: no interval


SEED3_OFFSET = {0: -0.02, 1: 0.0, 2: 0.03}


def _renderer(fig):
    """An Agg renderer of ``fig``, drawn (the figures are built without pyplot, so without a canvas of their own)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _sweep_scores(seeds=(0, 1, 2)):
    """A score table like the default config's sweep (Fisher at 3, 30, 300), with ``seeds`` per trained arm."""
    rows = []
    specs = [("base", "base", "none", np.nan, (0,), 0.5)]
    specs += [("rocm-none-b0", "rocm", "none", 0.0, seeds, 0.2)]
    for div, betas in (("kl", (1.0, 10.0, 100.0)), ("fisher", (3.0, 30.0, 300.0))):
        specs += [(f"rocm-{div}-b{b:g}", "rocm", div, b, seeds, 0.3 + 0.1 * i) for i, b in enumerate(betas)]
    specs += [(m, m, "none", np.nan, seeds, 0.4) for m in ("rlcm", "dpok")]
    for arm, method, div, beta, arm_seeds, eff in specs:
        for seed in arm_seeds:
            off = SEED3_OFFSET[seed] if len(arm_seeds) > 1 else 0.0
            for metric, sign in (("gold", 1.0), ("proxy_pick", -1.0)):
                for p in range(4):
                    rows.append(dict(run_id=arm if arm == "base" else f"{arm}-s{seed}", arm=arm, method=method,
                                     divergence=div, beta=beta, seed=seed, prompt_id=f"p{p}", sample_seed=0,
                                     metric=metric, value=sign * eff + off + 0.01 * p))
    return pd.DataFrame(rows)


def test_fig_beta_sweep_three_seeds_draws_a_95_ci_and_ticks_at_the_betas_run(tmp_path):
    out = figures.fig_beta_sweep(_sweep_scores(), "proxy_pick", "gold", tmp_path / "sweep3")
    axes = out.figure.axes  # [reward kl, reward fisher, quality kl, quality fisher]
    assert [t.get_text() for t in axes[3].get_xticklabels()] == ["0", "3", "30", "300"]
    assert [t.get_text() for t in axes[2].get_xticklabels()] == ["0", "1", "10", "100"]
    ax = axes[2]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]  # one 95 % band around the KL line
    (zero_bar,) = [c for c in ax.collections if isinstance(c, LineCollection)]  # beta = 0's error bar
    seg = zero_bar.get_segments()[0][:, 1]
    assert seg.max() - seg.min() == pytest.approx(2 * 4.302652729911275 * np.std([-0.02, 0, 0.03], ddof=1) / 3**0.5)
    half = 4.302652729911275 * np.std([-0.02, 0.0, 0.03], ddof=1) / np.sqrt(3)
    ys = band.get_paths()[0].vertices[:, 1]
    mean_kl = 0.3 + np.mean([-0.02, 0.0, 0.03]) + 0.015
    assert ys.max() == pytest.approx(mean_kl + 0.2 + half) and ys.min() == pytest.approx(mean_kl - half)
    line = next(ln for ln in ax.lines if len(ln.get_xdata()) == 3)
    assert line.get_color() == style.ARM_STYLES["rocm-kl"].color
    fisher = next(ln for ln in axes[3].lines if len(ln.get_xdata()) == 3)
    assert fisher.get_color() == style.ARM_STYLES["rocm-fisher"].color
    legend = out.figure.legends[0]
    assert "95 % t-interval over 3 training seeds" in legend.get_texts()[0].get_text()


def test_fig_beta_sweep_one_seed_draws_points_and_says_so(tmp_path):
    out = figures.fig_beta_sweep(_sweep_scores(seeds=(0,)), "proxy_pick", "gold", tmp_path / "sweep1")
    assert all(len(ax.collections) == 0 for ax in out.figure.axes)  # no band, no error bar
    assert "one training seed" in out.figure.legends[0].get_texts()[0].get_text()


def _write_log3(root, run_id, n_steps=30):
    run = rocm_runs.parse_run(run_id)
    d = root / run_id
    d.mkdir(parents=True)
    step = np.arange(1, n_steps + 1)
    zigzag = 0.05 * (-1.0) ** step
    level = {"rocm": 0.3, "rlcm": 0.2, "ddpo": 0.25, "d3po": 0.22, "dpok": 0.18}[run.method]
    log = pd.DataFrame({
        "step": step, "wall_s": step * 1.5, "device_hours": step * 0.001 * (1 + 0.1 * run.seed), "device": "cpu",
        "reward_queries": step * 8, "reward_mean": level + 0.01 * step + zigzag + 0.02 * run.seed,
        "divergence_mean": 0.0 if run.method != "rocm" else np.where(step > 1, 10.0 / (1 + (run.beta_value or 0)) *
                                                                     (1 + 0.1 * run.seed), 0.0),
    })
    if run.divergence == "fisher":
        log["divergence_mean"] *= 1000  # other units: its own y scale
    log.to_csv(d / "log.csv", index=False)
    _write_curve(d, n_steps, step_hours=0.001 * (1 + 0.1 * run.seed), queries=8, level=0.2 if run.generator == "lcm"
                 else 0.25, slope=0.01 * (level / 0.2), offset=0.02 * run.seed)
    (d / "run.json").write_text(json.dumps({"run_id": run_id}))
    return d


@pytest.fixture()
def logs3(tmp_path):
    ids = [f"{arm}-s{seed}" for seed in (0, 1, 2) for arm in
           ("rocm-none-b0", "rocm-kl-b1", "rocm-kl-b10", "rocm-fisher-b3", "rocm-fisher-b30", "rlcm", "ddpo",
            "d3po", "dpok")]
    dirs = [_write_log3(tmp_path / "runs3", i) for i in ids]
    logs = training_logs.load_training_logs(dirs)
    logs.attrs["dirs"] = [str(d) for d in dirs]
    return logs


def test_fig_efficiency_three_seeds_bands_are_t_intervals_over_seeds(logs3, tmp_path):
    curves = training_logs.load_curves(sorted({Path(p) for p in logs3.attrs["dirs"]}))
    out = figures.fig_efficiency(curves, tmp_path / "eff3", ["gold"], chosen_betas={"kl": 10, "fisher": 3})
    ax = out.figure.axes[0]
    shown = [ln for ln in ax.lines if not ln.get_label().startswith("_")]
    assert [ln.get_label() for ln in shown] == ["ROCM (β=0)", "ROCM-KL (β=10)", "ROCM-Fisher (β=3)", "RLCM", "DDPO",
                                                "D3PO", "DPOK"]
    assert len({(ln.get_color(), ln.get_marker()) for ln in shown}) == 7  # one look per arm
    assert len(ax.collections) == 7  # a band per arm: three seeds each
    # the DPOK band: 95% t-interval of the seed mean on the common grid
    g = curves[(curves["arm"] == "dpok") & (curves["metric"] == "gold") & (curves["step"] > 0)]
    grid, mean, std = training_logs.mean_over_seeds([(s["device_hours"], s["mean"]) for _, s in g.groupby("run_id")])
    lo, hi = figures.t_interval(mean, std, np.full_like(mean, 3))
    np.testing.assert_allclose(shown[-1].get_ydata(), mean)
    band = ax.collections[-1].get_paths()[0].vertices
    assert band[:, 1].max() == pytest.approx(hi.max()) and band[:, 1].min() == pytest.approx(lo.min())
    assert "95% t-interval over 3 training seeds" in out.figure.legends[0].get_title().get_text()
    one = figures.fig_efficiency(curves[curves["seed"] == 0], tmp_path / "eff1", ["gold"], chosen_betas={"kl": 10})
    assert len(one.figure.axes[0].collections) == 0
    assert one.figure.legends[0].get_title().get_text().startswith("one training seed")


def test_fig_training_curves_own_divergence_scales_and_legends_off_the_curves(logs3, tmp_path):
    out = figures.fig_training_curves(logs3, tmp_path / "curves3", log_divergence=False)
    (kl_r, fi_r), (kl_d, fi_d) = np.array(out.figure.axes).reshape(2, 2)
    assert kl_r.get_ylim() == fi_r.get_ylim()  # rewards: one scale
    assert fi_d.get_ylim()[1] > 100 * kl_d.get_ylim()[1]  # Fisher's units do not flatten KL's panel
    assert kl_d.get_ylim()[1] < 20
    renderer = _renderer(out.figure)
    for ax in (kl_r, fi_r):
        leg = ax.get_legend()
        assert leg.get_title().get_text() in ("KL", "Fisher")
        assert leg.get_window_extent(renderer).y0 >= ax.get_window_extent(renderer).y1 - 1  # above the axes
        assert [t.get_text() for t in leg.get_texts()][0] == "β=0"
    assert len(kl_r.collections) == 3  # beta = 0, 1, 10: bands over three seeds
    assert "3 training seeds" in out.figure._suptitle.get_text()
    assert kl_r.lines[1].get_color() == style.beta_styles("kl", 2)[0]["color"]


@pytest.mark.parametrize("n_prompts", [1, 6, 12])
def test_fig_divergence_gallery_titles_fit(tmp_path, n_prompts):
    words = "a large yellow square at the bottom of an otherwise empty image, drawn small and twice".split()
    prompts = [" ".join(words[: 4 + (i * 3) % 12]) + f" #{i}" for i in range(n_prompts)]
    prompts[-1] = "at the bottom, a small green circle, withaverylongunbrokenwordthatmustbebroken"
    rng = np.random.default_rng(0)
    images = {k: rng.uniform(size=(n_prompts, 8, 8, 3))
              for k in ("base", "rocm-none-b0", "rocm-kl-b10", "rocm-hellinger-b10")}
    out = figures.fig_divergence_gallery(images, prompts, tmp_path / "g")
    fig = out.figure
    renderer = _renderer(fig)
    box = fig.bbox
    for c, ax in enumerate(fig.axes[:n_prompts]):
        title = ax.title.get_window_extent(renderer)
        assert box.x0 <= title.x0 and title.x1 <= box.x1 and title.y1 <= box.y1 and title.y0 >= box.y0
        assert title.width <= ax.get_window_extent(renderer).width * 1.001
        assert ax.get_title().replace("\n", " ").replace(" ", "") == prompts[c].replace(" ", "")
    for ax in fig.axes[::n_prompts]:
        assert ax.yaxis.label.get_window_extent(renderer).x0 >= box.x0  # row labels inside
    assert _png_size(out.png)[0] == round(figures.TEXT_WIDTH * figures.DPI)


def test_fig_beta_sweep_draws_the_interval_of_a_chosen_beta_with_seeds_among_one_seed_betas(scores3, tmp_path):
    """After the confirmatory stage only the chosen beta has 3 seeds: a band needs neighbours, so it gets an error
    bar (the old figure drew a zero-width band: no interval visible)."""
    keep_seeds = (scores3["arm"] == "rocm-kl-b0.1") | (scores3["method"] != "rocm") | (scores3["seed"] == 0)
    out = figures.fig_beta_sweep(scores3[keep_seeds], "proxy_pick", "gold", tmp_path / "sweep")
    kl_gold = np.array(out.figure.axes).reshape(2, -1)[1, 0]
    bars = [c for c in kl_gold.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    segments = [seg for c in bars for lc in c.lines[2] for seg in lc.get_segments()]
    assert any(seg[0][0] == pytest.approx(0.1) and seg[1][1] - seg[0][1] > 0 for seg in segments)


def test_cells_never_print_minus_zero():
    from rocm_rlhf.analysis.render import cell_text

    assert cell_text(0.0, 0.0, 3, ci=(-1e-9, 1e-9)) == "0.000 [0.000, 0.000]"
    assert cell_text(-0.0004, float("nan"), 1) == "0.000" and cell_text(-0.002, float("nan"), 1) == "-0.002"
    from rocm_rlhf.analysis.render import signed  # the learning table's signed changes (it printed -0.000)

    assert signed(-0.0002, 3) == "+0.000" and signed(0.0, 3) == "+0.000" and signed(-0.0106, 3) == "-0.011"
    assert signed(0.0106, 3) == "+0.011"

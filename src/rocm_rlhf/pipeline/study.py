"""Stages of workflow/rules/study.smk: the pairwise preference study built from the evaluation samples, its simulated
answers (sandbox), and its results (rocm_rlhf.study). People answer the study through the app
(``rocm-rlhf study-serve``), outside the workflow; ``study.answers: human`` makes the results read their database."""

from __future__ import annotations

from pathlib import Path

from .. import runs
from ..infra.jobs import stage
from .common import SANDBOX_JUDGE_KEYS, path, world

DESIGN_KEYS = ("study.arms", "study.split", "study.pairs_per_arm_pair", "study.attention.fraction", "study.seed")
SIMULATE_KEYS = ("study.simulate", "study.seed", *SANDBOX_JUDGE_KEYS)
RESULT_KEYS = ("study.answers", "study.attention.max_failed", "study.n_boot", "study.seed")


@stage(reads=DESIGN_KEYS)
def build_study(job) -> None:
    """The study folder (``job.output.study``) from the samples of the study's arms (``job.input.samples``: the
    runs' images.npz of the split), the chosen settings (``job.input.chosen``) when ``study.arms`` names them."""
    from ..study.design import build_study as build
    from ..study.design import resolve_arms, runs_of_arms

    s = job.config["study"]
    chosen = path(job.input, "chosen")
    betas, lrs = (runs.read_chosen(chosen), runs.read_chosen_lrs(chosen)) if chosen else (None, None)
    samples = {Path(p).parent.name: p for p in job.input.samples}
    arm_runs = runs_of_arms(resolve_arms(s["arms"], betas, lrs), list(samples))
    items = build(samples, arm_runs, job.output.study, pairs_per_arm_pair=s["pairs_per_arm_pair"],
                  attention_fraction=s["attention"]["fraction"], seed=s["seed"], split=s["split"])
    print(f"{len(items)} items ({items['kind'].value_counts().to_dict()}) of arms {list(arm_runs)}")


@stage(reads=SIMULATE_KEYS)
def simulate_study(job) -> None:
    """Simulated raters answer the study through its web app, served in this process on a free localhost port:
    ``study.simulate.raters`` gold raters and ``careless`` careless ones (rocm_rlhf.study.simulate), into
    ``job.output.db``."""
    from ..study.app import create_app, serving
    from ..study.simulate import sandbox_gold, simulate

    cfg = job.config
    sim = cfg["study"]["simulate"]
    out = Path(job.output.db)
    for stale in (out, Path(f"{out}-wal"), Path(f"{out}-shm")):
        stale.unlink(missing_ok=True)
    app = create_app(job.input.study, out, durable=False)
    try:
        with serving(app) as url:
            done = simulate(url, sandbox_gold(world(cfg), cfg["sandbox"]["judge_tau"]), raters=sim["raters"],
                            careless=sim["careless"], temperature=sim["temperature"], tie_margin=sim["tie_margin"],
                            seed=cfg["study"]["seed"])
    finally:
        app.extensions["study_store"].close()
    print(f"answers through {url}: {done}")


@stage(reads=RESULT_KEYS)
def analyze_study(job) -> None:
    """The study's results from its answers database (``job.input.db``): the table and the figure
    (paper_figures/table_study.*, fig_study.*), every answer with its item (``job.output.answers``) and the summary
    (``job.output.summary``)."""
    from ..analysis.render import write_table
    from ..infra.utils import atomic_path, write_json
    from ..study.analysis import analyse, fig_study, join_answers, study_text
    from ..study.db import read_answers
    from ..study.design import load_study

    s = job.config["study"]
    study = load_study(job.input.study)
    answers = read_answers(job.input.db, study)
    res = analyse(study, answers, max_failed=s["attention"]["max_failed"], n_boot=s["n_boot"], rng_seed=s["seed"])
    md, tex, long = study_text(res, s["answers"])
    write_table(Path(job.output.md).with_suffix(""), long, md, tex)
    fig_study(res, Path(job.output.pdf).with_suffix(""))
    excluded = set(res.summary["excluded"])
    joined = join_answers(study, answers)
    with atomic_path(job.output.answers) as tmp:
        joined.assign(rater_excluded=joined["rater_id"].isin(excluded)).to_csv(tmp, index=False)
    write_json(job.output.summary, {**res.summary, "answers_source": s["answers"],
                                    "raters_table": res.raters.to_dict(orient="records")})
    print(md)

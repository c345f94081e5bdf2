"""How much could training several runs as one batched model save? The ceiling, measured per method.

Several runs of one method (seeds, betas, learning rates) trained in one process as one batched model, each with its
own LoRA adapter, would send R runs' samples through each UNet, VAE and reward call at once. On a CPU the per-call
cost of these small models is far from linear in the batch, so this is the lever the speed issue names for the
training jobs. Its ceiling is what one run costs when its batch is R times the default's, divided by R: the samples
of R runs in every call, with none of the per-run adapter arithmetic a real batched model would add (so the real
gain is at most this). This benchmark trains each method for a few steps at R = 1, 3 and 8 times the default
config's batch (ROCM and RLCM ``batch_size``, DDPO and DPOK ``batch_size``, D3PO ``prompts_per_step``; the number
of updates per step kept, so each update takes R runs' samples: DPOK's ``policy_batch_size`` times R, D3PO's
``num_minibatches`` fixed at its one update per pair of one run), through the pipeline's own
``train_run``, single-threaded, and reports seconds per step and per run-step (seconds per step / R).

    python benchmarks/bench_batch_scaling.py [--sandbox results/models/sandbox] [--runs 1 3 8] [--steps 6]
        [--rounds 3] [--methods rocm rocm-b0 rlcm ddpo d3po dpok] [--project results]

``rocm`` is ROCM at KL beta = 10 (the default's regularised runs), ``rocm-b0`` at beta = 0. The first two steps of
of each run are warm-up; the median of the others, pooled over ``--rounds`` interleaved rounds (this machine's speed
drifts within minutes), is reported. Needs the sandbox models (`snakemake --cores 2
results/models/sandbox/quality.json`). Results: results/benchmarks/batch_scaling.json (or --out).

``--project RESULTS`` (a finished workflow run's results folder, e.g. ``results``) projects that run's training
job-seconds had the runs of each method that the workflow can start together been trained as one batched model:
the seed-0 runs of a method (ROCM's betas, divergences and targets; a baseline's learning-rate grid) in one group,
its other seeds in another (the default's sweep is at seed 0 and its confirmatory seeds 1 and 2; with more sweep seeds
those join the confirmatory group, which overstates the group), a group's per-run step cost the measured factor at its size (interpolated
linearly between the measured sizes, the largest measured one beyond them). Only a run's training steps (its
``log.csv`` wall clock) are scaled; its loading, probe and checkpoints are kept. An estimate of the ceiling, not a
measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("rocm", "rocm-b0", "rlcm", "ddpo", "d3po", "dpok")


def batch_overrides(method: str, runs: int, config: dict) -> dict:
    """The config overrides that put ``runs`` default batches through every call of ``method``."""
    b = config["baselines"]
    if method in ("rocm", "rocm-b0"):
        return {"train": {"batch_size": config["train"]["batch_size"] * runs}}
    if method == "d3po":  # one update per pair of each run (num_minibatches unset): R pairs per update
        pairs = b["d3po"]["prompts_per_step"]
        return {"baselines": {"d3po": {"prompts_per_step": pairs * runs,
                                       "num_minibatches": b["d3po"].get("num_minibatches") or pairs}}}
    block = {"batch_size": b[method]["batch_size"] * runs}
    if method == "dpok":
        from rocm_rlhf.training.dpok import DPOK

        block["policy_batch_size"] = b["dpok"].get("policy_batch_size", DPOK.policy_batch_size) * runs
    return {"baselines": {method: block}}


def factor(measured: dict, method: str, runs: int) -> float:
    """The measured per-run step cost of ``method`` with ``runs`` runs per call, relative to one run: linear between
    the measured sizes, the largest measured size's beyond them."""
    rows = {int(r): v["per_run_step_vs_one_run"] for r, v in measured["methods"][method].items()}
    sizes = sorted(rows)
    if runs >= sizes[-1]:
        return rows[sizes[-1]]
    hi = next(s for s in sizes if s >= runs)
    lo = max(s for s in sizes if s <= runs)
    return rows[lo] if hi == lo else rows[lo] + (rows[hi] - rows[lo]) * (runs - lo) / (hi - lo)


def project(results: Path, measured: dict) -> dict:
    """A finished run's training job-seconds, and the same had each group of runs been one batched model."""
    import pandas as pd

    from rocm_rlhf import runs as catalogue

    jobs = []
    for tsv in sorted((results / "benchmarks/train").glob("*.tsv")):
        run = catalogue.parse_run(tsv.stem)
        kind = run.method if run.method != "rocm" else ("rocm-b0" if run.divergence == catalogue.UNREGULARISED
                                                        else "rocm")
        group = (run.method, "seed 0" if run.seed == 0 else "confirmatory seeds")
        job_s = float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1])
        step_s = float(pd.read_csv(results / "runs" / run.id / "log.csv")["wall_s"].iloc[-1])
        jobs.append({"run": run.id, "kind": kind, "group": group, "job_s": job_s, "steps_s": step_s})
    if not jobs:
        raise SystemExit(f"no training benchmarks under {results}/benchmarks/train: run the workflow first")
    sizes = {}
    for j in jobs:
        sizes[j["group"]] = sizes.get(j["group"], 0) + 1
    out = {"results": str(results), "groups": {f"{m}, {g}": n for (m, g), n in sizes.items()}, "by_method": {}}
    for j in jobs:
        if j["kind"] not in measured["methods"]:
            raise SystemExit(f"{j['run']}: no measurement of {j['kind']} in the measured file; this benchmark measures "
                             f"{', '.join(METHODS)} (--methods)")
        f = factor(measured, j["kind"], sizes[j["group"]])
        j["projected_s"] = j["job_s"] - j["steps_s"] + j["steps_s"] * f
        m = out["by_method"].setdefault(j["group"][0], {"runs": 0, "job_s": 0.0, "steps_s": 0.0, "projected_s": 0.0})
        m["runs"] += 1
        for k in ("job_s", "steps_s", "projected_s"):
            m[k] += j[k]
    out["train_job_s"] = sum(j["job_s"] for j in jobs)
    out["train_projected_s"] = sum(j["projected_s"] for j in jobs)
    all_s = sum(float(pd.read_csv(t, sep="\t")["s"].iloc[-1]) for t in (results / "benchmarks").rglob("*.tsv"))
    out["all_job_s"] = all_s
    out["all_projected_s"] = all_s - out["train_job_s"] + out["train_projected_s"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sandbox", default=str(REPO / "results/models/sandbox"))
    ap.add_argument("--prompts", default=str(REPO / "results/prompts/train.csv"))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--runs", nargs="+", type=int, default=[1, 3, 8])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the timed steps of all are pooled")
    ap.add_argument("--out", default=str(REPO / "results/benchmarks/batch_scaling.json"))
    ap.add_argument("--project", help="a finished run's results folder: project its training job-seconds")
    ap.add_argument("--measured", help="with --project: reuse this batch_scaling.json instead of measuring")
    args = ap.parse_args(argv)
    if args.measured and not args.project:
        ap.error("--measured needs --project")
    if args.measured:
        res = json.loads(Path(args.measured).read_text())
        res["projection"] = project(Path(args.project), res)
        print(json.dumps(res["projection"], indent=2))
        from rocm_rlhf.infra.utils import write_json

        write_json(args.out, res)
        return 0
    if args.steps < 3:
        ap.error("--steps must be at least 3 (two warm-up steps, then the timed ones)")

    import pandas as pd
    import torch

    from rocm_rlhf.infra.config import load_config
    from rocm_rlhf.infra.utils import write_json
    from rocm_rlhf.prompts import read_prompts
    from rocm_rlhf.training.run import make_method

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_methods import sandbox_train_run

    torch.set_num_threads(1)
    sbx = Path(args.sandbox)
    base = load_config(REPO / "config/config.yaml", overrides={"device": "cpu"})
    prompts = read_prompts(args.prompts)["prompt"].tolist()
    work = Path(args.out).with_suffix("")
    res = {"benchmark": "batch_scaling", "steps": args.steps, "rounds": args.rounds, "threads": 1,
           "machine": f"{platform.machine()} python {platform.python_version()} torch {torch.__version__}",
           "methods": {}}
    timed = {(m, r): [] for m in args.methods for r in args.runs}
    totals = {(m, r): [] for m in args.methods for r in args.runs}
    queries = {}
    for rnd in range(args.rounds):  # interleaved rounds: this machine's speed drifts within minutes
        for method in args.methods:
            name = method.split("-")[0]
            kw = {"rocm": {"divergence": "kl", "beta": 10.0},
                  "rocm-b0": {"divergence": "none", "beta": 0.0}}.get(method, {})
            for r in args.runs:
                over = batch_overrides(method, r, base)
                over["device"] = "cpu"
                over.setdefault("train", {}).update(steps=args.steps, checkpoint_every=10**6)
                cfg = load_config(REPO / "config/config.yaml", overrides=over)
                per_step = make_method(name, cfg, **kw).queries_per_step() or cfg["train"]["batch_size"]
                queries[method, r] = per_step
                over.setdefault("baselines", {})["reward_queries"] = per_step * args.steps  # args.steps steps each
                cfg = load_config(REPO / "config/config.yaml", overrides=over)
                run_dir = work / f"{method}-x{r}"
                t0 = time.perf_counter()
                sandbox_train_run(cfg, name, f"{method}-x{r}", run_dir, sbx, prompts, **kw)
                wall = pd.read_csv(run_dir / "log.csv")["wall_s"].tolist()
                timed[method, r] += [b - a for a, b in zip(wall[1:], wall[2:])]  # steps 3.. (2 warm-up)
                totals[method, r].append(time.perf_counter() - t0)
                print(f"round {rnd + 1}: {method} x{r}: {statistics.median(timed[method, r][-(args.steps - 2):]):.3f} "
                      f"s per step", flush=True)
    for method in args.methods:
        rows = {}
        for r in args.runs:
            step_s = statistics.median(timed[method, r])  # over every round's timed steps
            rows[r] = {"queries_per_step": queries[method, r], "s_per_step": step_s, "s_per_run_step": step_s / r,
                       "timed_steps": len(timed[method, r]), "total_s": sum(totals[method, r])}
        one = rows.get(1)
        for r, row in rows.items():
            row["per_run_step_vs_one_run"] = row["s_per_run_step"] / one["s_per_run_step"] if one else None
        res["methods"][method] = rows
    if args.project:
        res["projection"] = project(Path(args.project), res)
    write_json(args.out, res)  # atomic, creating the folder
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

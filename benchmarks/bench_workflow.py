"""The whole workflow under several configs, side by side in one run: each from scratch in its own temporary working
directory, interleaved (A, B, A, B, ...), on the same machine. Reports each run's wall clock of ``snakemake``, its
job-seconds (the rules' ``benchmark:`` files) per rule and, for training, per method and run.

    python benchmarks/bench_workflow.py [--variant LABEL=OVERLAY[+OVERLAY...] ...] [--rounds 1] [--cores 2]
        [--target all] [--limit-min 20]

Each variant is config/config.yaml with its overlays laid over it (``LABEL=`` alone: the default config). The default
variants are the speed issue's comparison: ``before`` (config/adaptive.yaml: the default design until the default
went to 50 training steps without the adaptive beta's 20 runs) and ``default``. ``--limit-min`` records whether each
variant's wall clock stayed within that many minutes. Results: results/benchmarks/workflow.json (or --out).
``benchmarks/bench_fork_server.py`` runs its two variants (fork server off and on) through :func:`run_workflow`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from rocm_rlhf import runs  # noqa: E402  (torch-free: --help stays fast)

DEFAULT_VARIANTS = ["before=config/adaptive.yaml", "default="]


def run_workflow(label: str, overlays: list[str], target: str = "all", cores: int = 2,
                 config: list[str] | None = None) -> dict:
    """``snakemake <target>`` from scratch in a new temporary folder with config/config.yaml and ``overlays``
    (``config``: ``--config`` items): its wall clock, job-seconds per rule (the ``benchmark:`` files) and per
    training method, and the folders it wrote (kept: the caller removes them)."""
    wd = Path(tempfile.mkdtemp(prefix=f"bench-wf-{label}-"))
    configs = [str(REPO / "config" / "config.yaml")] + [str(Path(o).resolve()) for o in overlays]
    cmd = [sys.executable, "-m", "snakemake", target, "--snakefile", str(REPO / "Snakefile"), "--directory", str(wd),
           "--cores", str(cores), "--configfile", *configs] + (["--config", *config] if config else [])
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    wall = time.time() - t0
    if res.returncode != 0:
        raise SystemExit(f"snakemake failed ({label}) in {wd}:\n{res.stderr[-4000:]}")
    results = next((p.parent for p in wd.glob("results/**/benchmarks") if p.is_dir()), wd / "results")
    per_rule: dict[str, list[float]] = defaultdict(list)
    per_method: dict[str, list[float]] = defaultdict(list)
    for tsv in (results / "benchmarks").rglob("*.tsv"):
        rule = tsv.parent.name if tsv.parent.name != "benchmarks" else tsv.stem
        seconds = float(tsv.read_text().splitlines()[1].split("\t")[0])
        per_rule[rule].append(seconds)
        if rule == "train":
            per_method[runs.parse_run(tsv.stem).method].append(seconds)
    return {"label": label, "overlays": overlays, "config": config or [], "wall_s": round(wall, 1),
            "workdir": str(wd), "results": str(results),
            "job_seconds": round(sum(sum(v) for v in per_rule.values()), 1),
            "rules": {r: {"jobs": len(v), "seconds": round(sum(v), 1), "median": round(statistics.median(v), 2)}
                      for r, v in sorted(per_rule.items())},
            "training": {m: {"runs": len(v), "seconds": round(sum(v), 1), "median": round(statistics.median(v), 1)}
                         for m, v in sorted(per_method.items())}}


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``LABEL=OVERLAY[+OVERLAY...]`` -> (label, overlays); every overlay must exist."""
    label, sep, rest = text.partition("=")
    if not sep or not re.fullmatch(r"[\w.-]+", label):
        raise SystemExit(f"--variant {text!r}: write LABEL=OVERLAY[+OVERLAY...] (LABEL= alone: the default config)")
    overlays = [o for o in rest.split("+") if o]
    missing = [o for o in overlays if not Path(o).resolve().is_file()]
    if missing:
        raise SystemExit(f"--variant {text!r}: no such config file {missing[0]!r}")
    return label, overlays


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", help="LABEL=OVERLAY[+OVERLAY...]; repeat (default: "
                    + ", ".join(DEFAULT_VARIANTS) + ")")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of all variants, interleaved")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--target", default="all")
    ap.add_argument("--limit-min", type=float, default=20.0, help="the wall-clock target each variant is checked "
                    "against")
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "workflow.json"))
    ap.add_argument("--keep", action="store_true", help="keep the working directories")
    args = ap.parse_args(argv)
    os.chdir(REPO)  # overlays are paths relative to the repository
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]  # every one checked before any run
    runs = []
    for _ in range(args.rounds):
        for label, overlays in variants:
            runs.append(run_workflow(label, overlays, args.target, args.cores))
            print(json.dumps({k: runs[-1][k] for k in ("label", "wall_s", "job_seconds")}), flush=True)
    summary = {}
    for label, _ in variants:
        mine = [r for r in runs if r["label"] == label]
        wall = statistics.median(r["wall_s"] for r in mine)
        summary[label] = {"wall_s": [r["wall_s"] for r in mine], "job_seconds": [r["job_seconds"] for r in mine],
                          "within_limit": all(r["wall_s"] <= 60 * args.limit_min for r in mine),
                          "wall_ratio_to_first": round(wall / statistics.median(
                              r["wall_s"] for r in runs if r["label"] == variants[0][0]), 3)}
    out = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                       "python": platform.python_version()},
           "target": args.target, "cores": args.cores, "limit_min": args.limit_min, "summary": summary, "runs": runs}
    from rocm_rlhf.infra.utils import write_json

    write_json(args.out, out)  # atomic, creating the folder
    if not args.keep:
        for r in runs:
            shutil.rmtree(r["workdir"], ignore_errors=True)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The whole workflow with and without the fork server (config key ``fork_server``, rocm_rlhf.infra.forkserver),
side by side in one run: each variant from scratch in its own temporary working directory, interleaved (off, on,
off, on, ...), on the same machine. Reports the wall clock of ``snakemake``, the job-seconds of every rule (the
rules' ``benchmark:`` files) and whether the two variants computed the same adapters, images and scores.

    python benchmarks/bench_fork_server.py [--overlay config/ci.yaml] [--rounds 1] [--cores 2] [--target all]

``--overlay`` is laid over config/config.yaml (``--overlay none``: the default config itself, the full default run,
about half an hour per variant here). Results: results/benchmarks/fork_server.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_workflow import run_workflow  # noqa: E402


def run_variant(fork_server: bool, overlay: str | None, target: str, cores: int) -> dict:
    """One run of the whole workflow from scratch with the fork server on or off (bench_workflow.run_workflow)."""
    res = run_workflow("on" if fork_server else "off", [overlay] if overlay else [], target, cores,
                       config=[f"fork_server={fork_server}"])
    return {"fork_server": fork_server, **{k: v for k, v in res.items() if k not in ("label", "overlays", "config")}}


def same_outputs(a: Path, b: Path) -> dict:
    """Adapters (tensors), images (arrays) and score tables (bytes) of two finished runs: which differ."""
    import numpy as np
    from safetensors.torch import load_file

    differ, checked = [], 0
    for f in sorted(a.rglob("pytorch_lora_weights.safetensors")):
        x, y = load_file(f), load_file(b / f.relative_to(a))
        checked += 1
        if x.keys() != y.keys() or any(not x[k].equal(y[k]) for k in x):
            differ.append(str(f.relative_to(a)))
    for f in sorted(a.rglob("images.npz")):
        x, y = np.load(f), np.load(b / f.relative_to(a))
        checked += 1
        if x.files != y.files or any(not np.array_equal(x[k], y[k]) for k in x.files):
            differ.append(str(f.relative_to(a)))
    for f in sorted((a / "scores").rglob("*.csv")):
        checked += 1
        if f.read_bytes() != (b / f.relative_to(a)).read_bytes():
            differ.append(str(f.relative_to(a)))
    return {"files_compared": checked, "differ": differ}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--overlay", default=str(REPO / "config" / "ci.yaml"),
                    help="config laid over config/config.yaml; 'none' for the default config alone")
    ap.add_argument("--rounds", type=int, default=1, help="pairs of runs (off, on), interleaved")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--target", default="all")
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "fork_server.json"))
    ap.add_argument("--keep", action="store_true", help="keep the working directories")
    args = ap.parse_args(argv)
    overlay = None if args.overlay == "none" else args.overlay
    runs = []
    for _ in range(args.rounds):
        for fs in (False, True):
            runs.append(run_variant(fs, overlay, args.target, args.cores))
            print(json.dumps({k: runs[-1][k] for k in ("fork_server", "wall_s", "job_seconds")}), flush=True)
    off = [r for r in runs if not r["fork_server"]]
    on = [r for r in runs if r["fork_server"]]
    out = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "overlay": overlay, "target": args.target, "cores": args.cores, "runs": runs,
        "wall_ratio_on_off": round(statistics.median(r["wall_s"] for r in on)
                                   / statistics.median(r["wall_s"] for r in off), 3),
        "job_seconds_ratio_on_off": round(statistics.median(r["job_seconds"] for r in on)
                                          / statistics.median(r["job_seconds"] for r in off), 3),
        "same_outputs": same_outputs(Path(off[0]["results"]), Path(on[0]["results"])),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    if not args.keep:
        for r in runs:
            shutil.rmtree(r["workdir"], ignore_errors=True)
    print(json.dumps({k: out[k] for k in ("wall_ratio_on_off", "job_seconds_ratio_on_off", "same_outputs")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

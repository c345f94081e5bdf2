"""Where a finished workflow run's job-seconds went: for every job with a ``benchmark:`` file and a log, the job's
wall clock (Snakemake's benchmark), the stage's own time (its log's "finished in" line: from the stage's start to its
end, imports made inside the stage included) and the difference, which is what the job paid outside its stage: the
process's start, Snakemake's script preamble, and (with the fork server) the hand-over to it.

    python benchmarks/job_overhead.py [--results results] [--logs logs] [--out results/benchmarks/job_overhead.json]

Without the fork server a stage's time includes the imports of torch, diffusers and the rest (they are imported inside
the stage functions), so this difference is only part of the fixed cost there; with it, the imports are in the server
and the difference plus the stage's model loading is the fixed cost. Nothing is rerun: it reads the files.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

FINISHED = re.compile(r"\] (\w+) finished in ([0-9.]+) s")


def job_times(results: Path, logs: Path) -> list[dict]:
    """One row per job that has both a benchmark file and a log with its stage's "finished" line."""
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        rel = tsv.relative_to(results / "benchmarks").with_suffix(".log")
        log = logs / rel
        if not log.exists():
            continue
        done = FINISHED.findall(log.read_text(errors="replace"))
        if not done:
            continue
        job_s = float(tsv.read_text().splitlines()[1].split("\t")[0])
        stage_s = float(done[-1][1])  # the last run of the job (a log is appended to by reruns)
        group = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        rows.append({"job": str(rel.with_suffix("")), "group": group, "job_s": job_s, "stage_s": stage_s,
                     "outside_s": round(job_s - stage_s, 3)})
    return rows


def summarise(rows: list[dict]) -> dict:
    by = defaultdict(list)
    for r in rows:
        by[r["group"]].append(r)
    out = {g: {"jobs": len(v), "job_s": round(sum(r["job_s"] for r in v), 1),
               "stage_s": round(sum(r["stage_s"] for r in v), 1),
               "outside_s": round(sum(r["outside_s"] for r in v), 1),
               "outside_median_s": round(statistics.median(r["outside_s"] for r in v), 2)}
           for g, v in sorted(by.items())}
    total_job = sum(r["job_s"] for r in rows)
    total_out = sum(r["outside_s"] for r in rows)
    out["all"] = {"jobs": len(rows), "job_s": round(total_job, 1), "outside_s": round(total_out, 1),
                  "outside_share": round(total_out / total_job, 4) if total_job else None}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--logs", default="logs")
    ap.add_argument("--out", default="results/benchmarks/job_overhead.json")
    args = ap.parse_args(argv)
    rows = job_times(Path(args.results), Path(args.logs))
    if not rows:
        print(f"no job with a benchmark file under {args.results}/benchmarks and a log under {args.logs}",
              file=sys.stderr)
        return 2
    summary = summarise(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "jobs": rows}, indent=2))
    for g, s in summary.items():
        print(g, json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())

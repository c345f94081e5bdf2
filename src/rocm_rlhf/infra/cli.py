"""Command line: run one pipeline stage outside Snakemake (for debugging), or validate a config.

    rocm-rlhf validate config/config.yaml [config/ci.yaml ...]
    rocm-rlhf stage sandbox_vae --config config/config.yaml --output model=/tmp/vae stats=/tmp/vae.json
    rocm-rlhf stage train --config config/config.yaml --input prompts=results/prompts/train.csv \\
        reward=results/models/sandbox/rewards/proxy_pick --output run_json=/tmp/run/run.json \\
        --wildcard run=rocm-kl-b1-s0 --param model_id=results/models/sandbox/lcm
    rocm-rlhf study-serve [--study results/study/design] [--db results/study/answers.sqlite] [--port 8000]
"""

from __future__ import annotations

import argparse
import json
import sys


def _pairs(items):
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"expected key=value, got '{item}'")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def main(argv=None) -> int:
    from .config import ConfigError, load_config
    from .jobs import make_job, run_stage

    ap = argparse.ArgumentParser(prog="rocm-rlhf", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="validate config files (merged in order) and print the resolved config")
    v.add_argument("configs", nargs="+")
    s = sub.add_parser("stage", help="run one stage of rocm_rlhf.pipeline")
    s.add_argument("name")
    s.add_argument("--config", nargs="+", default=["config/config.yaml"])
    for opt in ("input", "output", "wildcard", "param"):
        s.add_argument(f"--{opt}", nargs="*", default=[])
    s.add_argument("--log", default=None)
    s.add_argument("--threads", type=int, default=1)
    w = sub.add_parser("study-serve", help="serve the preference study's web app on this machine (Ctrl-C stops)")
    w.add_argument("--study", default="results/study/design", help="the study folder (`snakemake study` builds it)")
    w.add_argument("--db", default="results/study/answers.sqlite",
                   help="the SQLite file of the answers (config study.database), created if absent")
    w.add_argument("--host", default="127.0.0.1", help="127.0.0.1: this machine only; 0.0.0.0: the local network")
    w.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)
    if args.cmd == "study-serve":
        from ..study.app import serve

        try:
            serve(args.study, args.db, host=args.host, port=args.port)
        except (FileNotFoundError, ValueError) as err:
            print(err, file=sys.stderr)
            return 2
        return 0
    try:
        config = load_config(*(args.configs if args.cmd == "validate" else args.config))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if args.cmd == "validate":
        print(json.dumps(config, indent=2))
        return 0
    job = make_job(input=_pairs(args.input), output=_pairs(args.output), params=_pairs(args.param),
                   wildcards=_pairs(args.wildcard), config=config, log=[args.log] if args.log else [],
                   threads=args.threads)
    from ..pipeline import STAGES

    if args.name not in STAGES:
        print(f"unknown stage {args.name!r}; stages: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    run_stage(job, STAGES[args.name])
    return 0


if __name__ == "__main__":
    sys.exit(main())

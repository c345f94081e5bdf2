"""Would ``torch.compile`` make the sandbox's training steps cheaper? A ROCM step with the UNet eager and compiled.

The sandbox's UNet is small, so a CPU step pays much per-operation overhead; fusing operations (inductor) is the
usual cure. This benchmark times, in two fresh processes on the same machine one after the other, a ROCM step (KL
beta = 0.1, default batch 8, K = 4, the setup of ``bench_rocm_step``) with the UNet's forward eager and compiled
(``torch.compile``, inductor, static shapes): the first two steps (compilation included) and the median of the next
ones; the compiled process also times eager steps of the same model interleaved with its compiled ones, the ratio
to trust on a machine whose speed drifts. The pipeline's jobs are one process each, so a compilation is paid per training job unless inductor's on-disk
cache already holds it.

    python benchmarks/bench_compile.py [--lcm results/models/sandbox/lcm] [--batch 8] [--repeats 10] [--cold]

``--cold`` gives the compiled run an empty inductor cache (a fresh ``TORCHINDUCTOR_CACHE_DIR``), as a first job on a
fresh machine has; without it the run uses the default cache, warm if the benchmark ran before.

Needs a C++ compiler (inductor's CPU backend). Results: results/benchmarks/compile.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one(lcm: str, batch: int, repeats: int, compiled: bool) -> dict:
    """In this process: the first two steps' seconds and the median step after them; compiled, also eager steps of
    the same model interleaved with the compiled ones (the fair ratio on a machine whose speed drifts)."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_rocm_step import rocm_step_setup

    from rocm_rlhf.training.rocm import ROCM

    pipe, _, ctx, source, tmp = rocm_step_setup(lcm, batch, 4)
    eager_forward = pipe.unet.forward
    fast_forward = torch.compile(eager_forward, dynamic=False) if compiled else eager_forward
    pipe.unet.forward = fast_forward
    method = ROCM(divergence="kl", beta=0.1)
    t0 = time.perf_counter()
    for i in range(2):
        method.train_step(ctx, i + 1)
    first = time.perf_counter() - t0
    steps, eager = [], []
    for i in range(repeats):
        for forward, times in ((fast_forward, steps), (eager_forward, eager)) if compiled else ((fast_forward, steps),):
            pipe.unet.forward = forward
            t0 = time.perf_counter()
            method.train_step(ctx, 2 * i + 3)
            times.append(time.perf_counter() - t0)
    if tmp is not None:
        tmp.cleanup()
    out = {"first_two_steps_s": first, "step_s_median": statistics.median(steps), "model": source}
    if compiled:
        out["eager_step_s_median_interleaved"] = statistics.median(eager)
        out["compiled_over_eager_interleaved"] = out["step_s_median"] / out["eager_step_s_median_interleaved"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lcm", default=str(REPO / "results/models/sandbox/lcm"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--cold", action="store_true", help="an empty inductor cache for the compiled run")
    ap.add_argument("--out", default=str(REPO / "results/benchmarks/compile.json"))
    ap.add_argument("--one", choices=["eager", "compiled"], help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.lcm, args.batch, args.repeats, args.one == "compiled")))
        return 0
    import os
    import tempfile

    res = {"benchmark": "compile", "batch": args.batch, "sampler_steps": 4, "threads": 1, "repeats": args.repeats,
           "inductor_cache": "empty" if args.cold else "default (warm if run before)"}
    cache = tempfile.TemporaryDirectory() if args.cold else None
    env = {**os.environ, **({"TORCHINDUCTOR_CACHE_DIR": cache.name} if cache else {})}
    for kind in ("eager", "compiled"):  # fresh processes: nothing compiled or cached in memory is shared
        proc = subprocess.run([sys.executable, __file__, "--one", kind, "--lcm", args.lcm, "--batch", str(args.batch),
                               "--repeats", str(args.repeats)], capture_output=True, text=True, env=env)
        if proc.returncode:
            raise SystemExit(f"the {kind} run failed:\n{proc.stderr[-3000:]}")
        res[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    if cache is not None:
        cache.cleanup()
    res["compiled_over_eager_step"] = res["compiled"]["step_s_median"] / res["eager"]["step_s_median"]
    import torch

    res["machine"] = f"{platform.machine()} python {platform.python_version()} torch {torch.__version__}"
    from rocm_rlhf.infra.utils import write_json

    write_json(args.out, res)  # atomic, creating the folder
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

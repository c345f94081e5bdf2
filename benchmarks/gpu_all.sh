#!/usr/bin/env bash
# Every GPU measurement of the project in one short allocation (under 10 minutes on one recent GPU; waits for a GPU:
# none has been available to the project so far). Run from the repository root, in the project's environment:
#
#   bash benchmarks/gpu_all.sh [--out DIR] [--repeats N] [--skip-pipeline] [--skip-nccl]
#
#   1. bench_gpu_step.py at the paper's scale (LCM Dreamshaper v7 UNet, 512 px, 8 steps, batch 1, LoRA r 16, bf16),
#      with and without gradient checkpointing (and truncated to 4 steps), at beta 0 (no reference pass) and beta > 0
#   2. the paper-tiny config on CUDA (device: cuda), the whole pipeline, timed
#   3. the two-process NCCL path: one ROCM run of paper-tiny with train.num_processes 2 (accelerate, one GPU each);
#      needs two GPUs, else recorded as skipped
# Writes DIR/gpu_step_beta0.json, DIR/gpu_step_beta0.01.json, DIR/gpu_all.json (seconds per step, peak memory, fits
# in 24/48/80 GB per variant; the pipeline's and NCCL run's wall time and status) and DIR/*.log. DIR defaults to
# results/benchmarks/gpu_all. Fails at once, before any work, without a usable CUDA device.
set -euo pipefail

OUT=results/benchmarks/gpu_all
REPEATS=3
PIPELINE=1
NCCL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --repeats) REPEATS="${2:?--repeats needs a number}"; shift 2 ;;
    --skip-pipeline) PIPELINE=0; shift ;;
    --skip-nccl) NCCL=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_all.sh: unknown argument '$1' (see --help)" >&2; exit 64 ;;
  esac
done
case "$REPEATS" in ''|*[!0-9]*|0) echo "gpu_all.sh: --repeats must be a whole number >= 1, got '$REPEATS'" >&2; exit 64 ;; esac

PY=${PYTHON:-python}
NGPU=$("$PY" - <<'PY'
import sys
import torch
if torch.version.cuda is None or not torch.cuda.is_available():
    print(f"gpu_all.sh needs a usable CUDA device: torch {torch.__version__} "
          f"({'CUDA ' + torch.version.cuda if torch.version.cuda else 'a CPU-only build'}) sees none. Run it on a GPU "
          f"machine, in an environment with a CUDA build of torch", file=sys.stderr)
    sys.exit(3)
print(torch.cuda.device_count())
PY
) || exit 3

mkdir -p "$OUT"
T0=$(date +%s)
for BETA in 0 0.01; do
  "$PY" benchmarks/bench_gpu_step.py --require-cuda --beta "$BETA" --repeats "$REPEATS" \
    --out "$OUT/gpu_step_beta$BETA.json" 2>&1 | tee "$OUT/gpu_step_beta$BETA.log"
done

CONFIGS="config/paper.yaml config/paper-tiny.yaml"
PIPE_STATUS=skipped; PIPE_S=0
if [ "$PIPELINE" = 1 ]; then
  WD=$(mktemp -d); S=$(date +%s)
  if HF_HUB_OFFLINE=1 snakemake all --cores "$(nproc)" --resources gpu="$NGPU" --directory "$WD" \
      --snakefile "$PWD/Snakefile" --configfile $CONFIGS --config device=cuda name=paper-tiny-cuda \
      > "$OUT/paper_tiny_cuda.log" 2>&1; then PIPE_STATUS=ok; else PIPE_STATUS=failed; fi
  PIPE_S=$(( $(date +%s) - S ))
  cp "$WD"/paper_figures/paper-tiny-cuda/table1.md "$OUT/paper_tiny_cuda_table1.md" 2>/dev/null || true
fi

NCCL_STATUS=skipped; NCCL_S=0
if [ "$NCCL" = 1 ] && [ "$NGPU" -ge 2 ]; then
  WD=$(mktemp -d); S=$(date +%s)
  if HF_HUB_OFFLINE=1 snakemake results/paper-tiny-nccl/runs/rocm-kl-b0.01-s0/run.json --cores "$(nproc)" \
      --resources gpu=2 --directory "$WD" --snakefile "$PWD/Snakefile" --configfile $CONFIGS \
      --config device=cuda name=paper-tiny-nccl 'train={"num_processes": 2, "batch_size": 2}' \
      > "$OUT/nccl_two_processes.log" 2>&1 \
      && grep -q "multi_gpu" "$WD"/logs/paper-tiny-nccl/train/rocm-kl-b0.01-s0.log; then NCCL_STATUS=ok
  else NCCL_STATUS=failed; fi
  NCCL_S=$(( $(date +%s) - S ))
elif [ "$NCCL" = 1 ]; then
  NCCL_STATUS="skipped: $NGPU GPU (NCCL needs one device per process)"
fi

"$PY" - "$OUT" "$PIPE_STATUS" "$PIPE_S" "$NCCL_STATUS" "$NCCL_S" "$(( $(date +%s) - T0 ))" <<'PY'
import json, sys
from pathlib import Path
out, pipe, pipe_s, nccl, nccl_s, total = sys.argv[1:]
summary = {"step": {}, "paper_tiny_cuda": {"status": pipe, "wall_s": int(pipe_s)},
           "nccl_two_processes": {"status": nccl, "wall_s": int(nccl_s)}, "total_wall_s": int(total)}
for f in sorted(Path(out).glob("gpu_step_beta*.json")):
    res = json.loads(f.read_text())
    summary["device"] = res["device"]
    for name, v in res["variants"].items():
        summary["step"][f"beta={res['beta']:g} {name}"] = v
Path(out, "gpu_all.json").write_text(json.dumps(summary, indent=2) + "\n")
for k, v in summary["step"].items():
    print(f"{k:45s} {v.get('seconds_per_step', float('nan')):8.3f} s/step  {v.get('peak_gpu_memory_gib', float('nan')):6.1f} GiB"
          f"  24/48/80 GB: {v.get('fits_24gb')}/{v.get('fits_48gb')}/{v.get('fits_80gb')}  {v.get('error', '')}")
print("paper-tiny on CUDA:", pipe, pipe_s, "s;  NCCL two processes:", nccl, nccl_s, "s;  total", total, "s")
PY
[ "$PIPE_STATUS" != failed ] && [ "$NCCL_STATUS" != failed ]

#!/usr/bin/env bash
# Serving on a GPU: the llmops server (transformers backend, batched) on CUDA under 1, 8 and 32 concurrent
# clients; prints tokens/s, latency and time-to-first-token p50/p99, rows per decoding pass and peak GPU memory.
#
#   benchmarks/serve_gpu.sh                            # CUDA, ~2 minutes (SmolLM2's shapes, random weights)
#   benchmarks/serve_gpu.sh --levels 1 8 32 64 --tokens 256 --dtype bfloat16
#   benchmarks/serve_gpu.sh --device cpu --tiny        # smoke run without a GPU (under a minute)
#
# All the work is in benchmarks/serve_gpu.py (see its docstring); it checks its imports and CUDA first and
# exits 2 saying what is missing. Figures also go to benchmarks/out/serve_gpu.json.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
# under the 10 minutes one command may take on a lent GPU machine
exec timeout "${SERVE_GPU_TIMEOUT:-540}" "$PY" benchmarks/serve_gpu.py "$@"

#!/usr/bin/env bash
# Fine-tuning speed on a GPU: the llmops job against a minimal hand-written PEFT loop, on CUDA.
#
#   benchmarks/finetune_gpu.sh                      # CUDA, ~2 minutes: steps/s, tokens/s, peak GPU memory
#   benchmarks/finetune_gpu.sh --steps 60 --batch-size 16 --max-seq-len 1024
#   benchmarks/finetune_gpu.sh --device cpu --steps 3   # smoke run of the Python part without a GPU
#
# The model has SmolLM2-135M's shapes (hidden 576, 30 layers, 9 heads, 3 KV heads, vocabulary 49,152)
# with random weights: the SmolLM2 GGUF is too large to carry to a GPU machine, and speed depends on
# the shapes, not on the weights (quality figures come from the CPU run in the README). bf16 autocast
# where the GPU supports it. Each side runs in its own process, alternating over --rounds; the figures
# are printed as JSON (benchmarks/out/finetune.json) and summarised on the last lines.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi

device=cuda
for ((i = 1; i <= $#; i++)); do
  if [[ "${!i}" == "--device" ]]; then j=$((i + 1)); device=${!j:-cuda}; fi
done

missing=$("$PY" - <<'EOF'
import importlib.util
need = ["torch", "transformers", "peft", "safetensors", "tokenizers", "sqlalchemy", "alembic", "pydantic",
        "yaml", "typer", "tqdm", "llmops"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
EOF
)
if [[ -n "$missing" ]]; then
  echo "error: $PY lacks: $missing; install llmops with its dependencies (pip install -e .) first" >&2
  exit 2
fi

if [[ "$device" != "cpu" ]]; then
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "error: no CUDA device: torch.cuda.is_available() is False on this machine (torch $("$PY" -c 'import torch; print(torch.__version__)'))." >&2
    echo "       This benchmark needs an NVIDIA GPU; for a CPU smoke run: benchmarks/finetune_gpu.sh --device cpu --steps 3" >&2
    exit 2
  fi
  "$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")'
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
out=benchmarks/out/finetune_gpu.json
# under 5 minutes on one GPU: 2 rounds x 2 processes, each loading the model and training --steps steps
timeout 300 "$PY" benchmarks/finetune.py --model smollm2-config --device "$device" --steps 40 --batch-size 8 \
  --max-seq-len 512 --rounds 2 --out "$out" "$@" > /dev/null
"$PY" - "$out" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"device {r['device']} ({r['gpu'] or r['cpu']}), model {r['model']['model']} "
      f"({r['model']['num_hidden_layers']} layers, hidden {r['model']['hidden_size']}), {r['steps']} steps "
      f"x batch {r['batch_size']} x <= {r['max_seq_len']} tokens, {r['rounds']} rounds")
for kind in ("hand", "job"):
    m = r["median"][kind]
    gpu = f", peak GPU memory {m['peak_gpu_mib']:.0f} MiB" if m.get("peak_gpu_mib") else ""
    print(f"{kind:>5}: {1 / m['seconds_per_step']:.2f} steps/s, {m['tokens_per_s']:,.0f} tokens/s, "
          f"peak RSS {m['peak_rss_mib']:.0f} MiB{gpu}")
print(f"job / hand-written: {r['job_over_hand']:.3f} s per step ({r['overhead_pct']:+.1f}%)")
EOF

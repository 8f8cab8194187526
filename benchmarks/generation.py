"""SmolLM2-135M-Instruct on the transformers backend: load time and greedy tokens/s on this CPU.

    .venv/bin/python benchmarks/generation.py [--tokens 64] [--threads 1 2] [--batch 4]

Prints one line per figure. Figures depend on the machine and on what else runs on it
(the load average is printed too): with 2 cores shared with other work, OpenMP threads that
wait for each other can make 2 threads far slower than 1, so both are measured.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]
QUESTIONS = [
    "What is the capital of France?",
    "Give three tips for staying healthy.",
    "Explain what a neural network is.",
    "Write a haiku about the sea.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="max new tokens per generation")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to try")
    parser.add_argument("--batch", type=int, default=4, help="rows for the batched run")
    args = parser.parse_args()

    started = time.perf_counter()
    import torch

    from llmops.models import Request, load_backend

    import_s = time.perf_counter() - started
    print(f"cpu cores: {os.cpu_count()}  load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"import torch + llmops.models: {import_s:.1f} s")

    started = time.perf_counter()
    backend = load_backend("smollm2")
    print(f"SmolLM2 load (GGUF de-quantize + tokenizer, incl. transformers import): "
          f"{time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    load_backend("smollm2")
    print(f"SmolLM2 second load in the same process (cached): {time.perf_counter() - started:.3f} s")

    for threads in args.threads:
        torch.set_num_threads(threads)
        backend.chat(STORY, max_tokens=4)  # warm-up
        started = time.perf_counter()
        gen = backend.chat(STORY, max_tokens=args.tokens)
        elapsed = time.perf_counter() - started
        print(f"greedy, {threads} thread(s): {gen.completion_tokens} tokens in {elapsed:.2f} s = "
              f"{gen.completion_tokens / elapsed:.1f} tokens/s (prompt {gen.prompt_tokens} tokens)")

        stream = backend.stream_chat(STORY, max_tokens=args.tokens)
        started = time.perf_counter()
        next(stream)
        first = time.perf_counter() - started
        for _ in stream:
            pass
        print(f"streaming, {threads} thread(s): first delta after {first:.2f} s")

        requests = [Request.chat([{"role": "user", "content": q}], max_tokens=args.tokens)
                    for q in (QUESTIONS * args.batch)[: args.batch]]
        started = time.perf_counter()
        one_by_one = [backend.generate(r) for r in requests]
        sequential = time.perf_counter() - started
        started = time.perf_counter()
        batched = backend.batch(requests)
        together = time.perf_counter() - started
        tokens = sum(g.completion_tokens for g in batched)
        same = sum(a.text == b.text for a, b in zip(one_by_one, batched))
        print(f"{len(requests)} requests, {threads} thread(s): one by one {tokens / sequential:.1f} tokens/s, "
              f"batched {tokens / together:.1f} tokens/s ({same}/{len(requests)} texts identical)")


if __name__ == "__main__":
    main()

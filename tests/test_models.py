"""Generation backends: the protocol, the transformers backend on a tiny local Llama, LoRA adapters,
fingerprints, the LangChain chat model and the OpenAI-compatible client (against a real local HTTP
server). Tests marked `integration` load the real SmolLM2-135M-Instruct GGUF once."""

from __future__ import annotations

import importlib.util
import os
import json
import random
import re
import shutil
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

import llmops.models as models
from llmops.errors import BackendError, SpecError
from llmops.models import Generation, GenerationParams, Request, fingerprint, load_backend, model_spec
from llmops.models.stops import cut_at_stop, emittable
from model_support import CHAT_TEMPLATE, make_adapter

CHAT = [{"role": "user", "content": "Hello there, how are you?"}]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def adapter_dir(tiny_llm_dir, tmp_path_factory) -> Path:
    return make_adapter(tiny_llm_dir, tmp_path_factory.mktemp("adapter") / "qa-lora")


def _word(text: str, index: int = 1) -> str:
    """The index-th run of 3+ lowercase letters in `text`, a stop string that cannot match a partial character."""
    runs = re.findall(r"[a-z]{3,}", text)
    assert len(runs) > index, f"the tiny model's output has too few words to pick a stop string: {text!r}"
    return runs[index]


# -- protocol values -------------------------------------------------------------------------


def test_params_default_to_greedy_and_forbid_unknown_keys():
    params = GenerationParams()
    assert params.greedy and params.temperature == 0.0 and params.stop == () and params.seed is None
    assert GenerationParams(max_new_tokens=7).max_tokens == 7
    assert GenerationParams(stop="\n").stop == ("\n",)
    with pytest.raises(ValidationError, match="temprature"):
        GenerationParams(temprature=0.5)
    with pytest.raises(ValidationError, match="empty stop string"):
        GenerationParams(stop=["x", ""])
    with pytest.raises(ValidationError) as info:
        GenerationParams(max_tokens=0)
    assert info.value.errors()[0]["loc"] == ("max_tokens",)
    assert info.value.errors()[0]["msg"] == "Input should be greater than or equal to 1"


def test_request_is_a_chat_or_a_completion():
    assert Request.chat(CHAT).messages[0].role == "user"
    assert Request.completion("hi", max_tokens=3).params.max_tokens == 3
    with pytest.raises(ValidationError, match="not both or neither"):
        Request(messages=tuple(CHAT), prompt="x")
    with pytest.raises(ValidationError, match="not both or neither"):
        Request()
    with pytest.raises(ValidationError, match="is empty"):
        Request(messages=())
    with pytest.raises(ValidationError) as info:
        Request.chat([{"role": "robot", "content": "x"}])
    assert info.value.errors()[0]["loc"] == ("messages", 0, "role")


def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("a END b STOP c", ["STOP", "END"]) == ("a ", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)
    assert cut_at_stop("abc", []) == ("abc", False)


def test_emittable_holds_back_what_may_still_change():
    assert emittable("Paris.\n", ["\nQ:"]) == "Paris."
    assert emittable("Paris.\nQ", ["\nQ:"]) == "Paris."
    assert emittable("Paris.\nA", ["\nQ:"]) == "Paris.\nA"
    assert emittable("caf\ufffd", []) == "caf"
    assert emittable("abc", ["abcd", "c"]) == ""
    assert emittable("xab", ["abcd"]) == "x"


# -- the transformers backend on a tiny model -------------------------------------------------


def test_greedy_is_deterministic(tiny_llm):
    first = tiny_llm.chat(CHAT, max_tokens=20)
    assert first == tiny_llm.chat(CHAT, max_tokens=20)
    assert first.text and first.model == "tiny-llama"
    assert tiny_llm.complete("abc def", max_tokens=20) == tiny_llm.complete("abc def", max_tokens=20)


def test_max_tokens_is_honoured(tiny_llm):
    for n in (1, 5, 17):
        gen = tiny_llm.complete("abc def", max_tokens=n)
        assert gen.completion_tokens == n and gen.finish_reason == "length"
    longer = tiny_llm.complete("abc def", max_tokens=17)
    assert longer.text.startswith(tiny_llm.complete("abc def", max_tokens=5).text.rstrip("\ufffd"))


def test_token_counts_match_the_tokenizer(tiny_llm):
    tok = tiny_llm.tokenizer
    chat = tiny_llm.chat(CHAT, max_tokens=9)
    expected = "<|im_start|>user\nHello there, how are you?<|im_end|>\n<|im_start|>assistant\n"
    assert chat.prompt_tokens == len(tok(expected, add_special_tokens=False)["input_ids"])
    assert chat.completion_tokens == 9 and chat.total_tokens == chat.prompt_tokens + 9
    completion = tiny_llm.complete("abc def ghi", max_tokens=4)
    assert completion.prompt_tokens == len(tok("abc def ghi")["input_ids"])


def test_stop_strings_cut_the_text(tiny_llm):
    full = tiny_llm.chat(CHAT, max_tokens=40)
    stop = _word(full.text)
    cut = tiny_llm.chat(CHAT, max_tokens=40, stop=[stop, "never-produced"])
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop" and cut.completion_tokens < full.completion_tokens
    assert stop not in "".join(tiny_llm.stream_chat(CHAT, max_tokens=40, stop=[stop]))
    assert tiny_llm.chat(CHAT, max_tokens=40, stop=["never-produced"]) == full


def test_streaming_concatenates_to_the_generation(tiny_llm):
    for request in (Request.chat(CHAT, max_tokens=30), Request.completion("abc def", max_tokens=30),
                    Request.chat(CHAT, max_tokens=30, stop=[_word(tiny_llm.chat(CHAT, max_tokens=30).text, 2)])):
        stream = tiny_llm.stream(request)
        deltas = list(stream)
        assert len(deltas) > 1 and all(deltas)
        assert "".join(deltas) == stream.result.text
        assert stream.result == tiny_llm.generate(request)


def test_a_closed_stream_stops_and_has_no_result(tiny_llm):
    stream = tiny_llm.stream_chat(CHAT, max_tokens=30)
    next(stream)
    stream.close()
    assert list(stream) == []
    with pytest.raises(BackendError, match="has not finished"):
        stream.result


def test_batch_equals_individual_calls(tiny_llm):
    requests = [
        Request.chat(CHAT, max_tokens=12),
        Request.completion("abc", max_tokens=12),
        Request.chat([{"role": "system", "content": "Be brief."}, *CHAT], max_tokens=12),
        Request.completion("a much longer prompt with many more words in it", max_tokens=12),
        Request.completion("abc", max_tokens=5, stop=["zz"]),
        Request.chat(CHAT, max_tokens=12, temperature=0.9, seed=7),
        Request.completion("abc", max_tokens=12, temperature=0.9, seed=7),
    ]
    assert tiny_llm.batch(requests) == [tiny_llm.generate(r) for r in requests]
    assert tiny_llm.batch([]) == []


def test_seeded_sampling_is_reproducible(tiny_llm):
    a = tiny_llm.chat(CHAT, max_tokens=20, temperature=1.0, seed=3)
    assert a == tiny_llm.chat(CHAT, max_tokens=20, temperature=1.0, seed=3)
    assert a.text != tiny_llm.chat(CHAT, max_tokens=20, temperature=1.0, seed=4).text
    assert a.text != tiny_llm.chat(CHAT, max_tokens=20).text
    narrow = tiny_llm.chat(CHAT, max_tokens=20, temperature=1.0, top_p=1e-6, seed=5)
    assert narrow.text == tiny_llm.chat(CHAT, max_tokens=20).text  # top_p this small keeps only the argmax


def test_lora_adapter_changes_outputs_and_leaves_the_base_alone(tiny_llm, tiny_llm_dir, adapter_dir):
    before = tiny_llm.chat(CHAT, max_tokens=20)
    with warnings.catch_warnings(record=True) as caught:  # PEFT's use of a deprecated transformers API is ours to hide
        warnings.simplefilter("always")
        tuned = load_backend(str(tiny_llm_dir), adapter_path=adapter_dir)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    assert tuned.model_id == "tiny-llama+qa-lora"
    after = tuned.chat(CHAT, max_tokens=20)
    assert after.text != before.text
    assert after == tuned.chat(CHAT, max_tokens=20)
    assert tiny_llm.chat(CHAT, max_tokens=20) == before
    assert load_backend(str(tiny_llm_dir)).chat(CHAT, max_tokens=20) == before


def test_adapter_folder_without_config_is_refused(tiny_llm_dir, tmp_path):
    with pytest.raises(BackendError, match="adapter_config.json"):
        load_backend(str(tiny_llm_dir), adapter_path=tmp_path)


def test_chat_needs_a_chat_template(tiny_llm_dir, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_llm_dir, plain)
    (plain / "chat_template.jinja").unlink()
    backend = load_backend(str(plain))
    with pytest.raises(BackendError, match="no chat template"):
        backend.chat(CHAT)
    assert backend.complete("abc", max_tokens=3).completion_tokens == 3


def test_generation_stops_at_the_end_of_the_context_window(tiny_llm):
    with pytest.raises(BackendError, match="at most 512"):
        tiny_llm.complete("abc " * 600, max_tokens=3)
    words = 1
    while len(tiny_llm.encode(Request.completion("abc " * (words + 1)))) < 505:
        words += 1
    near_end = Request.completion("abc " * words, max_tokens=20)
    room = 512 - len(tiny_llm.encode(near_end))
    gen = tiny_llm.generate(near_end)
    assert 0 < room < 20 and gen.completion_tokens == room and gen.finish_reason == "length"
    short = Request.completion("abc", max_tokens=20)
    assert tiny_llm.batch([near_end, short]) == [gen, tiny_llm.generate(short)]


# -- dispatch --------------------------------------------------------------------------------


def test_load_backend_names_what_is_supported(tmp_path):
    with pytest.raises(BackendError, match="supported: 'smollm2'"):
        load_backend("no-such-model")
    with pytest.raises(BackendError, match="no config.json and no .gguf"):
        load_backend(str(tmp_path))
    with pytest.raises(SpecError, match="unknown backend 'tgi'"):
        load_backend({"backend": "tgi"})
    with pytest.raises(SpecError, match="souce"):
        load_backend({"backend": "transformers", "souce": "x"})


def test_load_backend_accepts_specs_and_backends(tiny_llm, tiny_llm_dir):
    assert load_backend(tiny_llm) is tiny_llm
    from_spec = load_backend({"backend": "transformers", "source": str(tiny_llm_dir)})
    assert from_spec.chat(CHAT, max_tokens=8) == tiny_llm.chat(CHAT, max_tokens=8)


def test_the_spec_names_the_device_and_a_wrong_one_is_refused(tiny_llm, tiny_llm_dir):
    import torch

    on_cpu = load_backend({"backend": "transformers", "source": str(tiny_llm_dir), "device": "cpu"})
    assert str(on_cpu.device) == "cpu"
    assert on_cpu.chat(CHAT, max_tokens=8) == tiny_llm.chat(CHAT, max_tokens=8)
    assert str(on_cpu.with_adapter(None).device) == "cpu"
    auto = load_backend({"backend": "transformers", "source": str(tiny_llm_dir), "device": "auto"})
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SpecError, match="device") as err:  # caught before any weights load
        load_backend({"backend": "transformers", "source": str(tiny_llm_dir), "device": "gpu0"})
    assert err.value.field == "device"
    from llmops.models.transformers_backend import TransformersBackend

    with pytest.raises(BackendError, match="unknown device 'tpu'.*'cpu', 'cuda', 'cuda:N' or 'auto'"):
        TransformersBackend(tiny_llm_dir, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="sees no CUDA GPU here; use device 'cpu' or 'auto'"):
            load_backend({"backend": "transformers", "source": str(tiny_llm_dir), "device": "cuda"})


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_explains_how_to_install_it():
    with pytest.raises(BackendError, match=r"pip install 'llmops\[vllm\]'"):
        load_backend("vllm:/models/any")
    with pytest.raises(BackendError, match=r"pip install 'llmops\[vllm\]'"):
        load_backend({"backend": "vllm", "model": "/models/any"})


def test_public_names_are_exactly_all():
    assert models.__all__ == [
        "Backend", "ChatMessage", "DEFAULT_MODEL", "Generation", "GenerationParams", "GenerationStream",
        "ModelFingerprint", "Request", "fingerprint", "load_backend", "model_spec",
    ]
    assert all(hasattr(models, name) for name in models.__all__)


# -- fingerprints and the registry -----------------------------------------------------------


def test_fingerprint_is_stable_and_tracks_template_changes(tiny_llm_dir, tmp_path):
    fp = fingerprint(tiny_llm_dir)
    assert fp == fingerprint(tiny_llm_dir) and len(fp.digest) == 64
    assert {"model.safetensors", "tokenizer.json", "chat_template.jinja", "config.json"} <= set(fp.files)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_llm_dir, copy)
    assert fingerprint(copy).digest == fp.digest  # content, not location
    (copy / "chat_template.jinja").write_text(CHAT_TEMPLATE + " ")
    assert fingerprint(copy).digest != fp.digest


def test_big_file_hashes_are_cached_by_size_and_mtime(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(random.Random(0).randbytes(2 << 20))
    cache_dir = tmp_path / "cache"
    first = fingerprint(gguf, cache_dir=cache_dir)
    assert first == fingerprint(gguf)  # the cache gives the same answer as hashing
    entries = json.loads((cache_dir / "sha256.json").read_text())
    (entry,) = entries.values()
    assert entry["sha256"] == first.files["m.gguf"] and entry["size"] == 2 << 20
    # A cached entry is trusted while size and mtime match...
    entry["sha256"] = "0" * 64
    (cache_dir / "sha256.json").write_text(json.dumps(entries))
    assert fingerprint(gguf, cache_dir=cache_dir).files["m.gguf"] == "0" * 64
    # ...and recomputed when the file changes.
    gguf.write_bytes(random.Random(1).randbytes(2 << 20))
    assert fingerprint(gguf, cache_dir=cache_dir).files["m.gguf"] == fingerprint(gguf).files["m.gguf"] != "0" * 64


def test_a_model_spec_pushed_as_an_asset_loads_back(ws, tiny_llm, tiny_llm_dir, tmp_path):
    spec = model_spec(tiny_llm_dir, cache_dir=tmp_path / "hashes")
    assert spec == {"backend": "transformers", "source": str(tiny_llm_dir.resolve()),
                    "fingerprint": fingerprint(tiny_llm_dir).digest}
    av = ws.registry.push("model", "tiny", spec=spec, message="tiny test model")
    again = ws.registry.push("model", "tiny", spec=model_spec(tiny_llm_dir))  # default: the per-user hash cache
    assert (again.version, again.outcome) == (av.version, "unchanged")  # unchanged files: same version
    assert load_backend(ws.registry.get("model/tiny")).chat(CHAT, max_tokens=8) == tiny_llm.chat(CHAT, max_tokens=8)

    moved = tmp_path / "moved"
    shutil.copytree(tiny_llm_dir, moved)
    spec = dict(av.spec, source=str(moved))
    (moved / "chat_template.jinja").write_text(CHAT_TEMPLATE + " ")
    with pytest.raises(BackendError, match="changed since the model was registered"):
        load_backend(spec)


# -- LangChain -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lc_chat(tiny_llm):
    from llmops.models.langchain_chat import LLMOpsChatModel

    return LLMOpsChatModel(backend=tiny_llm, max_tokens=16)


def test_langchain_invoke_carries_text_and_usage(lc_chat, tiny_llm):
    from langchain_core.messages import HumanMessage

    message = lc_chat.invoke([HumanMessage(CHAT[0]["content"])])
    expected = tiny_llm.chat(CHAT, max_tokens=16)
    assert message.content == expected.text
    assert message.usage_metadata == {"input_tokens": expected.prompt_tokens,
                                      "output_tokens": expected.completion_tokens,
                                      "total_tokens": expected.total_tokens}
    assert message.response_metadata["finish_reason"] == "length"
    assert lc_chat.invoke(CHAT[0]["content"]).content == expected.text  # a bare string is a human message


def test_langchain_stream_and_batch_match_invoke(lc_chat):
    whole = lc_chat.invoke(CHAT[0]["content"])
    chunks = list(lc_chat.stream(CHAT[0]["content"]))
    assert len(chunks) > 2
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.content == whole.content
    assert merged.usage_metadata == whole.usage_metadata
    prompts = [CHAT[0]["content"], "abc def", "ghi"]
    assert [m.content for m in lc_chat.batch(prompts)] == [lc_chat.invoke(p).content for p in prompts]


def test_langchain_stop_and_bound_params(lc_chat, tiny_llm):
    full = lc_chat.invoke(CHAT[0]["content"], max_tokens=30)
    stop = _word(full.content)
    assert lc_chat.invoke(CHAT[0]["content"], max_tokens=30, stop=[stop]).content == \
        full.content[: full.content.index(stop)]
    short = lc_chat.bind(max_tokens=3).invoke(CHAT[0]["content"])
    assert short.usage_metadata["output_tokens"] == 3
    assert lc_chat._identifying_params["model"] == "tiny-llama"
    with pytest.raises(ValidationError) as info:
        lc_chat.invoke(CHAT[0]["content"], temprature=1.0)
    assert info.value.errors()[0]["loc"] == ("temprature",)
    assert info.value.errors()[0]["type"] == "extra_forbidden"


def test_langchain_messages_map_to_roles(lc_chat, tiny_llm):
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    history = [SystemMessage("Be brief."), HumanMessage("hi"), AIMessage("hello"), HumanMessage("abc")]
    expected = tiny_llm.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "hello"}, {"role": "user", "content": "abc"}],
                         max_tokens=16)
    assert lc_chat.invoke(history).content == expected.text
    with pytest.raises(BackendError, match="ToolMessage"):
        lc_chat.invoke([ToolMessage("x", tool_call_id="1")])


# -- OpenAI-compatible client against a real local server ------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible server over the tiny backend (a test fixture, not llmops code)."""

    backend = None

    def log_message(self, *args):
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._json(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = self.path.endswith("/chat/completions")
        if body.get("model") != "tiny":
            return self._json(404, {"error": {"message": f"model {body.get('model')!r} not found"}})
        params = {k: body[k] for k in ("temperature", "top_p", "max_tokens", "stop", "seed") if k in body}
        request = Request.chat(body["messages"], **params) if chat else Request.completion(body["prompt"], **params)
        if not body.get("stream"):
            gen = self.backend.generate(request)
            choice = {"message": {"role": "assistant", "content": gen.text}} if chat else {"text": gen.text}
            return self._json(200, {"choices": [{"index": 0, "finish_reason": gen.finish_reason, **choice}],
                                    "usage": {"prompt_tokens": gen.prompt_tokens,
                                              "completion_tokens": gen.completion_tokens}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        stream = self.backend.stream(request)
        for delta in stream:
            choice = {"delta": {"content": delta}} if chat else {"text": delta}
            self.wfile.write(f"data: {json.dumps({'choices': [{'index': 0, **choice}]})}\n\n".encode())
        gen = stream.result
        last = {"choices": [{"index": 0, "finish_reason": gen.finish_reason, **({"delta": {}} if chat else {})}]}
        usage = {"choices": [], "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens}}
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture(scope="module")
def server_url(tiny_llm):
    handler = type("Handler", (_Handler,), {"backend": tiny_llm})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_backend_matches_the_model_behind_the_server(server_url, tiny_llm):
    remote = load_backend(server_url)  # no #model: the server's first model
    assert remote.model_id == "tiny"
    for request in (Request.chat(CHAT, max_tokens=12), Request.completion("abc def", max_tokens=12, stop=["zz"])):
        local = tiny_llm.generate(request)
        got = remote.generate(request)
        assert (got.text, got.prompt_tokens, got.completion_tokens, got.finish_reason) == \
            (local.text, local.prompt_tokens, local.completion_tokens, local.finish_reason)
        stream = remote.stream(request)
        assert "".join(stream) == local.text
        assert stream.result.completion_tokens == local.completion_tokens
        assert stream.result.finish_reason == local.finish_reason
    remote.close()


def test_openai_backend_reports_server_errors(server_url):
    wrong = load_backend(f"{server_url}#other")
    with pytest.raises(BackendError, match="404: model 'other' not found"):
        wrong.chat(CHAT)
    with pytest.raises(BackendError, match="404"):
        list(wrong.stream_chat(CHAT))
    with pytest.raises(BackendError, match="is the server running"):
        load_backend("http://127.0.0.1:9/v1#x").chat(CHAT)


# -- the real SmolLM2 (integration) ----------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    return load_backend("smollm2")


@pytest.mark.integration
def test_smollm2_answers_deterministically(smollm2):
    question = [{"role": "user", "content": "What is the capital of France?"}]
    answer = smollm2.chat(question, max_tokens=32)
    assert "Paris" in answer.text
    assert answer == smollm2.chat(question, max_tokens=32)
    assert answer.finish_reason == "stop" and answer.prompt_tokens > 20
    stream = smollm2.stream_chat(question, max_tokens=32)
    assert "".join(stream) == answer.text and stream.result == answer


@pytest.mark.integration
def test_smollm2_fingerprint_is_stable(smollm2, tmp_path):
    first = fingerprint("smollm2", cache_dir=tmp_path)
    assert first == fingerprint("smollm2", cache_dir=tmp_path) == fingerprint("smollm2")
    assert smollm2.fingerprint(cache_dir=tmp_path) == first
    assert list(first.files) == [smollm2.source.gguf_file]


@pytest.mark.integration
def test_smollm2_takes_a_peft_adapter_saved_from_it(smollm2, tmp_path):
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from llmops.models.transformers_backend import peft_quiet

    torch.manual_seed(0)
    with peft_quiet():
        peft_model = get_peft_model(copy.deepcopy(smollm2.model), LoraConfig(
            r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "lora")
    tuned = load_backend("smollm2", adapter_path=tmp_path / "lora")
    question = [{"role": "user", "content": "What is the capital of France?"}]
    assert tuned.chat(question, max_tokens=16).text != smollm2.chat(question, max_tokens=16).text


@pytest.mark.integration
def test_smollm2_dequantised_weights_are_cached_and_answer_the_same(tmp_path):
    import subprocess
    import sys

    script = (
        "import json; from llmops.models import load_backend; "
        "b = load_backend('smollm2'); "
        "print(json.dumps(b.chat([{'role': 'user', 'content': 'Name a colour.'}], max_tokens=8).text))"
    )
    env = {**os.environ, "LLMOPS_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    saved = list((tmp_path / "cache" / "models").glob("SmolLM2-*/model.safetensors"))
    second = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    assert len(saved) == 1  # the first process de-quantised the GGUF once and kept the result
    assert first.stdout.strip().splitlines()[-1] == second.stdout.strip().splitlines()[-1]

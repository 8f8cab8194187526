"""The vllm backend's supervisor, run against a second real llmops server standing where `vllm serve` stands
(vLLM cannot be installed here): export, start, health, adapter registration, forwarding, restart on crash."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import httpx
import pytest

from llmops.errors import BackendError
from llmops.models.vllm_server import VLLMSettings, VLLMSupervisor, adapter_problems, export_model, lora_name


def _wait(predicate, what: str, seconds: float = 180):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def standin_settings(upstream_root, **over) -> VLLMSettings:
    """`python -m llmops.cli serve` on another workspace, in vLLM's place (it has the same LoRA routes)."""
    return VLLMSettings(command=[sys.executable, "-m", "llmops.cli", "-w", str(upstream_root), "serve"],
                        args=["--host", "{host}", "--port", "{port}"], health_path="/healthz",
                        health_interval_s=0.3, backoff_s=0.2, startup_timeout_s=120, **over)


@pytest.fixture(scope="module")
def served(tiny_llm_dir, tmp_path_factory):
    """The workspace to serve (model/tiny, adapter/qa-lora v1 and v2) and a bare upstream workspace that
    knows only model/tiny: an adapter answers there only if the supervisor registered it."""
    import llmops
    from llmops.models import model_spec
    from support_serve import build_served_ws

    root = tmp_path_factory.mktemp("vllm")
    ws = build_served_ws(root, tiny_llm_dir)
    upstream = llmops.Workspace(root / "upstream")
    upstream.registry.push("model", "tiny", spec=model_spec(tiny_llm_dir))
    upstream.close()
    yield ws, root / "upstream"
    ws.close()


def test_adapter_problems_are_vllms_limits():
    s = VLLMSettings(max_lora_rank=8)
    ok = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    assert adapter_problems(ok, s) == []
    assert adapter_problems({**ok, "r": 16}, s) == [
        "LoRA rank 16 is greater than max_lora_rank 8 (start with max_lora_rank >= 16)"]
    assert adapter_problems({**ok, "target_modules": ["q_proj", "conv1d"]}, s)[0].startswith(
        "target modules ['conv1d'] are not among those vLLM adapts")
    assert adapter_problems({**ok, "use_dora": True, "modules_to_save": ["lm_head"]}, s) == [
        "vLLM does not yet support DoRA", "vLLM only supports modules_to_save being None"]
    with pytest.raises(ValueError, match="vLLM accepts --max-lora-rank 1, 8, 16"):
        VLLMSettings(max_lora_rank=12)


def test_the_command_is_vllms_by_default(served):
    ws, _ = served
    sup = VLLMSupervisor(ws, "tiny", VLLMSettings(port=8123, max_lora_rank=32, max_loras=2))
    sup._folder = export_model(ws, sup.model)
    assert sup.command == ["vllm", "serve", str(sup._folder), "--host", "127.0.0.1", "--port", "8123",
                           "--served-model-name", "tiny", "--enable-lora", "--max-lora-rank", "32", "--max-loras", "2"]
    # the export is a copy of the model's Hugging Face folder, made once per version
    assert (sup._folder / "config.json").is_file() and any(sup._folder.glob("*.safetensors"))
    assert export_model(ws, sup.model) == sup._folder
    sup._http.close()


def test_a_missing_or_failing_command_is_a_clear_error(served):
    ws, _ = served
    with pytest.raises(BackendError, match="cannot start 'no-such-vllm'.*install vLLM"):
        VLLMSupervisor(ws, "tiny", VLLMSettings(command=["no-such-vllm"])).start()
    failing = VLLMSettings(command=[sys.executable, "-c", "import sys; print('CUDA out of memory'); sys.exit(3)"],
                           args=[])
    with pytest.raises(BackendError, match="(?s)exited with status 3 while starting.*CUDA out of memory"):
        VLLMSupervisor(ws, "tiny", failing).start()


def test_supervised_upstream_gets_the_adapters_serves_them_and_comes_back_after_a_crash(served, tiny_llm_dir):
    from llmops.models import load_backend

    ws, upstream_root = served
    local = load_backend(str(tiny_llm_dir))
    question = [{"role": "user", "content": "abc de fgh"}]
    sup = VLLMSupervisor(ws, "tiny", standin_settings(upstream_root))
    try:
        base_url = sup.start()
        assert base_url == f"http://127.0.0.1:{sup.port}/v1" and sup.state == "healthy"
        v1, v2 = ws.registry.versions("adapter/qa-lora")
        assert sorted(sup.registered) == ["tiny:qa-lora@1", "tiny:qa-lora@2"]  # production (1) and latest (2)
        assert lora_name(sup.model, v1) == "tiny:qa-lora@1" and sup.refused == {}
        # the upstream holds them: loading a registered name again is refused as vLLM refuses it
        again = httpx.post(f"{base_url}/load_lora_adapter",
                           json={"lora_name": "tiny:qa-lora@1", "lora_path": sup.registered["tiny:qa-lora@1"]})
        assert again.status_code == 400 and "has already been loaded" in again.text

        # generation is forwarded through the openai backend, streamed or not, with the greedy answer
        backend = sup.backend()
        expected = local.chat(question, max_tokens=8).text
        assert backend.chat(question, max_tokens=8).text == expected
        stream = backend.stream_chat(question, max_tokens=8)
        deltas = list(stream)
        assert "".join(deltas) == expected and stream.result.completion_tokens > 0

        # an adapter answers under its registered name on an upstream that knows no adapter of its own
        adapted = load_backend(str(tiny_llm_dir), adapter_path=ws.adapter_dirs[2]).chat(question, max_tokens=8).text
        lora = sup.backend("tiny:qa-lora@2")
        assert lora.chat(question, max_tokens=8).text == adapted
        assert "".join(lora.stream_chat(question, max_tokens=8)) == adapted

        # a crash: the process is started again on the same port and the adapters registered again
        first_pid = sup.pid
        os.killpg(first_pid, signal.SIGKILL)
        _wait(lambda: sup.restarts == 1 and sup.state == "healthy", "the restart")
        assert sup.pid != first_pid and sorted(sup.registered) == ["tiny:qa-lora@1", "tiny:qa-lora@2"]
        assert backend.chat(question, max_tokens=8).text == expected
        assert lora.chat(question, max_tokens=8).text == adapted
        lora.close()
        again = httpx.post(f"{base_url}/load_lora_adapter",
                           json={"lora_name": "tiny:qa-lora@2", "lora_path": sup.registered["tiny:qa-lora@2"]})
        assert again.status_code == 400
        backend.close()
    finally:
        sup.close()
    assert sup.state == "stopped" and sup.pid is None
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{sup.port}/healthz", timeout=2)
    assert "serving" in sup.log_path.read_text()  # the process's output went to its log file


def test_an_adapter_over_the_rank_limit_is_not_registered(served):
    """Refused at the check: nothing listens on the supervisor's port, so a request would have raised."""
    ws, _ = served
    sup = VLLMSupervisor(ws, "tiny", VLLMSettings(max_lora_rank=1))
    assert sup.register_adapters() == {}
    assert set(sup.refused) == {"adapter/qa-lora@1", "adapter/qa-lora@2"}
    assert "LoRA rank 4 is greater than max_lora_rank 1" in sup.refused["adapter/qa-lora@1"]
    sup.close()


@pytest.mark.integration
def test_the_embedded_gguf_is_exported_as_the_de_quantised_folder(tmp_path):
    """vLLM reads safetensors: SmolLM2's GGUF is exported as the folder the transformers backend saved."""
    import llmops

    ws = llmops.Workspace(tmp_path / "w")
    sup = VLLMSupervisor(ws, "smollm2", VLLMSettings())
    folder = export_model(ws, sup.model)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names and not any(n.endswith(".gguf") for n in names)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    sup.close()
    ws.close()


def test_the_server_with_the_vllm_backend_forwards_to_its_supervised_process(served, tiny_llm_dir):
    """`llmops serve --backend vllm` as an app: the official client's adapter request reaches the supervised
    process under the registered name, and the front server records the run with the adapter version."""
    import openai

    from llmops.models import load_backend
    from support_serve import serve_ws

    ws, upstream_root = served
    s = standin_settings(upstream_root)
    vllm = {k: v for k, v in s.model_dump().items() if k in ("command", "args", "health_path", "startup_timeout_s")}
    expected = load_backend(str(tiny_llm_dir), adapter_path=ws.adapter_dirs[1]).chat(
        [{"role": "user", "content": "abc"}], max_tokens=6).text
    with serve_ws(ws, backend="vllm", vllm_model="tiny", vllm=vllm) as base:
        sup = base.server.vllm
        assert sup.state == "healthy" and "tiny:qa-lora@1" in sup.registered
        client = openai.OpenAI(base_url=base.v1, api_key="unused", max_retries=0)
        answer = client.chat.completions.create(model="tiny:qa-lora", messages=[{"role": "user", "content": "abc"}],
                                                max_tokens=6)
        assert answer.choices[0].message.content == expected  # production -> @1
        chunks = client.chat.completions.create(model="tiny:qa-lora", messages=[{"role": "user", "content": "abc"}],
                                                max_tokens=6, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
        base.app.state.tracer.flush()
        pid = sup.pid
    run = ws.get_run(answer.id.removeprefix("chatcmpl-"))
    assert run.params["adapter_ref"] == "adapter/qa-lora@1" and run.tags["response"] == expected
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the supervised process ended with the server

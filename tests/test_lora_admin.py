"""vLLM's runtime LoRA routes (/v1/load_lora_adapter, /v1/unload_lora_adapter), answered as vLLM answers."""

from __future__ import annotations

import json

import httpx
import pytest

from llmops.serve.lora_admin import LoraRegistry, read_lora_config, runtime_updates_allowed
from test_keys import serving


@pytest.fixture(scope="module")
def adapter_dir(tiny_llm_dir, tmp_path_factory):
    from support_serve import make_adapter

    return make_adapter(tiny_llm_dir, tmp_path_factory.mktemp("lora") / "qa-lora")


@pytest.fixture
def allowed(monkeypatch):
    monkeypatch.setenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")


def lora_app(ws, loras=None):
    from fastapi import FastAPI

    from llmops.serve.lora_admin import router

    app = FastAPI()
    app.state.ws, app.state.settings = ws, None
    if loras is not None:
        app.state.loras = loras
    app.include_router(router)
    return app


def test_load_and_unload_answer_as_vllm(ws, adapter_dir, allowed):
    loras = LoraRegistry()
    with serving(lora_app(ws, loras)) as url, httpx.Client(base_url=url) as http:
        ok = http.post("/v1/load_lora_adapter", json={"lora_name": "qa", "lora_path": str(adapter_dir)})
        assert (ok.status_code, ok.text) == (200, "Success: LoRA adapter 'qa' added successfully.")
        assert ok.headers["content-type"].startswith("text/plain")
        assert "qa" in loras and loras["qa"].rank == 4 and sorted(loras["qa"].target_modules) == ["q_proj", "v_proj"]

        again = http.post("/v1/load_lora_adapter", json={"lora_name": "qa", "lora_path": str(adapter_dir)})
        assert again.status_code == 400
        assert again.json()["error"] == {
            "message": "The lora adapter 'qa' has already been loaded. If you want to load the adapter in place, "
                       "set 'load_inplace' to True.", "type": "InvalidUserInput", "param": None, "code": 400}
        inplace = http.post("/v1/load_lora_adapter",
                            json={"lora_name": "qa", "lora_path": str(adapter_dir), "load_inplace": True})
        assert inplace.status_code == 200

        missing = http.post("/v1/load_lora_adapter", json={"lora_name": "qa2"})
        assert (missing.status_code, missing.json()["error"]["message"]) == (
            400, "Both 'lora_name' and 'lora_path' must be provided.")
        nowhere = http.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/no/such/dir"})
        assert nowhere.status_code == 404
        assert nowhere.json()["error"]["message"] == "Loading lora x failed: No adapter found for /no/such/dir"
        assert nowhere.json()["error"]["type"] == "NotFoundError"
        assert http.post("/v1/load_lora_adapter", content=b"{oops").status_code == 400

        gone = http.post("/v1/unload_lora_adapter", json={"lora_name": "qa"})
        assert (gone.status_code, gone.text) == (200, "Success: LoRA adapter 'qa' removed successfully.")
        assert "qa" not in loras
        unknown = http.post("/v1/unload_lora_adapter", json={"lora_name": "qa"})
        assert (unknown.status_code, unknown.json()["error"]["message"]) == (404, "The lora adapter 'qa' cannot be found.")
        assert http.post("/v1/unload_lora_adapter", json={}).json()["error"]["message"] == (
            "'lora_name' needs to be provided to unload a LoRA adapter.")


def test_adapters_vllm_cannot_load_are_refused(ws, adapter_dir, tmp_path, allowed):
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    dora = tmp_path / "dora"
    dora.mkdir()
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True, "modules_to_save": ["lm_head"]}))
    with serving(lora_app(ws)) as url:
        r = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "d", "lora_path": str(dora)})
    assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequestError"
    assert "vLLM only supports modules_to_save being None." in r.json()["error"]["message"]
    assert "vLLM does not yet support DoRA." in r.json()["error"]["message"]


def test_the_servers_own_check_can_refuse_an_adapter(ws, adapter_dir, allowed):
    def check(lora):
        if lora.rank > 2:
            raise ValueError(f"LoRA rank {lora.rank} is greater than max_lora_rank 2.")

    loras = LoraRegistry(check=check)
    with serving(lora_app(ws, loras)) as url:
        r = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "qa", "lora_path": str(adapter_dir)})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Loading lora qa failed: LoRA rank 4 is greater than max_lora_rank 2."
    assert "qa" not in loras


def test_the_routes_are_off_unless_runtime_updating_is_allowed(ws, adapter_dir, monkeypatch):
    monkeypatch.delenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", raising=False)
    assert not runtime_updates_allowed()
    with serving(lora_app(ws)) as url:
        r = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "qa", "lora_path": str(adapter_dir)})
    assert r.status_code == 404 and "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in r.json()["error"]["message"]
    assert runtime_updates_allowed({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1"})


def test_the_routes_need_an_admin_key_once_keys_exist(ws, adapter_dir, allowed):
    from llmops.serve.keys import create_key

    _, narrow = create_key(ws, "app", ["smollm2*"])
    _, admin = create_key(ws, "ops", ["*"])
    body = {"lora_name": "qa", "lora_path": str(adapter_dir)}
    with serving(lora_app(ws)) as url:
        assert httpx.post(f"{url}/v1/load_lora_adapter", json=body).status_code == 401
        assert httpx.post(f"{url}/v1/load_lora_adapter", json=body,
                          headers={"Authorization": f"Bearer {narrow}"}).status_code == 403
        assert httpx.post(f"{url}/v1/load_lora_adapter", json=body,
                          headers={"Authorization": f"Bearer {admin}"}).status_code == 200


def test_read_lora_config_names_what_is_wrong(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "PREFIX_TUNING"}')
    with pytest.raises(Exception, match="PREFIX_TUNING adapter, not LoRA"):
        read_lora_config(tmp_path)


def test_the_routes_of_the_server(tiny_llm_dir, tmp_path, adapter_dir, allowed):
    from support_serve import build_served_ws, serve_ws

    ws = build_served_ws(tmp_path, tiny_llm_dir)
    with serve_ws(ws) as base:
        ok = httpx.post(f"{base}/v1/load_lora_adapter", json={"lora_name": "qa", "lora_path": str(adapter_dir)})
        assert (ok.status_code, ok.text) == (200, "Success: LoRA adapter 'qa' added successfully.")
        assert "qa" in base.app.state.loras
        gone = httpx.post(f"{base}/v1/unload_lora_adapter", json={"lora_name": "nope"})
        assert gone.status_code == 404 and gone.json()["error"]["message"] == "The lora adapter 'nope' cannot be found."
        paths = httpx.get(f"{base}/openapi.json").json()["paths"]
        assert {"/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/v1/feedback"} <= set(paths)
    ws.close()

"""API keys: created once, stored hashed, required once one exists, limited to models or chains."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from fastapi import Request
from sqlalchemy import inspect, select, text

import llmops
from llmops import cli
from llmops.errors import InvalidValue, LLMOpsError
from llmops.errors import NotFound
from llmops.serve.keys import authenticate, covers, create_key, list_keys, require_key, revoke_key
from llmops.store import migrate
from llmops.store.schema import ApiKeyRow
from support_serve import serving


def keyed_app(ws, settings=None):
    """A small app whose routes are guarded the way the server's are."""
    from fastapi import Depends, FastAPI

    app = FastAPI()
    app.state.ws, app.state.settings = ws, settings

    @app.post("/v1/chat/completions", dependencies=[Depends(require_key("model"))])
    async def chat(request: Request):
        key = request.state.api_key
        return {"model": (await request.json())["model"], "key": key.name if key else None}

    @app.post("/v1/chains/{name}/invoke", dependencies=[Depends(require_key("chain"))])
    async def invoke(name: str):
        return {"chain": name}

    @app.get("/v1/models", dependencies=[Depends(require_key())])
    async def models():
        return {"data": []}

    return app


def test_a_key_is_stored_as_a_hash_and_its_secret_shown_once(store_ws):
    key, secret = create_key(store_ws, "bot", ["smollm2*"])
    assert secret.startswith("llmops-") and len(secret) > 40
    assert (key.name, key.scopes, key.active, key.prefix) == ("bot", ["smollm2*"], True, secret[:15])
    with store_ws.engine.connect() as conn:
        row = conn.execute(select(ApiKeyRow)).one()
    assert row.hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps([str(v) for v in row])  # only the hash and a prefix are kept
    assert [k.to_dict() for k in list_keys(store_ws)] == [key.to_dict()]
    assert "secret" not in key.to_dict()
    assert authenticate(store_ws.engine, secret) == key
    assert authenticate(store_ws.engine, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    revoke_key(store_ws, "bot")
    assert authenticate(store_ws.engine, secret) is None
    assert not list_keys(store_ws)[0].active


def test_key_names_and_scopes_are_checked(ws):
    create_key(ws, "bot")
    with pytest.raises(LLMOpsError, match="already exists"):
        create_key(ws, "bot")
    with pytest.raises(InvalidValue, match="is empty"):
        create_key(ws, "")
    with pytest.raises(InvalidValue, match="scope '' is empty"):
        create_key(ws, "other", [""])
    with pytest.raises(InvalidValue, match="printable"):
        create_key(ws, "x\x1b[2J")
    with pytest.raises(NotFound, match="no API key named 'ghost'"):
        revoke_key(ws, "ghost")
    revoke_key(ws, "bot")
    with pytest.raises(NotFound, match="already revoked"):
        revoke_key(ws, "bot")
    assert [k.name for k in list_keys(ws)] == ["bot"]


@pytest.mark.parametrize("scopes, name, ok", [
    (["*"], "anything", True),
    (["smollm2*"], "smollm2", True),
    (["smollm2*"], "smollm2:handbook-qa@3", True),
    (["smollm2"], "smollm2:handbook-qa", False),
    (["chain/rag-qa"], "chain/rag-qa@production", True),
    (["chain/rag-qa"], "chain/rag-qa-v2", False),
    (["chain/*"], "smollm2", False),
])
def test_scopes_are_fnmatch_patterns_over_names_without_their_ref(scopes, name, ok):
    assert covers(scopes, name) is ok


def test_the_server_needs_no_key_until_one_exists_then_checks_it(ws):
    with serving(keyed_app(ws)) as url, httpx.Client(base_url=url) as http:
        body = {"model": "smollm2", "messages": []}
        # no key exists: open, and a bearer an OpenAI client always sends is ignored
        assert http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer x"}).json() == {
            "model": "smollm2", "key": None}
        _, secret = create_key(ws, "bot", ["smollm2*", "chain/rag-qa"])
        _, other = create_key(ws, "evals", ["chain/*"])
        missing = http.post("/v1/chat/completions", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "llmops keys create" in missing.json()["detail"]
        assert http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        auth = {"Authorization": f"Bearer {secret}"}
        assert http.post("/v1/chat/completions", json=body, headers=auth).json() == {"model": "smollm2", "key": "bot"}
        ok = http.post("/v1/chat/completions", json={**body, "model": "smollm2:handbook-qa@2"}, headers=auth)
        assert ok.status_code == 200
        denied = http.post("/v1/chat/completions", json={**body, "model": "tiny"}, headers=auth)
        assert denied.status_code == 403 and "may not use 'tiny'" in denied.json()["detail"]
        assert http.post("/v1/chains/rag-qa/invoke", json={}, headers=auth).status_code == 200
        assert http.post("/v1/chains/other/invoke", json={}, headers=auth).status_code == 403
        assert http.post("/v1/chains/other/invoke", json={}, headers={"Authorization": f"Bearer {other}"}).status_code == 200
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {other}"}).status_code == 200
        revoke_key(ws, "bot")
        assert http.post("/v1/chat/completions", json=body, headers=auth).status_code == 401


def test_settings_can_require_keys_or_turn_them_off(ws):
    from types import SimpleNamespace

    with serving(keyed_app(ws, SimpleNamespace(api_keys_required=True))) as url:
        assert httpx.get(f"{url}/v1/models").status_code == 401  # required, though no key exists yet
    create_key(ws, "bot")
    with serving(keyed_app(ws, SimpleNamespace(api_keys_required=False))) as url:
        assert httpx.get(f"{url}/v1/models").status_code == 200


def test_keys_cli_creates_lists_and_revokes(tmp_path, capsys):
    w = str(tmp_path / "w")
    assert cli.run(["-w", w, "keys", "create", "bot", "--scope", "smollm2*", "--scope", "chain/rag-qa"]) == 0
    out = capsys.readouterr()
    secret = out.out.strip()
    assert secret.startswith("llmops-") and "shown only now" in out.err
    assert cli.run(["-w", w, "keys", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [{**listed[0], "name": "bot", "scopes": ["smollm2*", "chain/rag-qa"], "active": True}]
    assert secret not in json.dumps(listed) and listed[0]["prefix"] == secret[:15]
    assert cli.run(["-w", w, "keys", "list"]) == 0
    shown = capsys.readouterr().out
    assert "bot" in shown and "active" in shown and secret not in shown
    assert cli.run(["-w", w, "keys", "revoke", "bot"]) == 0
    assert cli.run(["-w", w, "keys", "revoke", "bot"]) == 2
    assert "already revoked" in capsys.readouterr().err
    assert cli.run(["-w", w, "keys", "create", "bot"]) == 2
    assert capsys.readouterr().err.startswith("error: an API key named 'bot' already exists")


def test_migration_0004_on_a_store_at_0003_keeps_its_runs(tmp_path, store_url):
    from llmops.store.engine import make_engine, sqlite_url

    home = tmp_path / "w" / ".llmops"
    home.mkdir(parents=True)
    engine = make_engine(store_url or sqlite_url(home / "store.db"))
    migrate.upgrade(engine, "0003")
    with engine.begin() as conn:
        assert not {"feedback", "api_keys"} & set(inspect(conn).get_table_names())
        conn.execute(text("INSERT INTO runs (id, name, kind, status, started_at, heartbeat_at, \"user\", host, pid) "
                          "VALUES ('0123456789abcdef0123456789abcdef', 'old', 'custom', 'finished', 0, 0, 'me', 'h', 1)"))
    engine.dispose()
    ws = llmops.Workspace(tmp_path / "w", store_url=store_url)
    assert migrate.current_revision(ws.engine) == "0004"
    insp = inspect(ws.engine)
    assert [c["name"] for c in insp.get_columns("feedback")] == [
        "id", "run_id", "score", "comment", "correction", "created_at", "user"]
    assert [c["name"] for c in insp.get_columns("api_keys")] == [
        "id", "name", "hash", "prefix", "scopes", "created_at", "revoked_at"]
    assert ws.get_run("0123456789abcdef0123456789abcdef").name == "old"
    create_key(ws, "bot")
    ws.close()


def test_keys_through_the_server_with_the_openai_client(tiny_llm_dir, tmp_path):
    """The official client sees 401 and 403 as its AuthenticationError and PermissionDeniedError."""
    import openai

    from support_serve import build_served_ws, serve_ws

    ws = build_served_ws(tmp_path, tiny_llm_dir)
    _, secret = create_key(ws, "bot", ["tiny"])
    messages = [{"role": "user", "content": "abc"}]
    with serve_ws(ws) as base:
        with pytest.raises(openai.AuthenticationError) as no_key:
            openai.OpenAI(base_url=base.v1, api_key="not-a-key", max_retries=0).chat.completions.create(
                model="tiny", messages=messages, max_tokens=2)
        assert no_key.value.body["type"] == "authentication_error"
        client = openai.OpenAI(base_url=base.v1, api_key=secret, max_retries=0)
        answer = client.chat.completions.create(model="tiny", messages=messages, max_tokens=2)
        with pytest.raises(openai.PermissionDeniedError, match="may not use 'tiny:qa-lora'"):
            client.chat.completions.create(model="tiny:qa-lora", messages=messages, max_tokens=2)
        base.app.state.tracer.flush()
    # the run records which key asked
    assert ws.get_run(answer.id).tags["api_key"] == "bot"
    ws.close()


def test_a_blank_store_gets_the_feedback_and_api_keys_tables(store_ws):
    insp = inspect(store_ws.engine)
    assert [c["name"] for c in insp.get_columns("api_keys")] == [
        "id", "name", "hash", "prefix", "scopes", "created_at", "revoked_at"]
    assert [c["name"] for c in insp.get_columns("feedback")] == [
        "id", "run_id", "score", "comment", "correction", "created_at", "user"]
    assert {fk["referred_table"] for fk in insp.get_foreign_keys("feedback")} == {"runs"}
    assert migrate.head_revision() == migrate.alembic_head_revision() == "0004"

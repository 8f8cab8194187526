"""The asset registry: content-addressed immutable versions, aliases with history, forks, diffs, lineage."""

import pytest

from llmops.errors import AliasNotFound, AssetNotFound, CorruptArtifact, InvalidAlias, InvalidRef


def test_push_numbers_versions_and_is_idempotent(store_ws):
    reg = store_ws.registry
    v1 = reg.push("prompt", "qa", {"template": "A {{q}}"}, message="first")
    again = reg.push("prompt", "qa", {"template": "A {{q}}"}, message="same content, other message")
    v2 = reg.push("prompt", "qa", {"template": "B {{q}}"})
    assert (v1.version, v2.version) == (1, 2)
    assert (v1.outcome, again.outcome, v2.outcome) == ("new", "unchanged", "new")
    assert again == v1 and again.message == "first"
    assert len(reg.versions("prompt/qa")) == 2
    assert v1.ref == "prompt/qa@1" and len(v1.digest) == 64
    # key order does not change the digest
    assert reg.push("chain", "c", {"a": 1, "b": 2}).digest == reg.push("chain", "c", {"b": 2, "a": 1}).digest


def test_pushing_an_older_content_again_is_a_revert_and_becomes_latest(store_ws):
    reg = store_ws.registry
    v1 = reg.push("prompt", "greet", {"template": "Hi"})
    v2 = reg.push("prompt", "greet", {"template": "Hello"})
    v3 = reg.push("prompt", "greet", {"template": "Hi"})
    assert (v3.version, v3.outcome, v3.same_as, v3.parent) == (3, "revert", 1, 2)
    assert v3.digest == v1.digest and v2.same_as is None
    assert reg.get("prompt/greet").version == 3 == reg.get("prompt/greet@latest").version
    assert reg.push("prompt", "greet", {"template": "Hi"}).outcome == "unchanged"
    assert [e.get("same_as") for e in reg.history("prompt/greet")] == [None, None, 1]
    assert reg.find("prompt", "greet", v1.digest).version == 1


def test_files_are_part_of_the_content(store_ws):
    reg = store_ws.registry
    a = reg.push("index", "h", {"dim": 3}, files={"index.faiss": b"one"})
    b = reg.push("index", "h", {"dim": 3}, files={"index.faiss": b"two"})
    assert (a.version, b.version) == (1, 2)
    assert reg.read_file(a, "index.faiss") == b"one"
    assert reg.file_path(b, "index.faiss").read_bytes() == b"two"
    with pytest.raises(AssetNotFound, match="no file 'missing'"):
        reg.read_file(a, "missing")


def test_corrupted_version_file_raises(store_ws):
    reg = store_ws.registry
    v = reg.push("dataset", "d", {}, files={"train.jsonl": b'{"a": 1}\n'})
    blob = reg.file_path(v, "train.jsonl")
    blob.chmod(0o644)
    blob.write_bytes(b'{"a": 2}\n')
    with pytest.raises(CorruptArtifact):
        reg.read_file(v, "train.jsonl")


def test_get_by_number_alias_latest(store_ws):
    reg = store_ws.registry
    for t in ("one", "two", "three"):
        reg.push("prompt", "qa", {"t": t})
    assert reg.get("prompt/qa").version == 3
    assert reg.get("prompt/qa@latest").version == 3
    assert reg.get("prompt/qa@2").spec == {"t": "two"}
    reg.set_alias("prompt/qa", "production", 1, reason="launch")
    assert reg.get("prompt/qa@production").version == 1
    reg.set_alias("prompt/qa", "production", 2, reason="better eval")
    assert reg.get("prompt/qa@production").version == 2
    assert reg.get("qa@production", kind="prompt").version == 2
    moves = [e for e in reg.history("prompt/qa") if e["event"] == "alias"]
    assert [(m["from"], m["to"], m["reason"]) for m in moves] == [(None, 1, "launch"), (1, 2, "better eval")]
    assert all(m["who"] for m in moves)
    assert reg.aliases("prompt/qa") == {"production": 2}


@pytest.mark.parametrize("alias", ["3", "latest", "1abc", "has space", ""])
def test_bad_alias_names_refused(store_ws, alias):
    store_ws.registry.push("prompt", "qa", {"t": 1})
    with pytest.raises(InvalidAlias):
        store_ws.registry.set_alias("prompt/qa", alias, 1)
    assert store_ws.registry.aliases("prompt/qa") == {}


def test_unknown_refs_and_aliases(store_ws):
    reg = store_ws.registry
    reg.push("prompt", "qa", {"t": 1})
    reg.set_alias("prompt/qa", "staging", 1)
    with pytest.raises(AliasNotFound, match=r"no alias 'production' \(aliases: staging\)"):
        reg.get("prompt/qa@production")
    with pytest.raises(AssetNotFound, match="no asset version 'prompt/nope'"):
        reg.get("prompt/nope")
    with pytest.raises(AssetNotFound):
        reg.get("prompt/qa@7")
    with pytest.raises(AssetNotFound):
        reg.set_alias("prompt/qa", "production", 9)
    for bad in ["qa", "prompt/", "/qa", "prompt/qa@", "Prompt/qa", "prompt/q a", "prompt/qa\n", "prompt/qä"]:
        with pytest.raises(InvalidRef, match="not an asset ref|names no kind|ends in '@'"):
            reg.get(bad)
    # non-ASCII digits and numbers past what the databases hold are refused, not looked up
    for bad in ["prompt/qa@²", "prompt/qa@99999999999999999999", "prompt/qa@0", "prompt/qa@2147483648"]:
        with pytest.raises(InvalidRef, match="not a version number"):
            reg.get(bad)
    with pytest.raises(InvalidRef, match="not a version number"):
        reg.set_alias("prompt/qa", "production", 10**20)
    assert reg.aliases("prompt/qa") == {"staging": 1}


def test_fork_makes_history_a_tree(store_ws):
    reg = store_ws.registry
    reg.push("prompt", "qa", {"t": 1})
    reg.push("prompt", "qa", {"t": 2})
    fork = reg.push("prompt", "qa", {"t": "1b"}, parent=1)
    assert (fork.version, fork.parent) == (3, 1)
    assert reg.get("prompt/qa@2").parent == 1
    with pytest.raises(AssetNotFound, match="cannot fork"):
        reg.push("prompt", "qa", {"t": "x"}, parent=10)
    up = store_ws.lineage("prompt/qa@3").upstream
    assert ("prompt/qa@3", "derived_from", "prompt/qa@1") in up


def test_list_latest_per_name(store_ws):
    reg = store_ws.registry
    reg.push("prompt", "a", {"v": 1})
    reg.push("prompt", "a", {"v": 2})
    reg.push("prompt", "b", {"v": 1})
    reg.push("index", "h", {"v": 1})
    assert [v.ref for v in reg.list()] == ["index/h@1", "prompt/a@2", "prompt/b@1"]
    assert [v.ref for v in reg.list("prompt")] == ["prompt/a@2", "prompt/b@1"]


def test_diff_is_structured(store_ws):
    reg = store_ws.registry
    reg.push("prompt", "qa", {"template": "A", "params": {"temperature": 0, "max_tokens": 64}}, files={"x": b"1"})
    reg.push("prompt", "qa", {"template": "B", "params": {"temperature": 0.7}, "tags": ["new"]}, files={"x": b"2", "y": b"3"})
    d = reg.diff("prompt/qa@1", "prompt/qa@2")
    assert d["spec"] == {
        "added": {"tags": ["new"]},
        "removed": {"params.max_tokens": 64},
        "changed": {"template": ["A", "B"], "params.temperature": [0, 0.7]},
    }
    assert d["files"] == {"added": ["y"], "removed": [], "changed": ["x"]}
    assert d["same"] is False


def test_runs_record_used_and_produced(store_ws):
    reg = store_ws.registry
    base = reg.push("model", "m", {"fingerprint": "abc"})
    reg.set_alias("model/m", "production", 1)
    with store_ws.start_run("train", kind="finetune") as run:
        used = reg.get("model/m@production")
        out = reg.push("adapter", "a", {"r": 8})
    assert out.run_id == run.id
    graph = store_ws.lineage(run.id)
    assert (run.id, "used", "model/m@1") in graph.upstream  # the resolved version, not the alias
    assert (run.id, "produced", "adapter/a@1") in graph.downstream
    down = store_ws.lineage(base.ref).downstream
    assert (run.id, "used", base.ref) in down
    assert used == base
    up = store_ws.lineage("adapter/a@1").upstream
    assert (run.id, "produced", "adapter/a@1") in up and (run.id, "used", "model/m@1") in up


def test_push_many_is_all_or_nothing(store_ws):
    from llmops.store.registry import PushItem

    reg = store_ws.registry
    reg.push("prompt", "a", {"v": 1})
    with pytest.raises(AssetNotFound, match="cannot fork"):
        reg.push_many([PushItem("prompt", "a", {"v": 2}), PushItem("prompt", "b", {"v": 1}, parent=5)])
    assert [v.ref for v in reg.list()] == ["prompt/a@1"]  # the first item was rolled back too
    out = reg.push_many([PushItem("prompt", "a", {"v": 2}), PushItem("prompt", "b", {"v": 1})])
    assert [v.ref for v in out] == ["prompt/a@2", "prompt/b@1"]

"""The content-addressed blob store: dedup, atomic writes, verified reads, safe names."""

import pytest

from llmops.artifacts import ArtifactStore, check_name
from llmops.errors import CorruptArtifact, InvalidArtifactName


def test_put_is_content_addressed_and_deduplicated(tmp_path):
    store = ArtifactStore(tmp_path / "a")
    f = tmp_path / "f.bin"
    f.write_bytes(b"hello")
    d1, d2 = store.put(b"hello"), store.put(f)
    assert d1 == d2 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    blobs = [p for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert len(blobs) == 1 and not blobs[0].name.startswith(".tmp")
    assert store.get(d1) == b"hello"


def test_corrupted_blob_is_never_returned(tmp_path):
    store = ArtifactStore(tmp_path / "a")
    digest = store.put(b"original bytes")
    blob = store._blob(digest)
    blob.chmod(0o644)
    blob.write_bytes(b"tampered bytes")
    with pytest.raises(CorruptArtifact, match="corrupted"):
        store.get(digest)
    with pytest.raises(CorruptArtifact):
        store.path(digest)


@pytest.mark.parametrize("name", ["../escape.txt", "a/../../b", "/etc/passwd", "a\x00b", "", "a//b", "./a", "a\\b"])
def test_unsafe_names_refused(name):
    with pytest.raises(InvalidArtifactName, match="not allowed"):
        check_name(name)


def test_run_artifact_with_traversal_writes_nothing(ws):
    with ws.start_run("r") as run:
        with pytest.raises(InvalidArtifactName):
            run.log_artifact(b"x", name="../../outside.txt")
    assert ws.get_run(run.id).artifacts == {}
    assert not (ws.home / "artifacts").exists() or not any(p.is_file() for p in (ws.home / "artifacts").rglob("*"))

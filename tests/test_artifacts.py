"""The content-addressed blob store: dedup, atomic writes, verified reads, safe names."""

import stat

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
    assert blobs == [tmp_path / "a" / "sha256" / "2c" / d1[2:]]  # no temp file left beside it
    assert stat.S_IMODE(blobs[0].stat().st_mode) == 0o444  # read-only: nothing edits a blob in place
    assert store.get(d1) == b"hello" and store.path(d1).read_bytes() == b"hello"


def test_corrupted_blob_is_never_returned(tmp_path):
    store = ArtifactStore(tmp_path / "a")
    digest = store.put(b"original bytes")
    blob = store._blob(digest)
    blob.chmod(0o644)
    blob.write_bytes(b"tampered bytes")
    message = f"artifact {digest} at {blob} is corrupted (its bytes no longer match its digest)"
    with pytest.raises(CorruptArtifact) as from_get:
        store.get(digest)
    assert str(from_get.value).startswith(message)
    with pytest.raises(CorruptArtifact) as from_path:
        store.path(digest)
    assert str(from_path.value).startswith(message)


@pytest.mark.parametrize("name", ["../escape.txt", "a/../../b", "/etc/passwd", "a\x00b", "", "a//b", "./a", "a\\b"])
def test_unsafe_names_refused(name):
    with pytest.raises(InvalidArtifactName, match="not allowed"):
        check_name(name)


def test_run_artifact_with_traversal_writes_nothing(ws):
    with ws.start_run("r") as run:
        with pytest.raises(InvalidArtifactName, match="artifact name '../../outside.txt' is not allowed"):
            run.log_artifact(b"x", name="../../outside.txt")
    assert ws.get_run(run.id).artifacts == {}
    assert not (ws.home / "artifacts").exists() or not any(p.is_file() for p in (ws.home / "artifacts").rglob("*"))

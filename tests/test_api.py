"""The public Python API: exactly the names in `llmops.__all__`, importable without the heavy stack."""

import json
import subprocess
import sys

import llmops

PUBLIC = ["AssetVersion", "LLMOpsError", "Workspace"]
HEAVY = ["alembic", "faiss", "numpy", "sentence_transformers", "sqlalchemy", "torch", "transformers"]


def test_all_is_exactly_the_public_names_sorted():
    assert llmops.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(llmops, name).__name__ == name
    assert issubclass(llmops.LLMOpsError, Exception)


def test_unknown_attribute_is_an_attribute_error():
    try:
        llmops.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("llmops.NoSuchThing resolved")


def _loaded_after(code: str, watch: list[str] = HEAVY) -> list[str]:
    """Which of the `watch` modules a fresh interpreter has loaded after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {watch!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_import_llmops_and_the_cli_load_nothing_heavy():
    assert _loaded_after("import llmops") == []
    assert _loaded_after("import llmops.cli; llmops.cli._register()") == []


def test_help_loads_neither_the_store_nor_rich():
    """`llmops --help` is answered by Click alone: no rich, no pydantic, no SQLAlchemy."""
    assert _loaded_after("import llmops.cli; llmops.cli.run(['--help'])", HEAVY + ["pydantic", "rich"]) == []


def test_workspace_is_loaded_on_first_access():
    assert "sqlalchemy" in _loaded_after("import llmops; llmops.Workspace")
    assert "Workspace" in dir(llmops)


def test_reading_a_store_at_head_loads_no_alembic_orm_or_models(tmp_path):
    ws = str(tmp_path / "ws")
    created = _loaded_after(f"import llmops.cli; assert llmops.cli.run(['-w', {ws!r}, 'init']) == 0")
    assert "alembic" in created  # creating the store migrates it; reading it at head must not
    loaded = _loaded_after(f"import llmops.cli; assert llmops.cli.run(['-w', {ws!r}, 'runs', 'list']) == 0",
                           HEAVY + ["sqlalchemy.orm"])
    assert loaded == ["sqlalchemy"]

"""`ws.prompts` on a real workspace: folder push (all or nothing), get and its cache, aliases, forks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import event

from llmops.errors import AliasNotFound, AssetNotFound, InvalidRef, SpecError, TemplateError
from llmops.prompts import parse_var_pairs, render_diff

REPO = Path(__file__).resolve().parent.parent
QA_V1 = REPO / "llmops" / "quickstart" / "qa_v1.yaml"


@pytest.fixture
def folder(ws):
    """The example prompts/ folder, copied into the workspace."""
    shutil.copytree(REPO / "prompts", ws.root / "prompts")
    return ws.root / "prompts"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def count_queries(ws):
    """A list that grows by one per SQL statement sent to the store."""
    statements = []
    event.listen(ws.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    return statements


def push_v1_then_v2(ws, folder):
    v2 = (folder / "qa.yaml").read_text()
    shutil.copy(QA_V1, folder / "qa.yaml")
    ws.prompts.push_folder(message="first")
    write(folder, "qa.yaml", v2)
    return ws.prompts.push_folder(message="shorter answers")


def test_push_folder_pushes_prompts_and_chains_and_is_idempotent(ws, folder):
    pushed = ws.prompts.push_folder(message="initial")
    assert sorted(av.ref for av in pushed) == ["chain/rag-qa-tuned@1", "chain/rag-qa@1", "prompt/qa@1", "prompt/rag-qa@1",
                                               "prompt/summarize@1"]
    assert all(av.message == "initial" for av in pushed)
    again = ws.prompts.push_folder(message="nothing changed")
    assert [av.ref for av in again] == [av.ref for av in pushed]
    assert [av.version for av in ws.registry.versions("prompt/qa")] == [1]


def test_reformatting_a_file_creates_no_version(ws, folder):
    ws.prompts.push_folder()
    text = (folder / "summarize.yaml").read_text()
    write(folder, "summarize.yaml", "# a comment\n" + text.replace("type: int", "type: 'int'") + "\n\n")
    assert ws.prompts.push_folder()[2].ref == "prompt/summarize@1"


def test_v1_then_v2_records_parent_and_diffs(ws, folder):
    push_v1_then_v2(ws, folder)
    versions = ws.registry.versions("prompt/qa")
    assert [(v.version, v.parent, v.message) for v in versions] == [(1, None, "first"), (2, 1, "shorter answers")]
    d = ws.prompts.diff("qa@1", "qa@2")
    assert d.variables_added == {"max_sentences": "int"}
    assert d.model_params["max_tokens"] == (64, 96)
    assert "+Answer in at most {{ max_sentences }} sentences." in "\n".join(d.template)
    assert "max_sentences" in render_diff(d, "markdown")


def test_reverting_a_file_makes_a_new_latest_version_equal_to_the_old_one(ws, folder):
    push_v1_then_v2(ws, folder)
    shutil.copy(QA_V1, folder / "qa.yaml")
    pushed = {av.ref: av for av in ws.prompts.push_folder(message="back to v1")}
    qa = pushed["prompt/qa@3"]
    assert (qa.outcome, qa.same_as, qa.parent) == ("revert", 1, 2)
    assert {av.outcome for ref, av in pushed.items() if ref != "prompt/qa@3"} == {"unchanged"}
    assert ws.prompts.get("qa").version == 3  # latest is the file pushed last
    assert ws.prompts.get("qa").to_dict() == ws.prompts.get("qa@1").to_dict()
    again = ws.prompts.push_folder()
    assert {(av.ref, av.outcome) for av in again if av.name == "qa"} == {("prompt/qa@3", "unchanged")}


def test_diff_against_a_local_file(ws, folder):
    ws.prompts.push_folder()
    d = ws.prompts.diff("qa@1", str(QA_V1))
    assert d.b == str(QA_V1) and d.variables_removed == {"max_sentences": "int"}


def test_get_renders_and_records_the_resolved_version(ws, folder):
    push_v1_then_v2(ws, folder)
    ws.prompts.set_alias("qa", "production", 2, reason="better")
    with ws.start_run("ask") as run:
        prompt = ws.prompts.get("qa@production")
        assert prompt.version == 2 and prompt.digest == ws.registry.get("prompt/qa@2").digest
        messages = prompt.render(question="How many days off?")
        assert messages[-1] == {"role": "user", "content": "How many days off?"}
    graph = ws.lineage(run.id)
    assert (run.id, "used", "prompt/qa@2") in graph.downstream + graph.upstream
    assert not any("production" in node for node in graph.nodes)


def test_pinned_get_is_cached_without_store_queries(ws, folder):
    ws.prompts.push_folder()
    first = ws.prompts.get("qa@1")
    statements = count_queries(ws)
    for ref in ("qa@1", "prompt/qa@1"):
        assert ws.prompts.get(ref) is first
    assert statements == []


def test_alias_re_resolves_but_a_held_prompt_never_changes(ws, folder):
    push_v1_then_v2(ws, folder)
    ws.prompts.set_alias("qa", "production", 1)
    held = ws.prompts.get("qa@production")
    ws.prompts.set_alias("qa", "production", 2, reason="v2 passed evals")
    statements = count_queries(ws)
    moved = ws.prompts.get("qa@production")
    assert statements, "an alias must be resolved through the store on every get"
    assert (held.version, moved.version) == (1, 2)
    assert held.render(question="Q")[0]["content"] == "You are a helpful assistant."
    assert moved is ws.prompts.get("qa@2")  # one compiled object per version
    history = ws.prompts.history("qa")
    moves = [(e["from"], e["to"], e["reason"]) for e in history if e["event"] == "alias"]
    assert moves == [(None, 1, None), (1, 2, "v2 passed evals")]


def test_missing_prompt_and_alias(ws, folder):
    ws.prompts.push_folder()
    with pytest.raises(AssetNotFound, match="no asset version 'prompt/nope'"):
        ws.prompts.get("nope")
    with pytest.raises(AssetNotFound, match="no asset version 'prompt/qa@7'"):
        ws.prompts.get("qa@7")
    with pytest.raises(AliasNotFound, match=r"prompt/qa has no alias 'staging' \(aliases: none\)"):
        ws.prompts.get("qa@staging")
    with pytest.raises(InvalidRef, match="expected a prompt ref"):
        ws.prompts.get("chain/rag-qa")


def test_render_errors_name_the_pushed_version(ws, folder):
    ws.prompts.push_folder()
    with pytest.raises(TemplateError) as info:
        ws.prompts.get("qa@1").render(question="x", max_sentences="two")
    assert str(info.value) == "prompt qa@1: variable 'max_sentences' must be int, got str (pass an int)"


def test_fork_records_an_earlier_parent_so_history_is_a_tree(ws, folder):
    push_v1_then_v2(ws, folder)
    text = QA_V1.read_text().replace("You are a helpful assistant.", "You are a terse assistant.")
    write(folder, "qa.yaml", text)
    pushed = ws.prompts.push_folder(message="fork of v1", fork=["qa@1"])
    qa = next(av for av in pushed if av.name == "qa" and av.kind == "prompt")
    assert (qa.version, qa.parent) == (3, 1)
    assert [(e["version"], e["parent"]) for e in ws.prompts.history("qa") if e["event"] == "version"] == [
        (1, None), (2, 1), (3, 1)]


def test_fork_of_a_missing_version_pushes_nothing(ws, folder):
    ws.prompts.push_folder()
    write(folder, "summarize.yaml", (folder / "summarize.yaml").read_text().replace("50", "40"))
    with pytest.raises(AssetNotFound, match="no asset version 'prompt/summarize@9'"):
        ws.prompts.push_folder(fork=["summarize@9"])
    assert [v.version for v in ws.registry.versions("prompt/summarize")] == [1]


# -- bad input: one clear error, nothing pushed --------------------------------------------

BAD_FILES = {
    "malformed YAML": ("broken.yaml", "name: broken\ntemplate: 'unclosed\n",
                       "prompts/broken.yaml:3: malformed YAML: found unexpected end of stream while scanning a "
                       "quoted scalar started on line 2 (check indentation and quote text that contains ':', '{' or '#')"),
    "duplicate name": ("qa-copy.yaml", "name: qa\ntemplate: hi\n",
                       "prompts/qa.yaml:3: name: prompt 'qa' is also defined in prompts/qa-copy.yaml "
                       "(each prompt lives in one file: rename one of them)"),
    "variable typo": ("typo.yaml", "name: typo\ntemplate: |\n  {{ questoin }}\nvariables:\n  question: str\n",
                      "prompts/typo.yaml:3: template: prompt typo: template uses undeclared variable 'questoin' "
                      "(did you mean 'question'?)"),
    "missing prompt ref": ("c.yaml", "kind: chain\nname: c\ninputs: [question]\nsteps:\n"
                                     "  - {name: p, type: prompt, prompt: qq}\n",
                           "prompts/c.yaml:5: steps[0].prompt: step 'p': prompt 'qq' does not exist "
                           "(push it first or fix the name (see `llmops assets list`))"),
    "cycle": ("c.yaml", "kind: chain\nname: c\ninputs: [question]\nsteps:\n"
                        "  - {name: r, type: retrieve, index: handbook, input: question}\n"
                        "  - {name: a, type: parse, input: b}\n  - {name: b, type: parse, input: a}\n",
              "prompts/c.yaml:6: steps[1]: steps form a cycle: a -> b -> a "
              "(a step cannot read, directly or not, its own output)"),
    "dangling output": ("c.yaml", "kind: chain\nname: c\ninputs: [question]\nsteps:\n"
                                  "  - {name: r, type: retrieve, index: handbook, input: question}\n"
                                  "  - {name: p, type: prompt, prompt: summarize, inputs: {text: question}}\n"
                                  "  - {name: g, type: generate, model: smollm2}\n"
                                  "  - {name: out, type: parse, input: g}\n",
                        "prompts/c.yaml:5: steps[0]: step 'r': its output 'r' feeds nothing "
                        "(read it in a later step, make it the chain's `output:`, or remove the step)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_one_bad_file_pushes_nothing(ws, folder, case):
    name, text, message = BAD_FILES[case]
    write(folder, name, text)
    with pytest.raises(SpecError) as info:
        ws.prompts.push_folder(message="should not land")
    assert str(info.value) == message
    assert ws.registry.list() == []


def test_bad_file_blocks_the_changed_good_ones_too(ws, folder):
    ws.prompts.push_folder()
    write(folder, "summarize.yaml", (folder / "summarize.yaml").read_text().replace("50", "40"))
    write(folder, "z.yaml", "name: z\ntemplate: '{{ x }}'\n")
    with pytest.raises(SpecError, match="prompts/z.yaml:2: template: prompt z: template uses undeclared variable 'x'"):
        ws.prompts.push_folder()
    assert [v.version for v in ws.registry.versions("prompt/summarize")] == [1]


def test_several_bad_files_are_reported_together(ws, folder):
    write(folder, "a.yaml", "name: a\ntemplate: '{{ x }}'\n")
    write(folder, "b.yaml", "name: b\ntemplate: hi\nmodel_params: {temp: 1}\n")
    with pytest.raises(SpecError) as info:
        ws.prompts.push_folder()
    assert str(info.value) == (
        "2 files failed validation, nothing was pushed:\n"
        "  prompts/a.yaml:2: template: prompt a: template uses undeclared variable 'x' (declare it under variables: (x: str))\n"
        "  prompts/b.yaml:3: model_params.temp: unknown field 'temp' (did you mean 'temperature'?)")
    assert len(info.value.errors) == 2
    assert ws.registry.list() == []


def test_chain_may_use_a_prompt_already_in_the_registry(ws, folder, tmp_path):
    ws.prompts.push_folder()
    other = tmp_path / "more"
    other.mkdir()
    write(other, "c.yaml", "kind: chain\nname: sum\ninputs: [text]\nsteps:\n"
                           "  - {name: p, type: prompt, prompt: summarize@1}\n"
                           "  - {name: g, type: generate, model: smollm2}\n")
    (av,) = ws.prompts.push_folder([other / "c.yaml"])
    assert av.ref == "chain/sum@1"
    assert ws.chains.get("sum@1").plan.wiring == {"p": {"text": "text"}, "g": {"prompt": "p"}}


def test_chain_refs_to_an_alias_that_does_not_exist_are_refused(ws, folder):
    write(folder, "rag-qa.chain.yaml", (folder / "rag-qa.chain.yaml").read_text().replace(
        "prompt: rag-qa ", "prompt: rag-qa@production "))
    with pytest.raises(SpecError, match=r"prompt 'rag-qa@production' does not exist"):
        ws.prompts.push_folder()


def test_external_refs_are_checked_on_request(ws, folder):
    with pytest.raises(SpecError, match=r"index 'handbook' does not exist"):
        ws.prompts.push_folder(check_external=True)
    assert ws.registry.list() == []
    ws.registry.push("index", "handbook", {"dim": 384})
    with pytest.raises(SpecError, match=r"adapter 'handbook-qa' does not exist"):   # rag-qa-tuned's adapter
        ws.prompts.push_folder(check_external=True)
    assert [av.kind for av in ws.registry.list()] == ["index"]
    ws.registry.push("adapter", "handbook-qa", {"format": "peft-lora"})
    assert len(ws.prompts.push_folder(check_external=True)) == 5


def test_push_of_a_missing_path(ws):
    with pytest.raises(SpecError) as info:
        ws.prompts.push_folder(["nowhere/"])
    assert str(info.value) == ("nowhere/: no such file or folder "
                               "(pass the prompts folder or YAML files, e.g. `llmops prompts push prompts/`)")


def test_push_inside_a_run_records_produced_versions(ws, folder):
    with ws.start_run("push", kind="custom") as run:
        pushed = ws.prompts.push_folder()
    assert {av.run_id for av in pushed} == {run.id}


def test_var_pairs_are_typed_by_the_prompt(ws, folder):
    ws.prompts.push_folder()
    summarize = ws.prompts.get("summarize@1")
    values = parse_var_pairs(summarize, ["text=a=b", "max_words=12"])
    assert values == {"text": "a=b", "max_words": 12}
    assert summarize.render(**values).startswith("Summarise the following text in at most 12 words.")
    with pytest.raises(SpecError) as info:
        parse_var_pairs(summarize, ["max_words=many"])
    assert str(info.value) == ("prompt summarize@1: --var max_words='many' is not a int "
                               "(lists and dicts are written as JSON, e.g. --var tags='[\"a\"]')")


def test_quickstart_flow_pushes_the_v1_file_then_the_folder(ws, folder):
    (v1,) = ws.prompts.push_folder([QA_V1], message="qa v1")
    assert v1.ref == "prompt/qa@1"
    pushed = ws.prompts.push_folder(message="qa v2")
    assert "prompt/qa@2" in [av.ref for av in pushed]
    assert ws.prompts.get("qa").version == 2


def test_pinned_gets_inside_a_run_record_one_used_edge(ws, folder):
    ws.prompts.push_folder()
    ws.prompts.get("summarize@1")  # cached before the run starts
    with ws.start_run("render") as run:
        for _ in range(3):
            ws.prompts.get("summarize@1").render(text="x")
    graph = ws.lineage(run.id)
    assert [e for e in graph.downstream + graph.upstream if e[1] == "used"] == [(run.id, "used", "prompt/summarize@1")]

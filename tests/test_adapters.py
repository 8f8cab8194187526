"""Adapters as versions: what the spec records, lineage, `@production` then latest, and a real PEFT
adapter refused on a base model it was not trained on — by chains, eval targets and resolve_adapter."""

from __future__ import annotations

import logging
import shutil
import textwrap
from pathlib import Path

import pytest

from llmops.errors import BackendError, SpecError
from llmops.finetune.adapters import adapter_folder, check_adapter_base, push_adapter, resolve_adapter
from llmops.finetune.spec import load_job
from model_support import make_adapter


@pytest.fixture(scope="module")
def other_base(tiny_llm_dir, tmp_path_factory) -> Path:
    """The tiny model with every weight nudged: same name, shapes and tokenizer, another fingerprint."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("other") / "tiny-llama"
    shutil.copytree(tiny_llm_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lora_dir(tiny_llm_dir, tmp_path_factory) -> Path:
    """A real PEFT adapter saved from the tiny model (random, non-zero LoRA weights)."""
    return make_adapter(tiny_llm_dir, tmp_path_factory.mktemp("lora") / "qa-lora", seed=3)


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture
def setup(ws, tiny_llm_dir, other_base):
    """model/tiny, model/tiny-b (another fingerprint), a dataset version, a job, a prompt and two chains."""
    from llmops.models import model_spec

    a = ws.registry.push("model", "tiny", spec=model_spec(tiny_llm_dir))
    b = ws.registry.push("model", "tiny-b", spec=model_spec(other_base))
    assert a.spec["fingerprint"] != b.spec["fingerprint"]
    data = ws.registry.push("dataset", "qa-train", {"format": "jsonl"}, files={"d.jsonl": b'{"a": 1}\n'})
    job = load_job(write(ws.root, "finetune/qa.yaml", """\
        base_model: tiny
        dataset: dataset/qa-train@1
        lora: {r: 4, alpha: 8}
        training: {max_steps: 3}
        output: qa-lora
        """), ws)
    write(ws.root, "prompts/qa.yaml", """\
        name: qa
        messages: [{role: user, content: "{{ question }}"}]
        variables: {question: {type: str}}
        model_params: {max_tokens: 4, temperature: 0}
        """)
    ws.prompts.push_folder(ws.root / "prompts")
    return {"ws": ws, "a": a, "b": b, "data": data, "job": job}


def push_chains(ws) -> None:
    """Two chains generating with adapter qa-lora (pushed first: a chain's refs must exist), on tiny and tiny-b."""
    for name, model in (("on-a", "tiny"), ("on-b", "tiny-b")):
        write(ws.root, f"prompts/{name}.chain.yaml", f"""\
            kind: chain
            name: {name}
            inputs: {{question: str}}
            steps:
              - {{name: prompt, type: prompt, prompt: qa}}
              - {{name: generate, type: generate, model: {model}, adapter: qa-lora}}
            output: generate
            """)
    ws.prompts.push_folder(ws.root / "prompts")


def push(s, folder, base="a", name="qa-lora", **kw):
    return push_adapter(s["ws"], name, folder, base_av=s[base], dataset_av=s["data"], job=s["job"], **kw)


def test_the_adapter_spec_records_base_fingerprint_dataset_and_job_with_lineage(setup, lora_dir):
    ws = setup["ws"]
    with ws.start_run("train qa-lora", kind="finetune") as run:
        av = push(setup, lora_dir, run=run, meta={"final_loss": 1.5})
    spec = av.spec
    assert av.ref == "adapter/qa-lora@1" and sorted(av.files) == ["adapter_config.json", "adapter_model.safetensors"]
    assert spec["base"] == {"ref": "model/tiny@1", "fingerprint": setup["a"].spec["fingerprint"],
                            "source": setup["a"].spec["source"]}
    assert spec["dataset"] == {"ref": "dataset/qa-train@1", "digest": setup["data"].digest}
    assert spec["job"] == {"digest": setup["job"].digest}
    assert spec["lora"]["r"] == 4 and spec["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert av.meta == {"final_loss": 1.5}
    up = ws.lineage(av.ref).upstream
    assert {(run.id, "produced", av.ref), (run.id, "used", "model/tiny@1"), (run.id, "used", "dataset/qa-train@1")} <= set(up)
    folder = adapter_folder(ws, av)
    assert (folder / "adapter_model.safetensors").read_bytes() == (lora_dir / "adapter_model.safetensors").read_bytes()


def test_resolve_adapter_takes_production_then_latest_and_refuses_another_base(setup, lora_dir, tmp_path):
    ws = setup["ws"]
    v1 = push(setup, lora_dir)
    retrained = tmp_path / "v2"
    shutil.copytree(lora_dir, retrained)
    (retrained / "adapter_config.json").write_text((lora_dir / "adapter_config.json").read_text().replace('"r": 4', '"r": 4 '))
    v2 = push(setup, retrained)
    assert (v1.version, v2.version) == (1, 2)
    assert resolve_adapter(ws, "qa-lora", setup["a"])[0] == v2        # no production alias: the latest
    ws.registry.set_alias("adapter/qa-lora", "production", 1)
    av, folder = resolve_adapter(ws, "qa-lora", setup["a"])
    assert av == v1 and (folder / "adapter_config.json").is_file()
    assert resolve_adapter(ws, "adapter/qa-lora@2", setup["a"])[0] == v2
    with pytest.raises(BackendError) as info:
        resolve_adapter(ws, "qa-lora", setup["b"])
    text = str(info.value)
    assert "adapter/qa-lora@1 was trained on model/tiny@1" in text and "not on model/tiny-b@1" in text
    assert setup["a"].spec["fingerprint"][:12] in text and setup["b"].spec["fingerprint"][:12] in text


def test_a_chain_refuses_an_adapter_of_another_base_and_loads_it_on_its_own(setup, lora_dir):
    ws = setup["ws"]
    push(setup, lora_dir)
    push_chains(ws)
    with pytest.raises(BackendError, match="trained on model/tiny@1.*not on model/tiny-b@1"):
        ws.chains.load("on-b")
    chain = ws.chains.load("on-a")
    assert isinstance(chain.invoke({"question": "hello"}), str)


def test_an_eval_target_refuses_an_adapter_of_another_base(setup, lora_dir):
    from llmops.evals.suite import load_suite
    from llmops.evals.target import resolve_target

    ws = setup["ws"]
    push(setup, lora_dir)
    write(ws.root, "evals/data.jsonl", '{"q": "hi", "a": "x"}\n')
    suite = "name: s\ndataset: data.jsonl\ntarget: {{prompt: qa, model: {m}, adapter: qa-lora}}\n" \
            "inputs: {{question: q}}\nreference: a\nmetrics: [exact_match]\n"
    with pytest.raises(SpecError) as info:
        resolve_target(ws, load_suite(write(ws.root, "evals/b.yaml", suite.format(m="tiny-b"))))
    assert info.value.field == "target.adapter" and "not on model/tiny-b@1" in str(info.value)
    target = resolve_target(ws, load_suite(write(ws.root, "evals/a.yaml", suite.format(m="tiny"))))
    assert "adapter/qa-lora@1" in target.digests


def test_an_adapter_without_a_recorded_base_loads_with_a_warning(setup, lora_dir, caplog):
    ws = setup["ws"]
    old = ws.registry.push("adapter", "qa-lora", {"r": 4},
                           files={n: lora_dir / n for n in ("adapter_config.json", "adapter_model.safetensors")})
    push_chains(ws)
    with caplog.at_level(logging.WARNING, logger="llmops.finetune.adapters"):
        chain = ws.chains.load("on-b")
    assert isinstance(chain.invoke({"question": "hello"}), str)
    assert any("records no base model fingerprint" in r.getMessage() and old.ref in r.getMessage()
               for r in caplog.records)
    check_adapter_base(old, setup["a"])  # no exception either way


def test_push_refuses_a_name_used_on_another_base_and_a_folder_that_is_no_adapter(setup, lora_dir, tmp_path):
    ws = setup["ws"]
    push(setup, lora_dir)
    with pytest.raises(BackendError, match="another base model.*another `output:` name"):
        push(setup, lora_dir, base="b")
    assert [v.version for v in ws.registry.versions("adapter/qa-lora")] == [1]
    with pytest.raises(BackendError, match="adapter_model.safetensors"):
        push(setup, tmp_path, name="empty")

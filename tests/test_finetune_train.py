"""The LoRA training loop (llmops.finetune.train) on the tiny Llama: data order, batching, loss, schedules,
checkpoints. The job around it (run, resume, push) is tested in test_finetune_resume.py."""

import math
import pickle
import random
from dataclasses import dataclass

import pytest
import torch

from llmops.errors import ConfigError, LLMOpsError
from llmops.finetune import checkpoint as ckpt
from llmops.finetune.train import (IGNORE, LoraTrainer, Settings, collate, fit, loss_tokens,
                                   micro_batches, plan, resolve_precision, token_loss_sum)

CPU = torch.device("cpu")


@dataclass
class Ex:
    """The contract's Example: token ids, and labels with -100 on the prompt tokens."""

    input_ids: list
    labels: list


def examples(n, seed=0, vocab=1000):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(6, 24)
        prompt = rng.randint(2, length - 2)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        out.append(Ex(ids, [IGNORE] * prompt + ids[prompt:]))
    return out


def model(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder)


def trainer(folder, train, validation=(), **kw):
    from peft import LoraConfig

    lora = LoraConfig(r=kw.pop("r", 8), lora_alpha=16, lora_dropout=kw.pop("dropout", 0.05),
                      target_modules=kw.pop("target_modules", ["q_proj", "v_proj"]), task_type="CAUSAL_LM")
    settings = Settings(**{"max_steps": 4, "batch_size": 4, "lr": 1e-2, **kw})
    return LoraTrainer(model(folder), train, list(validation), settings, lora, device=CPU)


def lora_weights(t):
    from peft import get_peft_model_state_dict

    return {k: v.clone() for k, v in get_peft_model_state_dict(t.peft_model).items()}


def same(a, b, **tol):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], **tol) for k in a)


# -- data order and batching ------------------------------------------------------------------------

def test_plan_counts_steps_and_visits_every_example_once_per_epoch():
    p = plan(10, Settings(epochs=2, batch_size=2, grad_accum=2))
    assert (p.global_batch, p.steps_per_epoch, p.total_steps) == (4, 3, 6)
    first = [i for s in (1, 2, 3) for i in p.batch(s)]
    second = [i for s in (4, 5, 6) for i in p.batch(s)]
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second  # each epoch has its own order
    assert [len(p.batch(s)) for s in range(1, 7)] == [4, 4, 2, 4, 4, 2]  # the last batch of an epoch is short
    assert p.batch(5) == plan(10, Settings(epochs=2, batch_size=2, grad_accum=2)).batch(5)  # from the seed alone
    assert p.batch(1) != plan(10, Settings(epochs=2, batch_size=2, grad_accum=2, seed=1)).batch(1)
    assert plan(10, Settings(epochs=0.5, batch_size=4)).total_steps == 2
    assert plan(10, Settings(max_steps=7, batch_size=4)).total_steps == 7


def test_plan_refuses_an_empty_training_split():
    with pytest.raises(ConfigError, match="training split is empty"):
        plan(0, Settings(max_steps=1))


def test_micro_batches_group_similar_lengths_and_collate_pads_each_to_its_longest():
    data = [Ex([5] * n, [IGNORE] + [5] * (n - 1)) for n in (3, 9, 4, 8)]
    groups = micro_batches([0, 1, 2, 3], [len(e.input_ids) for e in data], 2)
    assert groups == [[1, 3], [2, 0]]
    batch = collate([data[i] for i in groups[1]], pad_id=0, device=CPU)
    assert batch["input_ids"].shape == (2, 4)  # padded to 4, not to the longest of the whole batch (9)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 5, 5, 5], [IGNORE, 5, 5, IGNORE]]


# -- the loss ---------------------------------------------------------------------------------------

def test_loss_is_the_completion_token_mean_that_transformers_computes(tiny_llm_dir):
    m = model(tiny_llm_dir).eval()
    data = examples(3, seed=4)
    for e in data:
        batch = collate([e], pad_id=0, device=CPU)
        with torch.no_grad():
            logits = m(input_ids=batch["input_ids"]).logits
            reference = m(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        ours = token_loss_sum(logits, batch["labels"]) / loss_tokens(e)
        assert torch.allclose(ours, reference, rtol=1e-5)
    # padding and prompt tokens never count
    assert loss_tokens(Ex([1, 2, 3, 4], [IGNORE, IGNORE, 3, 4])) == 2


def test_gradient_accumulation_gives_the_same_steps_as_one_big_batch(tiny_llm_dir):
    data = examples(16, seed=1)
    one = trainer(tiny_llm_dir, data, batch_size=8, grad_accum=1, dropout=0.0)
    four = trainer(tiny_llm_dir, data, batch_size=2, grad_accum=4, dropout=0.0)
    a, b = fit(one), fit(four)
    assert [s.loss for s in a] == pytest.approx([s.loss for s in b], rel=1e-5)
    assert [s.grad_norm for s in a] == pytest.approx([s.grad_norm for s in b], rel=1e-4)
    assert same(lora_weights(one), lora_weights(four), rtol=1e-4, atol=1e-6)


def test_training_learns_the_completions(tiny_llm_dir):
    data = examples(4, seed=2)
    t = trainer(tiny_llm_dir, data, data, max_steps=30, lr=3e-2, target_modules="all-linear", dropout=0.0)
    before = t.evaluate()
    steps = fit(t)
    after = t.evaluate()
    assert after < 0.5 * before
    assert steps[-1].loss < 0.5 * steps[0].loss
    assert all(s.tokens == sum(len(e.input_ids) for e in data) and s.grad_norm > 0 for s in steps)


def test_same_seed_same_adapter_other_seed_other_adapter(tiny_llm_dir):
    data = examples(8, seed=3)
    a, b, c = (trainer(tiny_llm_dir, data, seed=s, dropout=0.1) for s in (0, 0, 1))
    for t in (a, b, c):
        fit(t)
    assert same(lora_weights(a), lora_weights(b), rtol=0, atol=0)
    assert not same(lora_weights(a), lora_weights(c))


def test_gradient_checkpointing_changes_memory_not_results(tiny_llm_dir):
    data = examples(8, seed=5)
    plain = trainer(tiny_llm_dir, data, max_steps=2, dropout=0.0)
    saved = trainer(tiny_llm_dir, data, max_steps=2, dropout=0.0, gradient_checkpointing=True)
    assert [s.loss for s in fit(plain)] == pytest.approx([s.loss for s in fit(saved)], rel=1e-5)
    assert same(lora_weights(plain), lora_weights(saved), rtol=1e-5, atol=1e-7)


# -- schedules and precision ------------------------------------------------------------------------

@pytest.mark.parametrize("schedule, expected", [
    ("linear", [0.0, 0.5, 1.0, 0.75, 0.5, 0.25]),
    ("constant", [0.0, 0.5, 1.0, 1.0, 1.0, 1.0]),
    ("cosine", [0.0, 0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]),
])
def test_learning_rate_schedules_with_warmup(tiny_llm_dir, schedule, expected):
    t = trainer(tiny_llm_dir, examples(4), max_steps=6, warmup_steps=2, schedule=schedule, lr=0.1)
    lrs = [s.lr for s in fit(t)]  # the lr each step used (transformers' schedules: warmup starts at 0)
    assert lrs == pytest.approx([0.1 * x for x in expected])


def test_precision_on_cpu():
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)


def test_bf16_autocast_on_cpu_trains(tiny_llm_dir):
    t = trainer(tiny_llm_dir, examples(8), max_steps=2, precision="bf16")
    steps = fit(t)
    assert all(math.isfinite(s.loss) for s in steps)
    assert all(p.dtype == torch.float32 for p in t.params)  # autocast: the weights stay fp32


# -- checkpoints ------------------------------------------------------------------------------------

def test_restoring_a_checkpoint_continues_exactly(tiny_llm_dir, tmp_path):
    data, val = examples(12, seed=6), examples(3, seed=7)
    kw = dict(max_steps=6, batch_size=2, grad_accum=2, dropout=0.2, checkpoint_every=2, eval_every=3)
    whole = trainer(tiny_llm_dir, data, val, **kw)
    saves = []

    def save(step):
        saves.append(step)
        whole.checkpoint(tmp_path, step, "digest")

    full = fit(whole, save=save)
    assert saves == [2, 4]
    assert [c.step for c in ckpt.checkpoints(tmp_path)] == [2, 4]

    resumed = trainer(tiny_llm_dir, data, val, **kw)
    start = resumed.restore(ckpt.checkpoints(tmp_path)[0])  # from step 2: steps 3..6 again
    rest = fit(resumed, start_step=start)
    assert [s.step for s in rest] == [3, 4, 5, 6]
    assert [s.loss for s in rest] == [s.loss for s in full[2:]]
    assert same(lora_weights(whole), lora_weights(resumed), rtol=0, atol=0)
    state = ckpt.checkpoints(tmp_path)[0].state
    assert (state.epoch, state.position, state.total_steps, state.world_size) == (0, 2, 6, 1)


def test_only_the_newest_checkpoints_are_kept(tiny_llm_dir, tmp_path):
    t = trainer(tiny_llm_dir, examples(8), max_steps=7, checkpoint_every=2, keep_checkpoints=2)
    (tmp_path / ".checkpoint-2.abc.tmp").mkdir()  # left by a write that was killed
    fit(t, save=lambda step: t.checkpoint(tmp_path, step, "d"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    files = sorted(p.name for p in (tmp_path / "checkpoint-6").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "state.json", "trainer_state.pt"]


class Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_checkpoint_with_foreign_pickles_is_refused_not_run(tiny_llm_dir, tmp_path, capsys):
    t = trainer(tiny_llm_dir, examples(4), max_steps=2)
    saved = t.checkpoint(tmp_path, 1, "d")
    (saved.path / "trainer_state.pt").write_bytes(pickle.dumps({"optimizer": Payload()}))
    with pytest.raises(LLMOpsError, match=r"cannot read the checkpoint state .*trainer_state.pt"):
        trainer(tiny_llm_dir, examples(4), max_steps=2).restore(saved)
    assert "this ran" not in capsys.readouterr().out


def test_a_checkpoint_of_another_plan_is_refused(tiny_llm_dir, tmp_path):
    t = trainer(tiny_llm_dir, examples(4), max_steps=2)
    saved = t.checkpoint(tmp_path, 1, "d")
    with pytest.raises(LLMOpsError, match="made for 2 steps with seed 0, this job plans 3"):
        trainer(tiny_llm_dir, examples(4), max_steps=3).restore(saved)


def test_examples_without_a_completion_token_are_left_out(tiny_llm_dir):
    cut = Ex([5, 6, 7, 8], [IGNORE] * 4)  # max_seq_len cut its whole completion away
    t = trainer(tiny_llm_dir, examples(4) + [cut], [cut], max_steps=2)
    assert len(t.train_set) == 4 and t.validation == []
    assert all(math.isfinite(s.loss) for s in fit(t))
    with pytest.raises(ConfigError, match="no example has a completion token"):
        trainer(tiny_llm_dir, [cut], max_steps=1)

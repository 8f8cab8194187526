"""A tiny chat LLM built locally from a config (2-layer Llama, BPE tokenizer trained here): no downloads."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_bpe(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE (`tokenizers.Tokenizer`) trained on `texts`, with the ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, trainers

    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return tok


def chat_tokenizer(tok: Any) -> Any:
    """`tok` as a transformers tokenizer: ChatML specials (<|im_start|> BOS, <|im_end|> EOS) and CHAT_TEMPLATE."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(folder: Path) -> Path:
    """A 2-layer, 32-wide Llama with a byte-level BPE tokenizer trained here on pseudo-words: no downloads."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 7))) for _ in range(300)]
    corpus = [" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(400)]
    tokenizer = chat_tokenizer(train_bpe(corpus, vocab_size=1024))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, initializer_range=0.2)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_adapter(tiny_llm_dir: Path, folder: Path, seed: int = 1) -> Path:
    """A LoRA adapter (r 4 on q_proj/v_proj) with random, non-zero weights, saved by PEFT into `folder`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmops.models.transformers_backend import peft_quiet

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    with peft_quiet():
        peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                     init_lora_weights=False))
    peft_model.save_pretrained(folder)
    return folder

"""Tiny randomly initialised causal LMs with a real (small, trained-here) BPE tokenizer, for fast offline tests."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:\n### Input:\n### Response:\n",
    "Give three tips for staying healthy. Eat well, sleep enough and move every day.",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "Instruction: Input: Output: Classify the sentiment. positive negative neutral yes no A B tie",
    "Write a poem about the sea. Summarize the article. Translate the sentence into French.",
]


def build_tokenizer(chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>", bos_token=None,
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out: Path, *, chat: bool = True, seed: int = 0, arch: str = "llama", **overrides) -> Path:
    """Save a ~100K-parameter model + tokenizer to `out` and return it; `overrides` replace config fields."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Gemma3TextConfig

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(chat=chat)
    common = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        tie_word_embeddings=True,
    )
    if arch == "gemma3":
        config = Gemma3TextConfig(**(dict(head_dim=8, sliding_window=64) | common | overrides))
    else:
        config = LlamaConfig(**(common | overrides))
    model = AutoModelForCausalLM.from_config(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

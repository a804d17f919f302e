"""The response-only chunked loss equals the HF model's own loss (and gradient) on the same batch."""

from __future__ import annotations

import pytest

from apprentice.train.data import Example, tokenize
from apprentice.train.templates import ALPACA_TEMPLATE

EXAMPLES = [
    Example("Give three tips for staying healthy.", "", "Eat well, sleep enough and move every day."),
    Example("Classify the sentiment.", "The quick brown fox", "positive"),
    Example("Summarize the article.", "0 1 2 3 4 5 6 7 8 9 10", "Numbers."),
]


def _batch(model_dir, tokenizer):
    import torch

    sequences = tokenize(EXAMPLES, ALPACA_TEMPLATE, tokenizer, max_len=512).sequences
    width = max(len(ids) for ids, _ in sequences)
    ids = torch.full((len(sequences), width), tokenizer.pad_token_id)
    labels = torch.full((len(sequences), width), -100)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (i, lab) in enumerate(sequences):
        ids[row, : len(i)], labels[row, : len(lab)], mask[row, : len(i)] = torch.tensor(i), torch.tensor(lab), 1
    return ids, mask, labels


def _hf_and_ours(model, batch, chunk):
    """HF loss + gradients, then ours + gradients, on the same model."""
    from apprentice.train.loss import ResponseLoss

    ids, mask, labels = batch
    reference = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    reference.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    total, count = ResponseLoss(model, chunk=chunk)(ids, mask, labels)
    (total / count).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return reference, total / count, ref_grads, grads


@pytest.mark.parametrize("arch,softcap,lora", [
    ("llama", None, False), ("gemma3", None, False), ("gemma3", 3.0, False), ("llama", None, True),
], ids=["llama", "gemma3", "gemma3-softcap", "llama-lora"])
def test_loss_and_gradients_equal_hf(tmp_path, arch, softcap, lora):
    import torch
    from tiny import build_tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = build_tiny_model(tmp_path / "m", chat=False, arch=arch)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if softcap is not None:
        model.config.final_logit_softcapping = softcap
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
        for name, p in model.named_parameters():  # LoRA B starts at zero; make the adapters do something
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
    batch = _batch(model_dir, tokenizer)
    assert (batch[2] != -100).sum() > 10
    reference, ours, ref_grads, grads = _hf_and_ours(model, batch, chunk=5)  # several chunks, one partial
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=0)
    assert ref_grads.keys() == grads.keys() and grads
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)

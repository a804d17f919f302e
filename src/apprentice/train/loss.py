"""The training loss, computed only where it counts: the LM head and cross-entropy run on response positions alone,
a chunk of positions at a time, with each chunk's gradient taken on the spot, so full-vocabulary logits never exist
for a whole batch (Gemma's 262K vocabulary makes them the biggest tensor in training).

    loss_module = ResponseLoss(model)                      # a transformers causal LM, plain or LoRA-wrapped
    total, count = loss_module(input_ids, attention_mask, labels)
    (total / count).backward()                             # equals the HF model's own loss on the same batch

`ResponseLoss` is an `nn.Module` so that DDP/FSDP wrap it whole: its forward is the forward they synchronise.
"""

from __future__ import annotations

import torch
from torch import nn

from apprentice.errors import UserError

IGNORE = -100
_LOGIT_BUDGET = 1 << 28  # logits per chunk: 1 GiB in fp32, whatever the vocabulary


def chunk_size_for(vocab_size: int) -> int:
    """Positions per chunk: 1,024 for Gemma's 262K vocabulary, up to 4,096 for small vocabularies."""
    return max(256, min(4096, _LOGIT_BUDGET // vocab_size))


class _LinearCrossEntropy(torch.autograd.Function):
    """sum(CE(softcap(hidden @ weight.T), targets)) with the gradient computed chunk by chunk during the forward.

    Keeping only the gradients (hidden-sized and weight-sized) instead of the logits makes memory independent of
    the vocabulary, at no extra compute: each chunk's logits are needed once for the value and once for the
    gradient, and both happen while they exist."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, softcap: float | None):  # type: ignore[override]
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start : start + chunk], targets[start : start + chunk]
            logits = (h @ weight.T).float()
            if softcap is not None:
                capped = torch.tanh(logits / softcap)
                logits = capped * softcap
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            # d CE / d logits = softmax - one_hot(target)
            grad = torch.exp(logits - log_norm[:, None])
            grad[torch.arange(len(t), device=t.device), t] -= 1
            if softcap is not None:
                grad *= 1 - capped * capped
            grad = grad.to(h.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk] = grad @ weight.to(h.dtype)
            if grad_weight is not None:
                grad_weight += (grad.T @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            grad_hidden * grad_output.to(grad_hidden.dtype) if grad_hidden is not None else None,
            (grad_weight * grad_output).to(ctx.weight_dtype) if grad_weight is not None else None,
            None,
            None,
            None,
        )


def causal_lm_of(model: nn.Module) -> nn.Module:
    """The transformers CausalLM inside a PEFT wrapper (LoRA layers are injected in place, so they still run)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class ResponseLoss(nn.Module):
    """Wraps a causal LM; forward returns (sum of token cross-entropies over response positions, their count)."""

    def __init__(self, model: nn.Module, chunk: int | None = None):
        super().__init__()
        self.model = model
        lm = causal_lm_of(model)
        head = lm.get_output_embeddings()
        if type(head) is not nn.Linear or head.bias is not None:
            raise UserError(
                f"the output layer is a {type(head).__name__}, not a bias-free Linear: the response-only loss "
                "needs its weight (do not make lm_head a LoRA target)"
            )
        self.softcap = getattr(lm.config, "final_logit_softcapping", None)
        # FSDP's transformer auto-wrap reads the layer classes to shard from the root module it is given: this one
        self._no_split_modules = getattr(lm, "_no_split_modules", None)
        self.chunk = chunk or chunk_size_for(head.weight.shape[0])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
        lm = causal_lm_of(self.model)
        hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = hidden.last_hidden_state
        targets = labels[:, 1:]  # position t predicts token t + 1
        keep = targets != IGNORE
        total = _LinearCrossEntropy.apply(
            hidden[:, :-1][keep], lm.get_output_embeddings().weight, targets[keep], self.chunk, self.softcap
        )
        return total, keep.sum()

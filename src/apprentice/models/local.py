"""Local transformers backend: batched generation on CPU or CUDA.

Requests are grouped by their sampling settings, sorted by prompt length and generated in batches with left padding
(so every row's new tokens start at the same column). Chat requests use the tokenizer's chat template when it has one.
Stop strings are applied after decoding. A request's seed makes sampling reproducible for the same batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from itertools import groupby
from pathlib import Path

from apprentice.errors import UserError
from apprentice.models.base import BackendOptions, Completion, Model, Request
from apprentice.models.spec import ModelSpec, local_model_dir


def truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; returns the kept text and whether a stop string was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def render_prompt(tokenizer, request: Request) -> str:
    """The exact text a local model continues: a chat request through the tokenizer's chat template (messages
    joined by blank lines without one), a plain prompt as it is."""
    if not request.is_chat:
        return request.prompt or ""
    messages = list(request.messages or ())
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def eos_token_ids(tokenizer, configured: int | list[int] | None) -> list[int]:
    """The tokens that end an answer: the tokenizer's EOS and those of the model's generation config (chat models
    often end turns with a token of their own)."""
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    eos |= set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return sorted(eos)


def finish_completion(tokenizer, request: Request, new: list[int], eos_ids: Sequence[int], prompt_tokens: int,
                      top_logprobs: dict[str, float] | None, seconds: float) -> Completion:
    """One row's generated tokens as a Completion, the same way for every local engine: cut at max_tokens, at the
    first EOS and at the earliest stop string."""
    new = new[: request.max_tokens]
    ended = next((k for k, t in enumerate(new) if t in eos_ids), None)
    tokens = new if ended is None else new[:ended]
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    text, stopped = truncate_at_stop(text, request.stop)
    hit_limit = ended is None and not stopped and len(new) >= request.max_tokens
    # a stop string can end mid-token run: count what was kept, not what was generated past it
    completion_tokens = len(tokenizer(text, add_special_tokens=False).input_ids) if stopped else len(tokens)
    return Completion(text=text, finish_reason="length" if hit_limit else "stop", prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens, top_logprobs=top_logprobs, seconds=seconds)


def holds_stop(tokenizer, tokens: Sequence[int], stops: Sequence[str]) -> bool:
    """Whether the text of the generated `tokens` holds a stop string. The decoded tail is looked at first, so
    most steps cost one short decode; the whole text decides."""
    window = 2 * max(len(s) for s in stops) + 8
    tail = tokenizer.decode(tokens[-window:], skip_special_tokens=True)
    if not any(s and s in tail for s in stops):
        return False
    return truncate_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), stops)[1]


class StopStrings:
    """A stopping criterion for transformers' generate that ends a row once its completion holds a stop string.
    transformers' own `stop_strings` also match text that begins in the prompt (a chat template's last newline
    and a generated one make a blank line), which OpenAI's stop sequences do not."""

    def __init__(self, tokenizer, stops: Sequence[str], prompt_width: int):
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_width = prompt_width

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        generated = input_ids[:, self.prompt_width :]  # rows stay tensors: most steps decode only their tail
        return torch.tensor([holds_stop(self.tokenizer, row, self.stops) for row in generated],
                            device=input_ids.device)


class PresencePenalty:
    """OpenAI's presence penalty for transformers' generate: every token already in this row's completion has
    `penalty` subtracted from its logit, once, however often it appeared. Rows are left-padded, so the completion
    starts at the same column (`prompt_width`) in every row."""

    def __init__(self, penalty: float, prompt_width: int):
        self.penalty = penalty
        self.prompt_width = prompt_width

    def __call__(self, input_ids, scores):
        import torch

        generated = input_ids[:, self.prompt_width :]
        if generated.shape[1] == 0:
            return scores
        seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, generated, True)
        return scores - self.penalty * seen


def load_tokenizer(path: str, spec: str):
    """The tokenizer of a model directory or hub id; one that is neither (an id the hub does not know, or no
    network) is a UserError naming the spec, not transformers' traceback."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model {spec}: {str(exc).splitlines()[0]}") from exc


def pick_device(requested: str | None) -> str:
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class LocalModel(Model):
    """A transformers causal LM (a directory or hub id; GGUF and bundled models arrive here converted)."""

    engine = "transformers"

    def __init__(self, model, tokenizer, spec: str, options: BackendOptions, device: str):
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.options = options
        self.device = device
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self._lock = threading.Lock()  # one generate at a time: serve calls in from worker threads
        self.tokens = {"prompt_tokens": 0, "completion_tokens": 0}
        self.eos_ids = eos_token_ids(tokenizer, getattr(model.generation_config, "eos_token_id", None))

    @classmethod
    def from_spec(cls, spec: ModelSpec, options: BackendOptions) -> LocalModel:
        return cls.from_dir(local_model_dir(spec), str(spec), options)

    @classmethod
    def from_dir(cls, path: str, spec: str, options: BackendOptions | None = None) -> LocalModel:
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress display is enough; loads take a second
        options = options or BackendOptions()
        device = pick_device(options.device)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        tokenizer = load_tokenizer(path, spec)
        try:
            if (Path(path) / "adapter_config.json").exists():
                from peft import AutoPeftModelForCausalLM

                model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype).merge_and_unload()
            else:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except OSError as exc:
            raise UserError(f"cannot load model {spec}: {str(exc).splitlines()[0]}") from exc
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.to(device).eval()
        return cls(model, tokenizer, spec, options, device)

    @property
    def stats(self) -> dict:
        return dict(self.tokens)

    def render(self, request: Request) -> str:
        """The exact text the model continues."""
        return render_prompt(self.tokenizer, request)

    def stream(self, requests: Sequence[Request]) -> Iterator[tuple[int, Completion]]:
        prompts = [self.render(r) for r in requests]
        lengths = [len(self.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]

        def settings(i: int) -> tuple:
            r = requests[i]
            # chat and plain prompts are encoded differently (special tokens), so they never share a batch
            return (r.is_chat, r.temperature, r.top_p, r.stop, r.presence_penalty, r.logprobs or 0, r.seed is None,
                    r.seed or 0)

        order = sorted(range(len(requests)), key=lambda i: (settings(i), lengths[i]))
        for _, group in groupby(order, key=settings):
            indexes = list(group)
            for start in range(0, len(indexes), self.options.batch_size):
                batch = indexes[start : start + self.options.batch_size]
                completions = self._generate_batch([requests[i] for i in batch], [prompts[i] for i in batch])
                yield from zip(batch, completions)

    def _generate_batch(self, requests: list[Request], prompts: list[str]) -> list[Completion]:
        import torch

        first = requests[0]
        add_special = not any(r.is_chat and self.has_chat_template for r in requests)
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special)
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        sample = first.temperature > 0
        kwargs = dict(
            max_new_tokens=max(r.max_tokens for r in requests),
            do_sample=sample,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_ids or None,
            return_dict_in_generate=True,
            output_scores=bool(first.logprobs),
        )
        if sample:
            kwargs.update(temperature=first.temperature, top_p=first.top_p, top_k=0)
        else:  # keep the model's sampling defaults from warning about being ignored under greedy decoding
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if first.stop:
            from transformers import StoppingCriteriaList

            stopping = StopStrings(self.tokenizer, first.stop, encoded["input_ids"].shape[1])
            kwargs.update(stopping_criteria=StoppingCriteriaList([stopping]))
        if first.presence_penalty:
            from transformers import LogitsProcessorList

            penalty = PresencePenalty(first.presence_penalty, encoded["input_ids"].shape[1])
            kwargs.update(logits_processor=LogitsProcessorList([penalty]))
        with self._lock, torch.inference_mode():
            started = time.monotonic()
            if first.seed is not None:
                torch.manual_seed(first.seed)
            output = self.model.generate(**encoded, **kwargs)
            seconds = time.monotonic() - started
        prompt_width = encoded["input_ids"].shape[1]
        prompt_counts = encoded["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, request in enumerate(requests):
            top = None
            if request.logprobs and output.scores:
                logprobs = torch.log_softmax(output.scores[0][row].float(), dim=-1)
                values, ids = logprobs.topk(request.logprobs)
                top = {self.tokenizer.decode([i]): float(v) for v, i in zip(values.tolist(), ids.tolist())}
            completion = finish_completion(self.tokenizer, request, output.sequences[row, prompt_width:].tolist(),
                                           self.eos_ids, int(prompt_counts[row]), top, seconds)
            results.append(completion)
            self.tokens["prompt_tokens"] += completion.prompt_tokens
            self.tokens["completion_tokens"] += completion.completion_tokens
        return results

"""Local generation on CTranslate2: the same requests and answers as the transformers backend, several times faster
on a CPU (int8 weights, a decoding loop in C++ that drops finished rows, one batch per core).

    model = CT2Model.from_dir(path, "bundled:smollm2-135m-instruct", BackendOptions(), quantize=True)

Prompts are rendered and tokenized as `LocalModel` does, rows are finished by the same function (max_tokens, EOS,
stop strings, token counts), and stop strings and per-row max_tokens end a row as soon as they are reached (through
ctranslate2's per-token callback). On a CPU each core runs a batch of its own on one thread: measured on 2 cores
(int8, SmolLM2-135M), 16 prompts as two batches of 8 side by side gave 210-250 tokens/s, as one batch of 16 on two
threads 140-160 (per-step thread synchronisation costs more than it saves at these sizes). A stream is split so
that every core has a batch, and a core that finishes takes the next batch at once.

What ctranslate2 cannot do the same way goes to the transformers model, loaded the first time such a request comes,
with one line saying so: presence penalty (ctranslate2 has none, and no logits hook in Python), log-probabilities
of sampled requests (transformers reports them after temperature and top_p), and prompts longer than a sliding
window (see ct2_convert).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from apprentice.models.base import BackendOptions, Completion, Model, Request
from apprentice.models.local import LocalModel, finish_completion, holds_stop, load_tokenizer, render_prompt

POLL_S = 0.005  # how often the batches in flight are looked at; a batch takes seconds


def fallback_reason(request: Request, prompt_tokens: int, prefill_limit: int | None) -> str | None:
    """Why a request must run on transformers, or None when ctranslate2 answers it the same way."""
    if request.presence_penalty:
        return "presence_penalty (ctranslate2 has no presence penalty)"
    if request.logprobs and request.temperature > 0:
        return "log-probabilities of sampled requests (transformers reports them after temperature and top_p)"
    if prefill_limit and prompt_tokens > prefill_limit:
        return f"prompts over {prefill_limit} tokens (ctranslate2 reads them past the sliding window differently)"
    return None


def plan_batches(lengths: Sequence[int], max_tokens: int, batch_size: int) -> list[list[int]]:
    """Split prompts sorted by token length into batches of at most `batch_size`.

    ctranslate2 forwards a batch's prompts at once only up to the shortest one's length; the rest of each longer
    prompt goes through the decoding loop one token per step, as slowly as generating. So a batch also ends where
    a prompt is longer than its first by more than a quarter of the tokens to generate (at least 8): a few
    smaller batches cost less than hundreds of such steps (judge prompts differ by hundreds of tokens and ask
    for 16; measured, 12 of them took 13x longer as one batch than one by one)."""
    slack = max(8, max_tokens // 4)
    batches: list[list[int]] = []
    for position, length in enumerate(lengths):
        if batches and len(batches[-1]) < batch_size and length - lengths[batches[-1][0]] <= slack:
            batches[-1].append(position)
        else:
            batches.append([position])
    return batches


def _seeded(request: Request) -> bool:
    """Sampled with a seed: such a batch needs a Generator of its own (see CT2Model._reseed)."""
    return request.temperature > 0 and request.seed is not None


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class _Batch:
    """One generate_batch call: its rows (indexes into the stream's requests) and what the callback collects."""

    indexes: list[int]
    requests: list[Request]
    ids: list[list[int]]
    # rows longer than the shortest prompt feed the rest of their prompt through the decoding loop: the callback
    # and the logits number a row's steps from the start of that rest, `forced` steps before its answer (the
    # returned sequences hold those steps only when the shortest prompt is one token, in ctranslate2 4.8), so the
    # answer is taken from the callback
    forced: list[int] = field(init=False)
    answers: list[list[int]] = field(init=False)
    started: float = 0.0
    pending: list = field(default_factory=list)  # ctranslate2's AsyncGenerationResult per row

    def __post_init__(self) -> None:
        shortest = min(len(x) for x in self.ids)
        self.forced = [len(x) - shortest for x in self.ids]
        self.answers = [[] for _ in self.requests]


class CT2Model(Model):
    """A model converted for ctranslate2 (see ct2_convert), with its transformers model as the reference path."""

    def __init__(self, model_dir: Path, tokenizer, marker: dict, spec: str, options: BackendOptions, device: str,
                 compute_type: str, reference: Callable[[], LocalModel]):
        self.model_dir = model_dir
        self.tokenizer = tokenizer
        self.eos_ids = list(marker["eos_token_ids"])
        self.prefill_limit = marker.get("prefill_limit")
        self.spec = spec
        self.options = options
        self.device = device
        self.compute_type = compute_type
        self.workers = _cores() if device == "cpu" else 1
        self.engine = f"ctranslate2 {compute_type}"
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self._make_reference = reference
        self._reference: LocalModel | None = None
        self._told: set[str] = set()  # fallback reasons already printed
        self._lock = threading.Lock()  # one stream at a time: serve calls in from worker threads
        self.tokens = {"prompt_tokens": 0, "completion_tokens": 0}
        self._generator = self._load()

    @classmethod
    def from_dir(cls, path: str, spec: str, options: BackendOptions, quantize: bool) -> CT2Model:
        """Convert once (raises ct2_convert.Unsupported for a model ctranslate2 cannot run the same way) and load
        with int8 weights (`quantize`) or in transformers' own precision (float32 on CPU, bfloat16 on CUDA)."""
        from apprentice.models.ct2_convert import ct2_model_dir
        from apprentice.models.local import pick_device

        model_dir, marker = ct2_model_dir(path, spec)
        device = pick_device(options.device)
        if device.startswith("cuda"):
            compute_type = "int8_bfloat16" if quantize else "bfloat16"
        else:
            compute_type = "int8" if quantize else "float32"
        tokenizer = load_tokenizer(path, spec)
        return cls(model_dir, tokenizer, marker, spec, options, device, compute_type,
                   lambda: LocalModel.from_dir(path, spec, options))

    def _load(self):
        import ctranslate2

        kind, _, index = self.device.partition(":")
        if kind == "cpu":
            threads = dict(inter_threads=self.workers, intra_threads=1)
        else:
            threads = {}
        return ctranslate2.Generator(str(self.model_dir), device=kind, device_index=int(index or 0),
                                     compute_type=self.compute_type, **threads)

    @property
    def stats(self) -> dict:
        if self._reference is None:
            return dict(self.tokens)
        return {k: v + self._reference.tokens.get(k, 0) for k, v in self.tokens.items()}

    def render(self, request: Request) -> str:
        return render_prompt(self.tokenizer, request)

    def reference(self) -> LocalModel:
        if self._reference is None:
            self._reference = self._make_reference()
        return self._reference

    def stream(self, requests: Sequence[Request]) -> Iterator[tuple[int, Completion]]:
        ids = [self._encode(r, self.render(r)) for r in requests]
        reasons = [fallback_reason(r, len(x), self.prefill_limit) for r, x in zip(requests, ids)]
        slow = [i for i, reason in enumerate(reasons) if reason]
        if slow:
            for reason in dict.fromkeys(reasons[i] for i in slow).keys() - self._told:
                print(f"{self.spec}: requests with {reason} run on transformers", file=sys.stderr, flush=True)
                self._told.add(reason)
            for k, completion in self.reference().stream([requests[i] for i in slow]):
                yield slow[k], completion
        batches = self._plan([i for i, reason in enumerate(reasons) if not reason], requests, ids)
        with self._lock:
            yield from self._run_parallel([b for b in batches if not _seeded(b.requests[0])])
            for batch in (b for b in batches if _seeded(b.requests[0])):
                self._reseed(batch.requests[0].seed)
                yield from self._run_parallel([batch])

    def _plan(self, chosen: list[int], requests: Sequence[Request], ids: list[list[int]]) -> list[_Batch]:
        def settings(i: int) -> tuple:
            r = requests[i]
            # chat and plain prompts are encoded differently (special tokens), so they never share a batch
            return (r.is_chat, r.temperature, r.top_p, r.stop, r.logprobs or 0, r.seed is None, r.seed or 0)

        batches = []
        for _, group in groupby(sorted(chosen, key=lambda i: (settings(i), len(ids[i]))), key=settings):
            indexes = list(group)
            size = self.options.batch_size
            if not _seeded(requests[indexes[0]]):  # as many batches for each core (seeded ones run one at a time)
                count = math.ceil(math.ceil(len(indexes) / size) / self.workers) * self.workers
                size = math.ceil(len(indexes) / count)
            longest = max(requests[i].max_tokens for i in indexes)
            for rows in plan_batches([len(ids[i]) for i in indexes], longest, size):
                members = [indexes[k] for k in rows]
                batches.append(_Batch(members, [requests[i] for i in members], [ids[i] for i in members]))
        return batches

    def _encode(self, request: Request, prompt: str) -> list[int]:
        # a chat template writes its own special tokens; a plain prompt gets the tokenizer's (Gemma's BOS)
        add_special = not (request.is_chat and self.has_chat_template)
        return self.tokenizer(prompt, add_special_tokens=add_special).input_ids

    def _run_parallel(self, batches: list[_Batch]) -> Iterator[tuple[int, Completion]]:
        """Keep one batch per worker in flight, yielding each batch's rows as it finishes."""
        waiting, running = list(batches), []
        while waiting or running:
            while waiting and len(running) < self.workers:
                running.append(self._start(waiting.pop(0)))
            done = [b for b in running if all(r.done() for r in b.pending)]
            if not done:
                time.sleep(POLL_S)
                continue
            for batch in done:
                running.remove(batch)
                yield from zip(batch.indexes, self._finish(batch))

    def _start(self, batch: _Batch) -> _Batch:
        first = batch.requests[0]

        def on_token(step) -> bool:
            row = step.batch_id
            if step.step < batch.forced[row]:
                return False
            answer = batch.answers[row]
            answer.append(step.token_id)
            if len(answer) >= batch.requests[row].max_tokens:
                return True
            return bool(first.stop) and holds_stop(self.tokenizer, answer, first.stop)

        sample = first.temperature > 0
        batch.started = time.monotonic()
        batch.pending = self._generator.generate_batch(
            [self.tokenizer.convert_ids_to_tokens(x) for x in batch.ids],
            asynchronous=True,
            max_length=max(f + r.max_tokens for f, r in zip(batch.forced, batch.requests)),
            include_prompt_in_result=False,
            end_token=self.eos_ids,
            return_end_token=True,
            return_logits_vocab=bool(first.logprobs),
            sampling_topk=0 if sample else 1,  # 0: the whole vocabulary, as transformers' top_k=0
            sampling_topp=first.top_p if sample else 1.0,
            sampling_temperature=first.temperature if sample else 1.0,
            callback=on_token,
        )
        return batch

    def _finish(self, batch: _Batch) -> list[Completion]:
        import numpy as np

        results = [r.result() for r in batch.pending]
        seconds = time.monotonic() - batch.started
        completions = []
        for row, (request, result) in enumerate(zip(batch.requests, results)):
            top = None
            if request.logprobs:
                logits = np.asarray(result.logits[0])[batch.forced[row]].astype(np.float64)  # forced steps first
                logprobs = logits - np.logaddexp.reduce(logits)
                best = np.argsort(-logprobs, kind="stable")[: request.logprobs]
                top = {self.tokenizer.decode([int(i)]): float(logprobs[i]) for i in best}
            completion = finish_completion(self.tokenizer, request, batch.answers[row], self.eos_ids,
                                           len(batch.ids[row]), top, seconds)
            completions.append(completion)
            self.tokens["prompt_tokens"] += completion.prompt_tokens
            self.tokens["completion_tokens"] += completion.completion_tokens
        return completions

    def _reseed(self, seed: int) -> None:
        """Restart sampling from `seed`, as transformers' `torch.manual_seed` does before each seeded batch.
        ctranslate2 4.x draws from a thread-local generator that is seeded once, at its first draw, from the last
        `set_random_seed`; its worker threads live as long as the Generator, so only a new Generator starts over."""
        import ctranslate2

        ctranslate2.set_random_seed(seed)
        self._generator = None  # free the old weights before loading the new ones
        self._generator = self._load()

"""The one generation interface every stage uses: a batch of `Request`s in, `Completion`s out.

A backend subclasses `Model` and implements `stream`, which yields (index, Completion) pairs as results finish
(in any order); `generate` collects them in request order. Streaming lets long runs save each answer the moment it
arrives, so a kill loses only the requests in flight.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property


@dataclass(frozen=True)
class Request:
    """A chat request (`messages`) or a plain completion request (`prompt`); exactly one is set."""

    prompt: str | None = None
    messages: tuple[dict, ...] | None = None
    max_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    logprobs: int | None = None  # ask servers for the top-N log-probabilities of the first tokens

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a Request needs exactly one of prompt= or messages=")
        if self.messages is not None and not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(self.messages))
        if not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def to_json(self) -> dict:
        data = asdict(self)
        data["messages"] = list(self.messages) if self.messages is not None else None
        data["stop"] = list(self.stop)
        return data

    def key(self) -> str:
        """A stable hash of everything that determines the answer (used by the response cache)."""
        return self._key

    @cached_property
    def _key(self) -> str:  # computed once: the cache, the call record and the run's records all ask for it
        blob = json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


FAILED = "error"  # a request that failed after its retries (`BackendOptions.keep_going`): no text, raw["error"]


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string), "length" (max_tokens reached) or FAILED
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    # top log-probabilities of the first generated token, {token_text: logprob}, when the backend returns them
    top_logprobs: dict[str, float] | None = None
    raw: dict = field(default_factory=dict)  # the backend's raw response, for the record
    # wall seconds the backend spent on it: one HTTP request with its retries (shared by the prompts sent together),
    # or one local batch; time spent waiting for a free slot is not part of it
    seconds: float | None = None

    def to_record(self) -> dict:
        """The fields worth storing (not `cached`), without copying `raw` as `dataclasses.asdict` would."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cached"}


ProgressCallback = Callable[[int, Completion], None]


class Model(ABC):
    """A text generator behind one spec string (`openai:…`, `hf:…`, `gguf:…`, `bundled:…`)."""

    spec: str

    @abstractmethod
    def stream(self, requests: Sequence[Request]) -> Iterator[tuple[int, Completion]]:
        """Yield (index into requests, completion) as each finishes, in any order."""

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        for index, completion in self.stream(requests):
            results[index] = completion
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Release connections or memory; the default holds nothing."""

    def status_text(self) -> str:
        """A short line on work the server holds for this model that no answer shows yet (a Batch API batch's
        progress), for progress displays; empty for backends that answer as they go."""
        return ""

    @property
    def stats(self) -> dict:
        """Counters worth reporting (requests, retries, tokens); backends add their own."""
        return {}


@dataclass
class BackendOptions:
    """Settings that apply to whichever backend a spec picks; each backend reads the ones it understands."""

    concurrency: int = 8  # HTTP: requests in flight at once
    prompts_per_request: int = 1  # HTTP completion API: up to this many prompts with equal settings in one request
    timeout: float = 120.0  # HTTP: seconds per request before it is retried
    max_retries: int = 6  # HTTP: tries after the first on 429/5xx/timeouts/dropped connections
    batch_size: int = 16  # local: sequences generated together
    device: str | None = None  # local: "cpu", "cuda", ...; default picks CUDA when present
    # HTTP: a request that still fails after its retries comes back as a Completion with finish_reason FAILED (and
    # the error in raw) instead of stopping the stream; a wrong model name or key still raises at once
    keep_going: bool = False
    # openai: send requests through the Batch API (half price, answers within 24 hours) instead of one by one; a
    # stream's requests go as one batch (split at the API's limits), and `max_retries` bounds the resubmissions of
    # lines that expired or failed
    batch: bool = False
    # HTTP: requests and tokens (prompt plus max_tokens) per minute, shared by every request of the model; providers
    # refuse what goes above their limits with 429s, which cost retries and time. None: no limit of our own (the
    # server's x-ratelimit-* headers are followed all the same); see models/ratelimit.py
    rpm: float | None = None
    tpm: float | None = None
    # local: auto | transformers | ctranslate2 | ctranslate2-int8; auto runs ctranslate2 with int8 weights on a CPU
    # when the model converts to it faithfully, else transformers (see models/engine.py)
    engine: str = "auto"

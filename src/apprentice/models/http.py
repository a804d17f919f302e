"""OpenAI-compatible HTTP backend (OpenAI, vLLM, llama.cpp's llama-server, Ollama, `apprentice serve`).

Async httpx under a synchronous `stream()`: one event loop thread per model whose `concurrency` slot workers send the
requests of every `stream` call, from any thread (so that many threads share one bound on requests in flight); with
the completion API, a worker can send several waiting prompts with equal settings as one request. Retries with
exponential backoff and jitter on 429/5xx/timeouts/dropped connections (honouring Retry-After), no retry on other
4xx, and requests spread round-robin over several base URLs, skipping one that just failed. `--rpm`/`--tpm` and the
server's x-ratelimit-* headers pace the requests (models/ratelimit.py).
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import queue
import random
import ssl
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import httpx

from apprentice.errors import BackendError, RetriesExhausted, UserError
from apprentice.models.base import FAILED, BackendOptions, Completion, Model, Request
from apprentice.models.ratelimit import RateLimiter, Ticket
from apprentice.models.spec import DEFAULT_OPENAI_URL, ModelSpec

RETRY_STATUSES = {408, 409, 425, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 120.0
BATCH_LINGER_S = 0.02  # with several prompts per request: how long a free slot waits for the request to fill
UNHEALTHY_FOR_S = 5.0  # a base URL that just failed is skipped for this long while others remain
_SSL_CONTEXT: ssl.SSLContext | None = None


def shared_ssl_context() -> ssl.SSLContext:
    """One SSL context for every client: building one loads the CA bundle, 40-90 ms of CPU each time."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return _SSL_CONTEXT


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class HttpStats:
    requests: int = 0  # HTTP attempts, retries included
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # retryable failures by kind
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER_S))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), MAX_RETRY_AFTER_S))


def backoff_delay(attempt: int, base: float = 0.5) -> float:
    """Exponential backoff with jitter: about base * 2^attempt, randomised to spread retries of many clients."""
    delay = min(MAX_BACKOFF_S, base * (2**attempt))
    return delay * (0.5 + random.random() / 2)


def request_body(model: str, requests: Sequence[Request]) -> tuple[str, dict]:
    """The endpoint path and JSON body for one HTTP request: one request, or several completion requests with the
    same settings sent as one list of prompts (see `batchable`)."""
    request = requests[0]
    body: dict = {"model": model, "max_tokens": request.max_tokens, "temperature": request.temperature,
                  "top_p": request.top_p}
    if request.stop:
        body["stop"] = list(request.stop)
    if request.seed is not None:
        body["seed"] = request.seed
    if request.presence_penalty:
        body["presence_penalty"] = request.presence_penalty
    if request.is_chat:
        body["messages"] = list(request.messages or ())
        if request.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = request.logprobs
        return "/chat/completions", body
    body["prompt"] = request.prompt if len(requests) == 1 else [r.prompt for r in requests]
    if request.logprobs:
        body["logprobs"] = request.logprobs
    return "/completions", body


def batchable(first: Request, other: Request) -> bool:
    """Whether two requests can share one HTTP request: completion requests that differ only in their prompt."""
    return not first.is_chat and not other.is_chat and replace(other, prompt=first.prompt) == first


def parse_response(requests: Sequence[Request], data: dict) -> list[Completion]:
    """Turn an OpenAI-style JSON response into one Completion per request (choices are matched by their `index`);
    raises KeyError/TypeError/IndexError/ValueError when malformed. Usage is reported per HTTP request, so with
    several prompts each completion gets an equal share (the totals stay exact)."""
    choices = data["choices"]
    if len(requests) > 1:
        choices = sorted(choices, key=lambda choice: int(choice["index"]))
        if [int(choice["index"]) for choice in choices] != list(range(len(requests))):
            raise ValueError(f"expected choices 0-{len(requests) - 1}")
    usage = data.get("usage") or {}
    prompt_shares = _shares(int(usage.get("prompt_tokens") or 0), len(requests))
    completion_shares = _shares(int(usage.get("completion_tokens") or 0), len(requests))
    return [_completion(request, choices[i], prompt_shares[i], completion_shares[i], data)
            for i, request in enumerate(requests)]


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _completion(request: Request, choice: dict, prompt_tokens: int, completion_tokens: int, data: dict) -> Completion:
    top: dict[str, float] | None = None
    if request.is_chat:
        text = choice["message"].get("content") or ""
        content = (choice.get("logprobs") or {}).get("content") or []
        if content and content[0].get("top_logprobs"):
            top = {item["token"]: float(item["logprob"]) for item in content[0]["top_logprobs"]}
    else:
        text = choice["text"]
        entries = (choice.get("logprobs") or {}).get("top_logprobs") or []
        if entries and entries[0]:
            top = {token: float(lp) for token, lp in entries[0].items()}
    if not isinstance(text, str):
        raise TypeError("choice text is not a string")
    return Completion(
        text=text,
        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        top_logprobs=top,
        raw=data,
    )


def _error_detail(response: httpx.Response) -> str:
    try:
        data = response.json()
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message") if isinstance(error, dict) else error
        return str(message or response.text)[:300]
    except ValueError:
        return response.text[:300]


class _Sender:
    """The event-loop side of an `OpenAIModel`: `concurrency` slot workers, each with a small client of its own, take
    waiting requests and send them (with retries), which bounds the HTTP requests in flight across all stream calls.
    Everything here runs on the model's one loop thread, so the counters and URL health need no lock. It holds no
    reference to the model, so a model dropped without `close()` is still collected, and its finalizer stops the loop.

    Why a client per slot rather than one client with `concurrency` connections: httpcore's pool checks every one of
    its connections each time it places a request, so its cost per request grows with the pool (at 32 in flight that
    bookkeeping was most of the backend's CPU); a client per slot keeps it constant."""

    def __init__(self, model: str, base_urls: list[str], api_key: str | None, options: BackendOptions):
        self.model = model
        self.base_urls = base_urls
        self.api_key = api_key
        self.options = options
        self.stats = HttpStats()
        self._next_url = 0
        self._unhealthy_until: dict[str, float] = {}
        # made on the loop by `start`: requests waiting for a slot, the slot workers with their clients, the limiter
        self._ready: asyncio.Condition | None = None
        self._limiter: RateLimiter | None = None
        self._waiting: deque[tuple[Request, Future]] = deque()
        self._workers: list[tuple[asyncio.Task, httpx.AsyncClient]] = []

    async def start(self) -> None:
        """Make the workers on the running loop (the model's loop thread)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        connections = len(self.base_urls)  # a slot keeps a connection to each URL it has used
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._ready = asyncio.Condition()
        self._limiter = RateLimiter(self.options.rpm, self.options.tpm)
        for _ in range(self.options.concurrency):
            client = httpx.AsyncClient(timeout=httpx.Timeout(self.options.timeout), limits=limits, headers=headers,
                                       verify=shared_ssl_context())
            self._workers.append((asyncio.create_task(self._work(client)), client))

    async def enqueue(self, items: list[tuple[Request, Future]]) -> None:
        async with self._ready:
            self._waiting.extend(items)
            self._ready.notify(len(items))  # one worker per request: waking all of them costs more than the work

    async def stop(self) -> None:
        for task, _ in self._workers:
            task.cancel()
        await asyncio.gather(*(task for task, _ in self._workers), return_exceptions=True)
        await asyncio.gather(*(client.aclose() for _, client in self._workers))
        self._workers = []  # `start` may run again, on a new loop: a closed model starts afresh when used
        while self._waiting:
            _, future = self._waiting.popleft()
            if future.set_running_or_notify_cancel():
                future.set_exception(self._closed_error())

    async def _next_group(self) -> list[tuple[Request, Future]]:
        """The oldest waiting request, with up to `prompts_per_request - 1` batchable ones queued behind it
        (requests whose stream was left are dropped here)."""
        per_request = self.options.prompts_per_request
        async with self._ready:
            await self._ready.wait_for(lambda: self._waiting)
            if per_request > 1 and len(self._waiting) < per_request:
                # Prompts arrive one by one as the caller plans them from the answers just in: a worker that sent
                # the first at once would send half-empty requests ever after
                try:
                    await asyncio.wait_for(self._ready.wait_for(lambda: len(self._waiting) >= per_request),
                                           BATCH_LINGER_S)
                except TimeoutError:
                    pass  # send what there is
            group: list[tuple[Request, Future]] = []
            while self._waiting and len(group) < per_request:
                request, future = self._waiting[0]
                if group and not batchable(group[0][0], request):
                    break
                self._waiting.popleft()
                if future.set_running_or_notify_cancel():
                    group.append((request, future))
            return group

    async def _work(self, client: httpx.AsyncClient) -> None:
        while True:
            group = await self._next_group()
            futures = [future for _, future in group]
            try:
                completions = await self._complete(client, [request for request, _ in group]) if group else []
            except asyncio.CancelledError:  # the model is closing: nobody must wait for these forever
                for future in futures:
                    future.set_exception(self._closed_error())
                raise
            except Exception as exc:  # noqa: BLE001 - handed to the thread that streams these requests
                for future in futures:
                    future.set_exception(exc)
            else:
                for future, completion in zip(futures, completions):
                    future.set_result(completion)

    def _closed_error(self) -> BackendError:
        return BackendError(f"openai:{self.model} was closed while requests were in flight")

    def _pick_url(self) -> str:
        now = time.monotonic()
        for _ in range(len(self.base_urls)):
            url = self.base_urls[self._next_url % len(self.base_urls)]
            self._next_url += 1
            if self._unhealthy_until.get(url, 0.0) <= now:
                return url
        return min(self.base_urls, key=lambda u: self._unhealthy_until.get(u, 0.0))

    async def _attempt(self, client: httpx.AsyncClient, url: str, requests: Sequence[Request],
                       ticket: Ticket | None) -> list[Completion]:
        path, body = request_body(self.model, requests)
        self.stats.requests += 1
        try:
            response = await client.post(url + path, json=body)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out after {self.options.timeout:g} s ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__}: {exc})") from exc
        self._limiter.observe(response.status_code, response.headers, ticket)
        if response.status_code in RETRY_STATUSES:
            raise _Retryable(
                f"HTTP {response.status_code}: {_error_detail(response)}",
                parse_retry_after(response.headers.get("retry-after")),
            )
        if response.status_code >= 400:
            hint = {401: " (check OPENAI_API_KEY)", 403: " (check OPENAI_API_KEY)",
                    404: f" (is the model name {self.model!r} right, and the URL the /v1 base?)"}
            if len(requests) > 1 and response.status_code in (400, 422):
                hint[response.status_code] = " (does this server take a list of prompts? try --prompts-per-request 1)"
            raise BackendError(
                f"{url}{path} answered HTTP {response.status_code}: {_error_detail(response)}"
                f"{hint.get(response.status_code, '')}"
            )
        try:
            completions = parse_response(requests, response.json())
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise _Retryable(f"malformed response ({type(exc).__name__}): {response.text[:120]!r}") from exc
        if ticket is not None:
            self._limiter.settle(ticket, completions)
        return completions

    async def _complete(self, client: httpx.AsyncClient, requests: Sequence[Request]) -> list[Completion]:
        started: float | None = None
        last_error = ""
        for attempt in range(self.options.max_retries + 1):
            ticket: Ticket | None = None
            if self._limiter.active:
                ticket = await self._limiter.acquire(requests)
            else:  # nothing limits yet: no waiting, only a count, which a limit learnt later pays back
                self._limiter.skip()
            if started is None:  # waiting for the rate limit, like waiting for a slot, is not the request's time
                started = time.monotonic()
            url = self._pick_url()
            try:
                completions = await self._attempt(client, url, requests, ticket)
            except _Retryable as exc:
                last_error = f"{url}: {exc}"
                self.stats.count_error(str(exc).split(":")[0].split(" (")[0])
                self._unhealthy_until[url] = time.monotonic() + UNHEALTHY_FOR_S
                if attempt == self.options.max_retries:
                    break
                self.stats.retries += 1
                await asyncio.sleep(exc.retry_after if exc.retry_after is not None else backoff_delay(attempt))
                continue
            self._unhealthy_until.pop(url, None)
            seconds = time.monotonic() - started
            for completion in completions:
                completion.seconds = seconds
                self.stats.prompt_tokens += completion.prompt_tokens
                self.stats.completion_tokens += completion.completion_tokens
            return completions
        raise RetriesExhausted(f"request failed after {self.options.max_retries + 1} tries; last error: {last_error}")


class OpenAIModel(Model):
    """A model behind one or more OpenAI-compatible base URLs."""

    def __init__(self, model: str, base_urls: Sequence[str], api_key: str | None, options: BackendOptions):
        self.model = model
        self.base_urls = list(base_urls)
        self.options = options
        self.spec = f"openai:{model}@{','.join(self.base_urls)}"
        self._sender = _Sender(model, self.base_urls, api_key, options)
        self._start_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None  # started on first use by `_ensure_started`
        self._finalizer: weakref.finalize | None = None  # runs `_shut_down` once

    @classmethod
    def from_spec(cls, spec: ModelSpec, options: BackendOptions) -> OpenAIModel:
        urls = spec.base_urls or (os.environ.get("OPENAI_BASE_URL", DEFAULT_OPENAI_URL).rstrip("/"),)
        api_key = os.environ.get("OPENAI_API_KEY")
        if not api_key and any(url.startswith(DEFAULT_OPENAI_URL) for url in urls):
            raise UserError("OPENAI_API_KEY is not set: export it, or give a local server as openai:MODEL@URL")
        return cls(spec.target, urls, api_key, options)

    @property
    def stats(self) -> dict:
        s = self._sender.stats
        return {"http_requests": s.requests, "retries": s.retries, "retryable_errors": dict(s.errors),
                "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens}

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        """Start the event loop thread and the slot workers on first use; later calls reuse them, so a stream call
        costs a few queue operations, not a new thread, loop, client and connection pool."""
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="apprentice-http", daemon=True)
                thread.start()
                asyncio.run_coroutine_threadsafe(self._sender.start(), loop).result()
                self._finalizer = weakref.finalize(self, _shut_down, loop, thread, self._sender)
                self._loop = loop
            return self._loop

    def stream(self, requests: Sequence[Request]) -> Iterator[tuple[int, Completion]]:
        if not requests:
            return
        loop = self._ensure_started()
        out: queue.Queue = queue.Queue()
        futures: list[Future] = [Future() for _ in requests]
        for index, future in enumerate(futures):
            future.add_done_callback(lambda f, i=index: out.put((i, f)))
        asyncio.run_coroutine_threadsafe(self._sender.enqueue(list(zip(requests, futures))), loop)
        try:
            for _ in requests:
                index, future = out.get()
                try:
                    completion = future.result()  # re-raises the request's error in the consuming thread
                except RetriesExhausted as exc:
                    if not self.options.keep_going:
                        raise
                    completion = Completion("", FAILED, raw={"error": str(exc)})
                yield index, completion
        finally:
            for future in futures:  # a stream left early (or failed) drops its requests still waiting for a slot
                future.cancel()

    def close(self) -> None:
        with self._start_lock:
            if self._loop is not None:
                self._finalizer()
                self._loop = None


def _shut_down(loop: asyncio.AbstractEventLoop, thread: threading.Thread, sender: _Sender) -> None:
    """Stop the slot workers (failing the requests they hold), close their clients, end the loop thread. Runs once:
    from `close()`, or when a model that was never closed is collected or the interpreter exits."""
    if threading.current_thread() is thread:  # collected on the loop thread itself: it cannot wait for itself
        loop.create_task(sender.stop()).add_done_callback(lambda _: loop.stop())
        return
    try:
        asyncio.run_coroutine_threadsafe(sender.stop(), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()

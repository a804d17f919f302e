"""An OpenAI-compatible server over a local model: /v1/models, /v1/chat/completions, /v1/completions, and the Batch
API (/v1/files, /v1/batches: models/serve_batch.py), so a local model can stand in for OpenAI in batch mode too.

Run it with `apprentice serve --model SPEC --port 8000`, then point any OpenAI client (or `--teacher
openai:NAME@http://127.0.0.1:8000/v1`) at it. Requests that arrive together are generated as one batch: a single
worker thread drains the queue, waiting a few milliseconds for company, so concurrent clients share the model.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from fastapi import FastAPI, Request as HttpRequest
from fastapi.responses import JSONResponse, StreamingResponse

from apprentice.models.base import Completion, Model, Request

BATCH_WINDOW_S = 0.01


class Batcher:
    """Collects requests from many connections and runs them through the model in batches on one thread."""

    def __init__(self, model: Model, max_batch: int):
        self.model = model
        self.max_batch = max_batch
        self.queue: queue.Queue[tuple[Request, Future]] = queue.Queue()
        self.batches = 0
        threading.Thread(target=self._work, name="apprentice-batcher", daemon=True).start()

    def submit(self, request: Request) -> Future:
        future: Future = Future()
        self.queue.put((request, future))
        return future

    def _work(self) -> None:
        while True:
            items = [self.queue.get()]
            deadline = time.monotonic() + BATCH_WINDOW_S
            while len(items) < self.max_batch:
                try:
                    items.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self.batches += 1
            try:
                completions = self.model.generate([r for r, _ in items])
            except Exception as exc:  # noqa: BLE001 - every waiting client gets the error
                for _, future in items:
                    future.set_exception(exc)
                continue
            for (_, future), completion in zip(items, completions):
                future.set_result(completion)


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


class BadParameter(ValueError):
    """A request parameter the server cannot honour: answered 400 naming it, as OpenAI does."""

    status, kind = 400, "invalid_request_error"


class UnknownModel(BadParameter):
    status, kind = 404, "not_found_error"


Call = tuple[list[Request], Callable[[list[Completion]], dict]]  # the requests of one call, and its response body


def _number(body: dict, name: str, default: float, low: float, high: float, integer: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise BadParameter(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise BadParameter(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return value


def _sampling(body: dict) -> dict:
    """The request's sampling settings, checked; every parameter the model would change an answer by is honoured
    (presence_penalty included: self-instruct's bootstrap sends 2.0) or refused, never silently dropped."""
    if body.get("n") not in (None, 1):
        raise BadParameter(f"n must be 1 (one answer per prompt), got {body.get('n')!r}")
    stop = body.get("stop") or ()
    stops = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stops, list | tuple) or not all(isinstance(s, str) for s in stops):
        raise BadParameter("stop must be a string or a list of strings")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadParameter(f"seed must be an integer, got {seed!r}")
    limit = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    return dict(
        max_tokens=int(_number(body, limit, 256, 1, 1_000_000, integer=True)),
        temperature=float(_number(body, "temperature", 1.0, 0.0, 2.0)),
        top_p=float(_number(body, "top_p", 1.0, 0.0, 1.0)),
        presence_penalty=float(_number(body, "presence_penalty", 0.0, -2.0, 2.0)),
        stop=tuple(stops),
        seed=seed,
    )


def _usage(completions: list[Completion]) -> dict:
    prompt = sum(c.prompt_tokens for c in completions)
    generated = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


def _chat_call(body: dict, name: str) -> Call:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages
    ):
        raise BadParameter("messages must be a non-empty list of {role, content} objects with string content")
    logprobs = int(_number(body, "top_logprobs", 0, 0, 20, integer=True)) if body.get("logprobs") else None
    request = Request(messages=[{"role": m.get("role", "user"), "content": m["content"]} for m in messages],
                      logprobs=logprobs or None, **_sampling(body))

    def respond(completions: list[Completion]) -> dict:
        [completion] = completions
        choice: dict = {"index": 0, "message": {"role": "assistant", "content": completion.text},
                        "finish_reason": completion.finish_reason}
        if completion.top_logprobs is not None:
            top = [{"token": t, "logprob": lp} for t, lp in completion.top_logprobs.items()]
            choice["logprobs"] = {"content": [{"token": top[0]["token"], "logprob": top[0]["logprob"],
                                               "top_logprobs": top}]}
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": name, "choices": [choice], "usage": _usage([completion])}

    return [request], respond


def _completions_call(body: dict, name: str) -> Call:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadParameter("prompt must be a string or a non-empty list of strings")
    logprobs = int(_number(body, "logprobs", 0, 0, 20, integer=True)) or None
    sampling = _sampling(body)

    def respond(results: list[Completion]) -> dict:
        choices = []
        for index, completion in enumerate(results):
            choice: dict = {"index": index, "text": completion.text, "finish_reason": completion.finish_reason,
                            "logprobs": None}
            if completion.top_logprobs is not None:
                choice["logprobs"] = {"top_logprobs": [completion.top_logprobs]}
            choices.append(choice)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": name, "choices": choices, "usage": _usage(results)}

    return [Request(prompt=p, logprobs=logprobs, **sampling) for p in prompts], respond


ENDPOINTS = {"/v1/chat/completions": _chat_call, "/v1/completions": _completions_call}


def plan_call(endpoint: str, body: object, names: Sequence[str]) -> Call:
    """The requests one call to `endpoint` asks and how to answer it; raises BadParameter (or UnknownModel) for
    what OpenAI would refuse. The online endpoints and the batch worker share it, so both answer alike."""
    if not isinstance(body, dict):
        raise BadParameter("request body must be a JSON object")
    if body.get("model") not in (None, *names):
        raise UnknownModel(f"model {body.get('model')!r} not found; this server has {', '.join(map(repr, names))}")
    return ENDPOINTS[endpoint](body, names[0])


def create_app(model: Model, name: str | Sequence[str], max_batch: int = 16) -> FastAPI:
    """The server's app; `name` is the model name clients send, or several (aliases, as vLLM's
    --served-model-name: tools that choose behaviour by model name need one), the first reported as the id."""
    from apprentice.models.serve_batch import add_batch_routes

    names = [name] if isinstance(name, str) else list(name)
    app = FastAPI(title="apprentice serve", docs_url=None, redoc_url=None)
    batcher = Batcher(model, max_batch)
    created = int(time.time())

    async def answer(endpoint: str, http: HttpRequest) -> tuple[dict, dict | JSONResponse]:
        """The request's body (empty when unreadable) and the response to it."""
        try:
            body = json.loads(await http.body())
        except ValueError:
            return {}, _error(400, "request body is not valid JSON")
        try:
            requests, respond = plan_call(endpoint, body, names)
        except BadParameter as exc:
            return {}, _error(exc.status, str(exc), exc.kind)
        futures = [batcher.submit(r) for r in requests]
        return body, respond(list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))))

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": served, "object": "model", "created": created,
                                            "owned_by": "apprentice"} for served in names]}

    @app.post("/v1/chat/completions")
    async def chat(http: HttpRequest):
        body, response = await answer("/v1/chat/completions", http)
        return _as_event_stream(response) if body.get("stream") else response

    @app.post("/v1/completions")
    async def completions(http: HttpRequest):
        return (await answer("/v1/completions", http))[1]

    add_batch_routes(app, batcher, names)
    app.state.batcher = batcher
    return app


def _as_event_stream(response: dict) -> StreamingResponse:
    """Clients that ask for `stream: true` get the whole answer as one chunk, then [DONE]."""
    choice = response["choices"][0]
    chunk = {**response, "object": "chat.completion.chunk",
             "choices": [{"index": 0, "delta": choice["message"], "finish_reason": choice["finish_reason"]}]}

    def events():
        yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def serve(model: Model, name: str | Sequence[str], host: str, port: int, max_batch: int) -> None:
    import uvicorn

    uvicorn.run(create_app(model, name, max_batch), host=host, port=port, log_level="warning")

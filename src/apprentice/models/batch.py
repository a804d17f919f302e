"""The Batch API backend: an `openai:` model whose `stream` sends the requests it is given as one batch (split at
OpenAI's limits of 50,000 lines and 200 MB a file) and yields their answers when the batch ends. OpenAI charges
half the online price and answers within 24 hours; `apprentice serve` answers at once.

Never paying twice: the call record (models/record.py) holds each uploaded input file with the request keys it
holds, then the batch made from it, each written as soon as the server has answered and before anything else. A
process killed at any point is resumed by the next stream that asks for those requests: it polls the recorded
batch instead of submitting again (a kill while the create call was in flight is mended by finding the batch by its
input file in the server's list). When a batch ends, every answer in its output file is recorded in `calls` in the
transaction that marks it collected, so no answer it bought is lost, even one nobody asks for any more; every batch
of this model still open in the record is polled when a stream starts, and collected once it has ended.

Lines that expired, were cancelled before the stream began, or failed with 429/5xx are resubmitted, alone, up to
`max_retries` times, then come back FAILED (`keep_going`) or raise; a line the server refused (another 4xx) comes
back FAILED or raises at once. A batch cancelled while a stream waits for it (`apprentice generate
--cancel-batches`, the provider's dashboard) ends the stream with a BackendError once its answers are recorded:
cancelling means stop. The next stream submits what it left unanswered.

    model = BatchModel.from_spec(parse_spec("openai:gpt-4o-mini"), BackendOptions(batch=True), Path("calls.sqlite"))
    for index, completion in model.stream(requests): ...
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from apprentice.errors import BackendError, RetriesExhausted, UserError
from apprentice.models.base import FAILED, BackendOptions, Completion, Model, Request
from apprentice.models.batch_api import (CANCELLED, TERMINAL, BatchClient, LineResult, UnknownBatch, describe,
                                         input_line, read_jsonl, read_output_line)
from apprentice.models.record import open_db, record_call, recorded
from apprentice.models.spec import DEFAULT_OPENAI_URL, ModelSpec, model_identity

MAX_LINES = 50_000  # OpenAI's most requests per batch
MAX_BYTES = 190_000_000  # under OpenAI's 200 MB per input file
POLL_FIRST_S = 0.25  # a local server may finish a small batch at once
POLL_MAX_S = 60.0  # OpenAI takes minutes to hours: a poll a minute is plenty
# a batch refused because the organisation's queue of batch tokens is full waits for one of ours to end
QUEUE_FULL = "token_limit_exceeded"


@dataclass
class _Batch:
    """A batch this stream waits for."""

    input_file_id: str
    info: dict  # the batch object as last polled
    keys: set[str] = field(default_factory=set)  # the keys of this stream's requests it holds
    stop_on_cancel: bool = True  # False when it was cancelled (or asked to be) before this stream began


class BatchModel(Model):
    """An `openai:` model over the Batch API, keeping its batches in the call record at `record` under `backend`
    (RecordedModel's key for the same model, so a batch's answers are its recorded calls)."""

    def __init__(self, model: str, base_url: str, api_key: str | None, options: BackendOptions, record: Path,
                 backend: str):
        self.model = model
        self.options = options
        self.record = Path(record)
        self.backend = backend
        self.spec = f"openai:{model}@{base_url}"
        self.client = BatchClient(base_url, api_key, options.timeout, options.max_retries)
        self.counts: Counter = Counter()  # batches, lines submitted, lines resubmitted, tokens
        self._status = ""

    @classmethod
    def from_spec(cls, spec: ModelSpec, options: BackendOptions, record: Path) -> BatchModel:
        # the URL and key as OpenAIModel.from_spec finds them; a batch's files live on one server: the first URL
        url = (spec.base_urls or (os.environ.get("OPENAI_BASE_URL", DEFAULT_OPENAI_URL).rstrip("/"),))[0]
        api_key = os.environ.get("OPENAI_API_KEY")
        if not api_key and url.startswith(DEFAULT_OPENAI_URL):
            raise UserError("OPENAI_API_KEY is not set: export it, or give a local server as openai:MODEL@URL")
        return cls(spec.target, url, api_key, options, record, model_identity(spec))

    @property
    def stats(self) -> dict:
        return {"batches": self.counts["batches"], "batch_lines": self.counts["lines"],
                "resubmitted": self.counts["resubmitted"], "prompt_tokens": self.counts["prompt_tokens"],
                "completion_tokens": self.counts["completion_tokens"]}

    def status_text(self) -> str:
        return self._status

    def close(self) -> None:
        self.client.close()

    def stream(self, requests: Sequence[Request]) -> Iterator[tuple[int, Completion]]:
        if not requests:
            return
        db = open_db(self.record)  # this thread's own connection: a stream may run on a feeder thread
        db.execute("PRAGMA synchronous=FULL")  # a batch id lost to a power cut would be paid again; few commits
        try:
            yield from self._stream(db, requests)
        finally:
            db.close()
            self._status = ""

    def _stream(self, db: sqlite3.Connection, requests: Sequence[Request]) -> Iterator[tuple[int, Completion]]:
        positions: dict[str, list[int]] = {}
        wanted: dict[str, Request] = {}
        for index, request in enumerate(requests):
            positions.setdefault(request.key(), []).append(index)
            wanted.setdefault(request.key(), request)
        waiting = self._open_batches(db)
        for key in list(wanted):  # answered by a batch collected before (or just now)
            answer = recorded(db, self.backend, wanted[key])
            if answer is not None:
                del wanted[key]
                yield from ((index, answer) for index in positions[key])
        for batch in waiting:
            batch.keys &= wanted.keys()
        waiting = [batch for batch in waiting if batch.keys]
        held = set().union(*(batch.keys for batch in waiting))
        waiting += self._submit(db, [request for key, request in wanted.items() if key not in held])
        tries: Counter = Counter()
        queued: list[Request] = []  # refused while the organisation's batch queue was full: sent when one ends
        refused: dict = {}  # the last batch refused so
        delay = POLL_FIRST_S
        while waiting:
            self._status = describe([batch.info for batch in waiting])
            time.sleep(delay)
            delay = min(POLL_MAX_S, 2 * delay)
            for batch in list(waiting):
                batch.info = self._poll(batch.info["id"])
                status = batch.info["status"]
                if status not in TERMINAL:
                    continue
                waiting.remove(batch)
                results = self._collect(db, batch)
                if status == "failed":
                    if not (_queue_full(batch.info) and waiting):
                        raise BackendError(_failure(batch.info))
                    queued += [wanted[key] for key in batch.keys]
                    refused = batch.info
                    continue
                settled, again = self._settle(batch, results, wanted, tries)
                for key, completion in settled:
                    del wanted[key]
                    yield from ((index, completion) for index in positions[key])
                if status == "cancelled" and batch.stop_on_cancel:
                    raise BackendError(f"batch {batch.info['id']} was cancelled; the answers it finished are "
                                       f"recorded in {self.record}; rerun to submit the rest")
                self.counts["resubmitted"] += len(again)
                if again or queued:
                    waiting += self._submit(db, again + queued)
                    queued, delay = [], POLL_FIRST_S
            if not waiting and queued:  # every batch of ours ended and the queue is still too full for these
                raise BackendError(_failure(refused))

    def _settle(self, batch: _Batch, results: dict[str, LineResult], wanted: dict[str, Request],
                tries: Counter) -> tuple[list[tuple[str, Completion]], list[Request]]:
        """What an ended batch means for the requests of this stream it held: the answers (and final failures) to
        hand out, by key, and the requests to submit again. A batch cancelled during the stream settles only its
        answers: the rest is left for a rerun."""
        status = batch.info["status"]
        settled: list[tuple[str, Completion]] = []
        again: list[Request] = []
        for key in sorted(batch.keys & wanted.keys()):
            result = results.get(key) or LineResult(error=f"not answered: the batch {status}")
            if result.completion is not None:
                settled.append((key, result.completion))
            elif status == "cancelled" and batch.stop_on_cancel:
                continue
            elif result.retryable and tries[key] < self.options.max_retries:
                tries[key] += 1
                again.append(wanted[key])
            elif self.options.keep_going:
                settled.append((key, Completion("", FAILED, raw={"error": f"batch {batch.info['id']}: "
                                                                           f"{result.error}"})))
            else:
                error = RetriesExhausted if result.retryable else BackendError
                raise error(f"a request failed in batch {batch.info['id']} (after {tries[key]} resubmissions): "
                            f"{result.error}")
        return settled, again

    def _open_batches(self, db: sqlite3.Connection) -> list[_Batch]:
        """Poll every batch of this model the record holds open: collect those that ended; the others, with the
        keys they hold (the caller keeps those it wants)."""
        rows = db.execute("SELECT input_file_id, batch_id, endpoint, cancel_requested FROM batches "
                          "WHERE backend = ? AND collected IS NULL ORDER BY created", (self.backend,)).fetchall()
        waiting = []
        for input_file_id, batch_id, endpoint, cancel_requested in rows:
            info = self._find_or_create(db, input_file_id, endpoint) if batch_id is None else self._poll(batch_id)
            keys = {key for (key,) in db.execute("SELECT key FROM batch_lines WHERE input_file_id = ?",
                                                 (input_file_id,))}
            batch = _Batch(input_file_id, info, keys, stop_on_cancel=not cancel_requested
                           and info["status"] not in CANCELLED)
            if info["status"] in TERMINAL:  # a failed one made nothing: its requests are submitted again
                self._collect(db, batch)
            else:
                waiting.append(batch)
        return waiting

    def _poll(self, batch_id: str) -> dict:
        try:
            return self.client.get(batch_id)
        except UnknownBatch:
            raise UnknownBatch(f"the server does not know batch {batch_id}, which {self.record} records as in "
                               "flight (another API key or project? a restarted server?); `apprentice generate "
                               "--cancel-batches OUT` forgets it, so that its requests are submitted again") from None

    def _find_or_create(self, db: sqlite3.Connection, input_file_id: str, endpoint: str) -> dict:
        """The batch of a file uploaded by a process killed before it recorded the batch: made by the create call
        in flight at the kill, or never made (then made now: nothing was paid for it)."""
        info = self.client.find(input_file_id) or self.client.create(input_file_id, endpoint)
        with db:
            db.execute("UPDATE batches SET batch_id = ?, status = ? WHERE input_file_id = ?",
                       (info["id"], info["status"], input_file_id))
        return info

    def _submit(self, db: sqlite3.Connection, requests: Sequence[Request]) -> list[_Batch]:
        """Upload and create batches for `requests`, one per endpoint and chunk, recording each step at once."""
        groups: dict[str, list[tuple[Request, bytes]]] = {}
        for request in requests:
            url, line = input_line(self.model, request)
            groups.setdefault(url, []).append((request, (json.dumps(line, ensure_ascii=False) + "\n").encode()))
        made = []
        for endpoint, lines in groups.items():
            for chunk in _chunks(lines):
                input_file_id = self.client.upload(b"".join(data for _, data in chunk))
                with db:
                    db.execute("INSERT INTO batches (input_file_id, backend, endpoint, status, created) VALUES "
                               "(?, ?, ?, 'uploaded', ?)", (input_file_id, self.backend, endpoint, time.time()))
                    db.executemany("INSERT OR IGNORE INTO batch_lines (input_file_id, key, request) VALUES (?, ?, ?)",
                                   [(input_file_id, request.key(), json.dumps(request.to_json(), ensure_ascii=False))
                                    for request, _ in chunk])
                info = self.client.create(input_file_id, endpoint)
                with db:  # the batch id, before anything else: from here on a restart polls it
                    db.execute("UPDATE batches SET batch_id = ?, status = ? WHERE input_file_id = ?",
                               (info["id"], info["status"], input_file_id))
                self.counts["batches"] += 1
                self.counts["lines"] += len(chunk)
                made.append(_Batch(input_file_id, info, {request.key() for request, _ in chunk}))
        return made

    def _collect(self, db: sqlite3.Connection, batch: _Batch) -> dict[str, LineResult]:
        """Read an ended batch's output and error files; record every answer and mark the batch collected, in one
        transaction. Returns what each line said, by key."""
        info = batch.info
        lines = [line for file_id in (info.get("output_file_id"), info.get("error_file_id")) if file_id
                 for line in read_jsonl(self.client.content(file_id))]
        requests = {key: Request(**json.loads(text)) for key, text in db.execute(
            "SELECT key, request FROM batch_lines WHERE input_file_id = ?", (batch.input_file_id,))}
        seconds = max(0.0, time.time() - float(info.get("created_at") or time.time()))
        results: dict[str, LineResult] = {}
        with db:
            for line in lines:
                request = requests.get(str(line.get("custom_id")))
                if request is None:
                    continue
                result = read_output_line(line, request)
                if result.completion is not None:
                    result.completion.seconds = seconds
                    record_call(db, self.backend, request, result.completion, seconds, batch=True)
                    self.counts["prompt_tokens"] += result.completion.prompt_tokens
                    self.counts["completion_tokens"] += result.completion.completion_tokens
                results[request.key()] = result
            db.execute("UPDATE batches SET status = ?, collected = ? WHERE input_file_id = ?",
                       (info["status"], time.time(), batch.input_file_id))
        return results

    def cancel_open(self) -> tuple[int, int]:
        """Cancel every batch of this model the record holds in flight; (batches, requests) cancelled. A batch the
        server does not know, or that was never made, is forgotten instead, so that its requests are submitted
        again; one that has ended is left for the next stream to collect. The answers a cancelled batch finished
        are recorded by the next stream (or the one running)."""
        db = open_db(self.record)
        try:
            rows = db.execute("SELECT input_file_id, batch_id FROM batches WHERE backend = ? AND collected IS NULL",
                              (self.backend,)).fetchall()
            batches = lines = 0
            for input_file_id, batch_id in rows:
                try:
                    info = self.client.get(batch_id) if batch_id else self.client.find(input_file_id)
                except UnknownBatch:
                    info = None
                if info is None:
                    with db:
                        db.execute("UPDATE batches SET status = 'forgotten', collected = ? WHERE input_file_id = ?",
                                   (time.time(), input_file_id))
                    continue
                if info["status"] not in TERMINAL + CANCELLED:
                    info = self.client.cancel(info["id"])
                    batches += 1
                    lines += db.execute("SELECT COUNT(*) FROM batch_lines WHERE input_file_id = ?",
                                        (input_file_id,)).fetchone()[0]
                with db:
                    db.execute("UPDATE batches SET batch_id = ?, status = ?, cancel_requested = 1 "
                               "WHERE input_file_id = ?", (info["id"], info["status"], input_file_id))
            return batches, lines
        finally:
            db.close()


def _chunks(lines: list[tuple[Request, bytes]]) -> Iterator[list[tuple[Request, bytes]]]:
    chunk: list[tuple[Request, bytes]] = []
    size = 0
    for item in lines:
        if chunk and (len(chunk) == MAX_LINES or size + len(item[1]) > MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += len(item[1])
    if chunk:
        yield chunk


def _errors(info: dict) -> list[dict]:
    errors = info.get("errors") or {}
    return [e for e in (errors.get("data") if isinstance(errors, dict) else errors) or [] if isinstance(e, dict)]


def _queue_full(info: dict) -> bool:
    errors = _errors(info)
    return bool(errors) and all(e.get("code") == QUEUE_FULL for e in errors)


def _failure(info: dict) -> str:
    errors = "; ".join(f"{e.get('code')}: {e.get('message')}" + (f" (line {e['line']})" if e.get("line") else "")
                       for e in _errors(info)[:3]) or "no reason given"
    hint = (" (the organisation's queue of batch tokens for this model is full, and no other batch of this run is "
            "in flight to free it: rerun when its other batches have ended; the limit grows with the usage tier)"
            if _queue_full(info) else "")
    return f"batch {info.get('id')} failed: {errors}{hint}; nothing of it was paid, and a rerun submits it again"

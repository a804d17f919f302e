"""The OpenAI Batch API over HTTP, and its line formats: upload a JSONL file of requests, create a batch from it,
poll it, read its output and error files.

The formats are OpenAI's own (and `apprentice serve` speaks them, models/serve_batch.py):

    input line   {"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
    output line  {"id", "custom_id", "response": {"status_code", "request_id", "body"} | null,
                  "error": {"code", "message"} | null}
    batch        {"id", "status", "input_file_id", "output_file_id", "error_file_id", "created_at", "expires_at",
                  "request_counts": {"total", "completed", "failed"}, "errors", ...}

A line's body is built by http.request_body and an answer's body read by http.parse_response, so a batch asks
exactly what the online backend would ask, and reads the answer the same way.

    client = BatchClient("https://api.openai.com/v1", key, timeout=120, max_retries=6)
    batch = client.create(client.upload(jsonl_bytes), "/v1/chat/completions")
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from apprentice.errors import BackendError, RetriesExhausted
from apprentice.models.base import Completion, Request
from apprentice.models.http import (RETRY_STATUSES, _error_detail, backoff_delay, parse_response, parse_retry_after,
                                    request_body, shared_ssl_context)

COMPLETION_WINDOW = "24h"  # the only window OpenAI offers
TERMINAL = ("completed", "failed", "expired", "cancelled")
CANCELLED = ("cancelling", "cancelled")
EXPIRED_CODES = ("batch_expired", "batch_cancelled")  # a line the window or a cancellation left unanswered
FIND_PAGES = 10  # pages of 100 batches searched for the batch made from a file (newest first)


class UnknownBatch(BackendError):
    """The server does not know a batch or file the call record holds (another API key, a restarted server)."""


def input_line(model: str, request: Request) -> tuple[str, dict]:
    """The endpoint and the JSONL line that ask `request` in a batch; its custom_id is the request's key."""
    path, body = request_body(model, [request])
    url = "/v1" + path
    return url, {"custom_id": request.key(), "method": "POST", "url": url, "body": body}


@dataclass
class LineResult:
    """One line of a batch's output or error file, read."""

    completion: Completion | None = None  # the answer, when the line holds one
    error: str = ""  # else why not
    retryable: bool = True  # asking again may succeed: expired, cancelled, 429, 5xx, malformed


def read_output_line(line: dict, request: Request) -> LineResult:
    """What an output (or error) file line says about `request`."""
    response = line.get("response") or {}
    error = line.get("error") or None
    status = response.get("status_code")
    if status == 200 and error is None:
        try:
            [completion] = parse_response([request], response["body"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return LineResult(error=f"malformed response ({type(exc).__name__}): {str(response)[:120]}")
        return LineResult(completion)
    if error is not None:
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        return LineResult(error=f"{code or 'error'}: {message}", retryable=True)
    body = response.get("body")
    detail = (body.get("error") or {}).get("message") if isinstance(body, dict) else body
    return LineResult(error=f"HTTP {status}: {str(detail)[:300]}", retryable=status in RETRY_STATUSES)


def read_jsonl(data: bytes) -> list[dict]:
    """The lines of an output or error file; a line that is not a JSON object names no request, so it is left out
    (its request counts as unanswered and is asked again)."""
    lines = []
    for text in data.decode("utf-8", "replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines


def describe(batches: Sequence[dict], now: float | None = None) -> str:
    """Progress of batches in flight, for a progress line: requests completed of total, time in the window."""
    if not batches:
        return ""
    now = time.time() if now is None else now
    counts = [batch.get("request_counts") or {} for batch in batches]
    total, done, failed = (sum(int(c.get(key) or 0) for c in counts) for key in ("total", "completed", "failed"))
    started = min(float(batch.get("created_at") or now) for batch in batches)
    ends = [float(batch["expires_at"]) for batch in batches if batch.get("expires_at")]
    window = f" of {_duration(max(ends) - started)}" if ends else ""
    statuses = sorted({str(batch.get("status")) for batch in batches})
    count = f"{len(batches)} batches" if len(batches) > 1 else "batch"
    return (f" · {count} {'/'.join(statuses)}: {done:,}/{total:,} done" + (f", {failed:,} failed" if failed else "")
            + f" · {_duration(now - started)}{window}")


def _duration(seconds: float) -> str:
    minutes = max(0, int(seconds)) // 60
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{max(0, int(seconds)) % 60:02d}s"


class BatchClient:
    """The files and batches of one OpenAI-compatible server, over one synchronous client. Retries as the online
    backend does (429, 5xx, timeouts, dropped connections; Retry-After honoured) up to `max_retries` times; any
    other 4xx is a BackendError naming what was asked."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, max_retries: int):
        self.base_url = base_url
        self.max_retries = max_retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout), headers=headers, verify=shared_ssl_context())

    def upload(self, data: bytes) -> str:
        """Upload a JSONL file of requests (purpose "batch"); its file id."""
        files = {"file": ("apprentice-batch.jsonl", data, "application/jsonl")}
        try:
            return str(self._call("POST", "/files", data={"purpose": "batch"}, files=files).json()["id"])
        except UnknownBatch as exc:
            raise BackendError(f"{exc}: this server has no Batch API (OpenAI and `apprentice serve` have one); "
                               "drop --batch to send the requests one by one") from None

    def create(self, input_file_id: str, endpoint: str) -> dict:
        """Create a batch from an uploaded file. A try that failed may still have made it (a timeout, a dropped
        connection, a 5xx after the fact): the server's list is searched before each retry, so one file makes
        one batch."""
        body = {"input_file_id": input_file_id, "endpoint": endpoint, "completion_window": COMPLETION_WINDOW}
        for attempt in range(self.max_retries + 1):
            try:
                return self._call("POST", "/batches", retries=0, json=body).json()
            except RetriesExhausted:
                found = self.find(input_file_id)
                if found is not None:
                    return found
                if attempt == self.max_retries:
                    raise
                time.sleep(backoff_delay(attempt))
        raise AssertionError("unreachable")

    def get(self, batch_id: str) -> dict:
        return self._call("GET", f"/batches/{batch_id}").json()

    def cancel(self, batch_id: str) -> dict:
        return self._call("POST", f"/batches/{batch_id}/cancel").json()

    def find(self, input_file_id: str) -> dict | None:
        """The batch made from `input_file_id`, from the server's list of batches (newest first), or None."""
        after: str | None = None
        for _ in range(FIND_PAGES):
            page = self._call("GET", "/batches", params={"limit": 100, **({"after": after} if after else {})}).json()
            batches = page.get("data") or []
            for batch in batches:
                if batch.get("input_file_id") == input_file_id:
                    return batch
            if not page.get("has_more") or not batches:
                return None
            after = batches[-1]["id"]
        return None

    def content(self, file_id: str) -> bytes:
        return self._call("GET", f"/files/{file_id}/content").content

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, retries: int | None = None, **kwargs) -> httpx.Response:
        url = self.base_url + path
        retries = self.max_retries if retries is None else retries
        last = ""
        for attempt in range(retries + 1):
            wait: float | None = None
            try:
                response = self._client.request(method, url, **kwargs)
            except httpx.TransportError as exc:  # timeouts included
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code == 404:
                    raise UnknownBatch(f"{method} {url} answered HTTP 404: {_error_detail(response)}")
                if response.status_code not in RETRY_STATUSES:
                    hint = " (check OPENAI_API_KEY)" if response.status_code in (401, 403) else ""
                    raise BackendError(f"{method} {url} answered HTTP {response.status_code}: "
                                       f"{_error_detail(response)}{hint}")
                last = f"HTTP {response.status_code}: {_error_detail(response)}"
                wait = parse_retry_after(response.headers.get("retry-after"))
            if attempt < retries:
                time.sleep(wait if wait is not None else backoff_delay(attempt))
        raise RetriesExhausted(f"{method} {url} failed after {retries + 1} tries; last error: {last}")

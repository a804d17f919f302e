"""The Batch API of `apprentice serve`, in OpenAI's formats: POST /v1/files (multipart, purpose "batch"), GET
/v1/files/{id} and /v1/files/{id}/content, POST /v1/batches, GET /v1/batches (newest first) and /v1/batches/{id},
POST /v1/batches/{id}/cancel. A local model (or a test) can so stand in for OpenAI in batch mode.

A batch runs on a thread of its own: its lines go through `serve.plan_call`, exactly as a call to their endpoint
would, and through the server's Batcher a few lines at a time (so they are generated together, and online requests
still get their turn). Answers go to the output file; refused lines (with their status code), and lines a
cancellation or the 24-hour window left unanswered (`batch_cancelled`, `batch_expired`), to the error file. Files
and batches live in memory: a restarted server knows none of them (404).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable

from fastapi import FastAPI, File, Form, UploadFile
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, Response

from apprentice.models.serve import ENDPOINTS, BadParameter, Batcher, _error, plan_call

WINDOW_S = {"24h": 24 * 3600}
UNANSWERED = {"cancelled": ("batch_cancelled", "This request was not executed before the batch was cancelled."),
              "expired": ("batch_expired", "This request could not be executed before the completion window "
                                           "expired.")}


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class BatchStore:
    """Uploaded files and batches, and the threads that run the batches."""

    def __init__(self, batcher: Batcher, names: list[str]):
        self.batcher = batcher
        self.names = names
        self.files: dict[str, tuple[dict, bytes]] = {}
        self.batches: dict[str, dict] = {}
        self.lock = threading.Lock()

    def add_file(self, data: bytes, filename: str, purpose: str) -> dict:
        meta = {"id": _id("file"), "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}
        with self.lock:
            self.files[meta["id"]] = (meta, data)
        return meta

    def create(self, body: dict) -> dict:
        endpoint, window = body.get("endpoint"), body.get("completion_window")
        if endpoint not in ENDPOINTS:
            raise BadParameter(f"endpoint must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
        if window not in WINDOW_S:
            raise BadParameter(f"completion_window must be '24h', got {window!r}")
        if body.get("input_file_id") not in self.files:
            raise KeyError(body.get("input_file_id"))
        now = int(time.time())
        batch = {"id": _id("batch"), "object": "batch", "endpoint": endpoint, "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": window, "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
                 "expires_at": now + WINDOW_S[window], "finalizing_at": None, "completed_at": None,
                 "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata")}
        with self.lock:
            self.batches[batch["id"]] = batch
        threading.Thread(target=self._run, args=(batch,), name=f"apprentice-{batch['id']}", daemon=True).start()
        return dict(batch)

    def cancel(self, batch_id: str) -> dict:
        with self.lock:
            batch = self.batches[batch_id]
            if batch["status"] in ("completed", "failed", "expired", "cancelled"):
                raise BadParameter(f"batch {batch_id} is already {batch['status']}: it cannot be cancelled")
            if batch["status"] != "cancelling":
                batch.update(status="cancelling", cancelling_at=int(time.time()))
            return dict(batch)

    def listing(self, limit: int, after: str | None) -> dict:
        with self.lock:
            newest = sorted(self.batches.values(), key=lambda b: b["created_at"], reverse=True)
            ids = [b["id"] for b in newest]
            start = ids.index(after) + 1 if after in ids else 0
            page = [dict(b) for b in newest[start:start + limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": start + limit < len(newest)}

    def _run(self, batch: dict) -> None:
        lines, errors = self._validate(batch)
        with self.lock:
            if errors:
                batch.update(status="failed", failed_at=int(time.time()),
                             errors={"object": "list", "data": errors})
                return
            batch["request_counts"]["total"] = len(lines)
            if batch["status"] == "validating":
                batch.update(status="in_progress", in_progress_at=int(time.time()))
        output, failed = [], []
        step = max(1, self.batcher.max_batch)
        stop = None
        for start in range(0, len(lines), step):
            with self.lock:
                stop = "cancelled" if batch["status"] == "cancelling" else (
                    "expired" if time.time() > batch["expires_at"] else None)
            if stop:
                code, message = UNANSWERED[stop]
                failed += [{"id": _id("batch_req"), "custom_id": line["custom_id"], "response": None,
                            "error": {"code": code, "message": message}} for line in lines[start:]]
                break
            chunk = [(line, self._start(batch["endpoint"], line["body"])) for line in lines[start:start + step]]
            for line, finish in chunk:
                status, body = finish()
                entry = {"id": _id("batch_req"), "custom_id": line["custom_id"],
                         "response": {"status_code": status, "request_id": _id("req"), "body": body}, "error": None}
                (output if status == 200 else failed).append(entry)
                with self.lock:
                    batch["request_counts"]["completed" if status == 200 else "failed"] += 1
        self._finalize(batch, output, failed, stop)

    def _validate(self, batch: dict) -> tuple[list[dict], list[dict]]:
        """The input file's lines, or the errors that fail the batch (as OpenAI's validation does)."""
        _, data = self.files[batch["input_file_id"]]
        lines, errors, seen = [], [], set()
        for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError:
                errors.append({"code": "invalid_json_line", "message": "This line is not valid JSON.",
                               "param": None, "line": number})
                continue
            problem = None
            if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
                problem = ("missing_required_parameter", "custom_id", "Each line needs a string custom_id.")
            elif line["custom_id"] in seen:
                problem = ("duplicate_custom_id", "custom_id", "The custom_id of each line must be unique.")
            elif line.get("method") != "POST":
                problem = ("invalid_request", "method", "The method must be POST.")
            elif line.get("url") != batch["endpoint"]:
                problem = ("mismatched_endpoint", "url", f"The url must be the batch's endpoint {batch['endpoint']}.")
            elif not isinstance(line.get("body"), dict):
                problem = ("invalid_request", "body", "The body must be a JSON object.")
            if problem:
                errors.append({"code": problem[0], "message": problem[2], "param": problem[1], "line": number})
                continue
            seen.add(line["custom_id"])
            lines.append(line)
        if not lines and not errors:
            errors.append({"code": "empty_file", "message": "The input file holds no requests.", "param": None,
                           "line": None})
        return lines, errors

    def _start(self, endpoint: str, body: dict) -> Callable[[], tuple[int, dict]]:
        """Submit one line's requests to the model; what gives the line's status code and body once they are
        generated."""
        try:
            requests, respond = plan_call(endpoint, body, self.names)
        except BadParameter as exc:
            refused = exc.status, {"error": {"message": str(exc), "type": exc.kind}}
            return lambda: refused
        futures = [self.batcher.submit(request) for request in requests]

        def finish() -> tuple[int, dict]:
            try:
                completions = [future.result() for future in futures]
            except Exception as exc:  # noqa: BLE001 - the model failed this line: a server error, as online
                return 500, {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}}
            return 200, respond(completions)

        return finish

    def _finalize(self, batch: dict, output: list[dict], failed: list[dict], stop: str | None) -> None:
        with self.lock:
            batch.update(status="finalizing", finalizing_at=int(time.time()))
        files = {}
        for key, entries in (("output_file_id", output), ("error_file_id", failed)):
            if entries:
                data = "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries).encode()
                files[key] = self.add_file(data, f"{batch['id']}_{key.split('_')[0]}.jsonl", "batch_output")["id"]
        now = int(time.time())
        with self.lock:
            batch.update(files)
            if stop is None:
                batch.update(status="completed", completed_at=now)
            else:
                batch.update(status=stop, **{f"{stop}_at": now})
                batch["request_counts"]["failed"] = len(failed)


def add_batch_routes(app: FastAPI, batcher: Batcher, names: list[str]) -> None:
    """Serve the Batch API over `batcher`'s model on `app`."""
    store = BatchStore(batcher, names)

    def unknown(kind: str, name: str) -> JSONResponse:
        return _error(404, f"No such {kind}: {name}", "not_found_error")

    @app.post("/v1/files")
    async def upload(file: UploadFile = File(...), purpose: str = Form(...)):
        return store.add_file(await file.read(), file.filename or "upload.jsonl", purpose)

    @app.get("/v1/files/{file_id}")
    async def file_info(file_id: str):
        return store.files[file_id][0] if file_id in store.files else unknown("file", file_id)

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str):
        if file_id not in store.files:
            return unknown("file", file_id)
        return Response(store.files[file_id][1], media_type="application/octet-stream")

    @app.post("/v1/batches")
    async def create(http: HttpRequest):
        try:
            body = json.loads(await http.body())
            return store.create(body if isinstance(body, dict) else {})
        except ValueError as exc:  # BadParameter too
            return _error(400, str(exc) if isinstance(exc, BadParameter) else "request body is not valid JSON")
        except KeyError as exc:
            return unknown("file", str(exc.args[0]))

    @app.get("/v1/batches")
    async def listing(limit: int = 20, after: str | None = None):
        return store.listing(max(1, min(limit, 100)), after)

    @app.get("/v1/batches/{batch_id}")
    async def retrieve(batch_id: str):
        with store.lock:
            return dict(store.batches[batch_id]) if batch_id in store.batches else unknown("batch", batch_id)

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel(batch_id: str):
        if batch_id not in store.batches:
            return unknown("batch", batch_id)
        try:
            return store.cancel(batch_id)
        except BadParameter as exc:
            return _error(400, str(exc))

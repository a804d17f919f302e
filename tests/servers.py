"""Small HTTP servers for tests: a scripted OpenAI-compatible server whose answers (and faults) a test decides,
and a helper that runs `apprentice serve` as a real subprocess."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    body: dict | str | bytes | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering
    drop: bool = False  # close the connection without answering


def chat_reply(text: str, finish_reason: str = "stop", prompt_tokens: int = 5, completion_tokens: int = 7) -> Reply:
    return Reply(body={
        "id": "chatcmpl-test", "object": "chat.completion", "model": "scripted",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def completion_reply(texts: list[str] | str, finish_reason: str = "stop") -> Reply:
    texts = [texts] if isinstance(texts, str) else texts
    return Reply(body={
        "id": "cmpl-test", "object": "text_completion", "model": "scripted",
        "choices": [{"index": i, "text": t, "finish_reason": finish_reason} for i, t in enumerate(texts)],
        "usage": {"prompt_tokens": 5 * len(texts), "completion_tokens": 7 * len(texts),
                  "total_tokens": 12 * len(texts)},
    })


Handler = Callable[[str, dict], Reply]

_SYLLABLES = ["ka", "lo", "mi", "ren", "tas", "vor", "pel", "dun", "sa", "quor", "bri", "nel", "tho", "zan", "fi"]


def invented_words(rng: random.Random, count: int) -> str:
    """Words made of random syllables: teacher texts that are new every time, so no ROUGE-L near duplicates."""
    return " ".join("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(count))


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # clients with many requests in flight connect all at once

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that cancels its request is no error
            super().handle_error(request, client_address)


class ScriptedServer:
    """An OpenAI-compatible server on 127.0.0.1 whose replies come from `handler(path, request_json)`.

    `requests` records every (path, body) received, so tests can count calls (cache hits make none)."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.requests: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                self._answer({})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                self._answer(body)

            def _answer(self, body):
                with outer._lock:
                    outer.requests.append((self.path, body))
                reply = outer.handler(self.path, body)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                payload = reply.body
                if isinstance(payload, dict | list):
                    payload = json.dumps(payload).encode()
                elif isinstance(payload, str):
                    payload = payload.encode()
                payload = payload or b""
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = _Server(("127.0.0.1", 0), _H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def count(self, path_suffix: str = "") -> int:
        with self._lock:
            return sum(1 for p, _ in self.requests if p.endswith(path_suffix))

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    """Ask a server subprocess to stop (SIGTERM), kill it if it has not within 10 s, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class ServeProcess:
    """`apprentice serve --model SPEC` in a subprocess on a free port; waits until /v1/models answers."""

    def __init__(self, model_spec: str, *extra: str, startup_timeout: float = 120.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "apprentice", "serve", "--model", model_spec, "--port", str(self.port), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self._wait(startup_timeout)

    def _wait(self, timeout: float) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited early:\n{self.proc.stdout.read()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError("serve did not start in time")

    def close(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

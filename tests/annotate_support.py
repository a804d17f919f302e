"""Helpers for the `apprentice annotate` tests and benchmark: output files to compare, the real server in a
subprocess (`apprentice annotate --a --b --db --port`), and an annotator driving it with plain form posts."""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx

from servers import free_port, stop_process

GENERATOR_A = "zebra-tutor-7b"
GENERATOR_B = "quokka-student-270m"


def write_outputs(directory: Path, n: int, output_a=None, output_b=None) -> tuple[Path, Path]:
    """Two AlpacaEval outputs files answering the same `n` instructions; `output_x(i)` gives custom texts."""
    directory.mkdir(parents=True, exist_ok=True)
    a = directory / "teacher_outputs_alpha.json"
    b = directory / "student_outputs_beta.json"
    instructions = [f"Instruction number {i}: explain topic {i} briefly." for i in range(n)]
    a.write_text(json.dumps([{"instruction": ins, "output": output_a(i) if output_a else f"First answer {i}.",
                              "generator": GENERATOR_A, "dataset": "selfinstruct"}
                             for i, ins in enumerate(instructions)]))
    b.write_text(json.dumps([{"instruction": ins, "output": output_b(i) if output_b else f"Second answer {i}.",
                              "generator": GENERATOR_B, "dataset": "selfinstruct"}
                             for i, ins in enumerate(instructions)]))
    return a, b


class AnnotateServer:
    """`apprentice annotate` as a real subprocess on a free port; `restart()` kills it hard and starts it again."""

    def __init__(self, a: Path, b: Path, db: Path, votes_per_item: int = 1, controls: int | None = None):
        self.db = db
        self.args = ["--a", str(a), "--b", str(b), "--db", str(db), "--votes-per-item", str(votes_per_item),
                     *(["--controls", str(controls)] if controls is not None else [])]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_link: str | None = None
        self.log = db.parent / f"annotate-{self.port}.log"
        self._start()

    @property
    def output(self) -> str:
        return self.log.read_text()

    def command(self) -> list[str]:
        return [sys.executable, "-m", "apprentice", "annotate", *self.args, "--port", str(self.port)]

    def _start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="400"))
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"annotate exited early:\n{self.output}")
            try:
                httpx.get(self.url + "/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            self.close()
            raise RuntimeError("annotate did not start in time")
        found = re.search(r"admin page: (http\S+/a/\S+)", self.output)
        if found:
            self.admin_link = found.group(1)

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing; what was committed must survive."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self._start()

    def close(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> AnnotateServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def invite(db: Path, name: str, url: str) -> str:
    """`apprentice annotate invite NAME --db DB --url URL` in a subprocess; returns the printed link."""
    done = subprocess.run([sys.executable, "-m", "apprentice", "annotate", "invite", name, "--db", str(db),
                           "--url", url], capture_output=True, text=True, check=True)
    return done.stdout.strip()


_FIELD = re.compile(r'name="(csrf|item)" value="([^"]*)"')


class Annotator:
    """One person voting through plain HTML forms over HTTP (no JavaScript), as a browser without it would."""

    def __init__(self, base_url: str, link: str | None = None, timeout: float = 30, name: str = ""):
        self.name = name
        self.client = httpx.Client(base_url=base_url, timeout=timeout)
        self.responses: list[httpx.Response] = []  # every response, for the blindness scan
        if link:
            self.get(link)

    def get(self, path: str) -> httpx.Response:
        response = self.client.get(path)
        self.responses.append(response)
        return response

    def post(self, path: str, data: dict) -> httpx.Response:
        response = self.client.post(path, data=data)
        self.responses.append(response)
        return response

    def page(self) -> tuple[str | None, str | None, httpx.Response]:
        """(item id, form token, response) of the current voting page; item id None when nothing is left."""
        response = self.get("/vote")
        response.raise_for_status()
        fields = dict(_FIELD.findall(response.text))
        return fields.get("item"), fields.get("csrf"), response

    def vote(self, item: str, csrf: str, choice: str, comment: str = "") -> httpx.Response:
        return self.post("/vote", {"csrf": csrf, "item": item, "choice": choice, "comment": comment})

    def next(self, item: str, csrf: str) -> httpx.Response:
        return self.post("/next", {"csrf": csrf, "item": item})

    def close(self) -> None:
        self.client.close()


@dataclass
class LoadResult:
    acknowledged: list[tuple[str, str, str]]  # (annotator, item id, side) for every vote answered 303
    latencies_s: list[float]  # POST /vote round trips, acknowledged votes only
    retries: int  # requests repeated after a connection error (the server was down)
    wall_s: float


def run_load(server: AnnotateServer, links: dict[str, str], restart_after: int | None = None,
             think_s: float = 0.0, seed: int = 0) -> LoadResult:
    """Every annotator (name -> invite link) votes, in a thread of their own over plain form posts, until nothing is
    left for them, pausing a random 0 to 2 * `think_s` seconds before each vote (reading time). With
    `restart_after`, the server is killed with SIGKILL once that many votes were acknowledged and started again on
    the same database and port; annotators retry whatever failed meanwhile."""
    lock = threading.Lock()
    acknowledged: list[tuple[str, str, str]] = []
    latencies: list[float] = []
    retries = 0
    restarted = threading.Event()
    errors: list[BaseException] = []

    def annotate(name: str, link: str, rng: random.Random) -> None:
        nonlocal retries
        session = FormSession(server.url)
        while True:
            try:
                if not session.cookies:
                    session.request("GET", urlsplit(link).path)
                status, page = session.request("GET", "/vote")
                assert status == 200, f"{name}: /vote answered {status}"
                fields = dict(_FIELD.findall(page))
                item, csrf = fields.get("item"), fields.get("csrf")
                if item is None:
                    break
                if 'id="next"' not in page:  # not voted yet (a vote whose answer was lost shows as voted)
                    if think_s:
                        time.sleep(rng.uniform(0, 2 * think_s))
                    side = rng.choice(("left", "right", "tie"))
                    started = time.perf_counter()
                    status, text = session.request("POST", "/vote", {"csrf": csrf, "item": item, "choice": side})
                    elapsed = time.perf_counter() - started
                    assert status == 303, f"{name}: vote answered {status}: {text[:200]}"
                    with lock:
                        acknowledged.append((name, item, side))
                        latencies.append(elapsed)
                        count = len(acknowledged)
                    if restart_after is not None and count >= restart_after and not restarted.is_set():
                        restarted.set()
                        server.restart()
                status, _ = session.request("POST", "/next", {"csrf": csrf, "item": item})
                assert status == 303, f"{name}: next answered {status}"
            except ConnectionError:
                with lock:
                    retries += 1
                time.sleep(0.05)
        session.close()

    def guarded(*args) -> None:
        try:
            annotate(*args)
        except BaseException as exc:  # surfaced by the caller; a thread's exception is otherwise lost
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=guarded, args=(name, link, random.Random(f"{seed}-{name}")))
               for name, link in links.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return LoadResult(acknowledged, latencies, retries, time.perf_counter() - started)


class FormSession:
    """A keep-alive HTTP/1.1 connection with a cookie jar, on http.client. The load test is CPU-bound on a small
    machine and httpx spends several times more CPU per request; any connection failure surfaces as
    ConnectionError, after which the next request reconnects."""

    def __init__(self, base_url: str, timeout: float = 60):
        parts = urlsplit(base_url)
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self.connection: http.client.HTTPConnection | None = None
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            text = response.read().decode()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ConnectionError(str(exc)) from exc
        for cookie in response.headers.get_all("set-cookie") or ():
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response.status, text

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

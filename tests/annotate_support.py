"""Helpers for the `apprentice annotate` tests and benchmark: output files to compare, the real server in a
subprocess (`apprentice annotate --a --b --db --port`), and an annotator driving it with plain form posts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from servers import free_port

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

    def __init__(self, a: Path, b: Path, db: Path, votes_per_item: int = 1):
        self.db = db
        self.args = ["--a", str(a), "--b", str(b), "--db", str(db), "--votes-per-item", str(votes_per_item)]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_link: str | None = None
        self.log = db.parent / f"annotate-{self.port}.log"
        self._start()

    @property
    def output(self) -> str:
        return self.log.read_text()

    def _start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "apprentice", "annotate", *self.args, "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="400"),
            )
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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

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

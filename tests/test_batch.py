"""The OpenAI Batch API end to end: a Batch API server written here (files, batches, polling, expired and failed
lines, counting every line submitted) and `apprentice serve`'s batch endpoints over a tiny model. A batch run gives
the data an online run gives; kill -9 at any point resumes without submitting a request twice; --cancel-batches
stops what is in flight; the batch price is the discount times the online price."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sample_tasks import SEED_INSTRUCTIONS, write_seed_file
from servers import Reply, ScriptedServer, chat_reply, completion_reply

from apprentice.errors import BackendError
from apprentice.generate.config import BATCH_WINDOW, GenerateConfig, resolve
from apprentice.generate.run import generate
from apprentice.models import load_model
from apprentice.models.base import FAILED, BackendOptions, Request
from apprentice.models.record import RecordedModel

WORDS = ("amber basil cedar delta ember fjord garnet harbor indigo juniper kettle lantern meadow nectar orchid pebble "
         "quartz raven saffron thistle umber velvet willow yarrow zephyr").split()


def teacher_text(body: dict) -> str:
    """A deterministic teacher: a function of the prompt, different for every prompt, with some rejects."""
    prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
    rng = random.Random(prompt)
    if "numbered list" in prompt:
        items = [f"{n}. Describe the {' '.join(rng.sample(WORDS, 6))} in detail." for n in range(9, 17)]
        items[rng.randrange(8)] = f"{9 + rng.randrange(8)}. Hi there."  # too short
        return "\n".join(items)
    if "Task:" not in prompt:  # a record's instruction, asked as a user would
        return f"{' '.join(rng.choices(WORDS, k=10)).capitalize()}." if rng.random() > 0.2 else ""
    if rng.random() < 0.2:
        return "no idea"  # unparseable
    return f"Input: <noinput>\nOutput: {' '.join(rng.choices(WORDS, k=12)).capitalize()}."


class BatchServer:
    """OpenAI's Batch API (and its chat endpoint) on 127.0.0.1, answering with `answer(body)`.

    A batch ends at its first poll unless `held(number)` says to keep it in progress (numbers count batches from
    0), or `refused(number)` says the organisation's queue of batch tokens is full; `fault(custom_id, attempt)` may
    expire a line ("expired") or fail it with a status code, attempt counting from 1. `sent` counts every line
    submitted, by custom_id; `online` counts online calls."""

    def __init__(self, answer=teacher_text, held=lambda number: False, fault=lambda custom_id, attempt: None,
                 refused=lambda number: False):
        self.answer, self.held, self.fault, self.refused = answer, held, fault, refused
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.lines: dict[str, list[dict]] = {}
        self.sent: Counter = Counter()
        self.online = 0
        self.create_delay: dict[int, float] = {}  # batch number -> seconds before the create call is answered
        self.create_arrived = threading.Event()
        self.lock = threading.Lock()
        self.http = ScriptedServer(self.handle)

    def __enter__(self):
        self.http.__enter__()
        return self

    def __exit__(self, *exc):
        self.http.__exit__(*exc)

    @property
    def url(self) -> str:
        return self.http.url

    def handle(self, path: str, body: dict) -> Reply:
        route = path.split("?")[0].removeprefix("/v1")
        with self.lock:
            if route == "/chat/completions":
                self.online += 1
                return chat_reply(self.answer(body))
            if route == "/files":
                return self._upload(body["_raw"])
            if route.startswith("/files/"):
                return Reply(body=self.files[route.split("/")[2]])
            if route == "/batches" and "input_file_id" in body:
                return self._create(body)
            if route == "/batches":
                newest = sorted(self.batches.values(), key=lambda b: b["number"], reverse=True)
                return Reply(body={"object": "list", "data": newest, "has_more": False})
            batch = self.batches[route.split("/")[2]]
            if route.endswith("/cancel"):
                batch["status"] = "cancelling"
            else:
                self._advance(batch)
            return Reply(body=batch)

    def _upload(self, raw: str) -> Reply:
        # the multipart body: a purpose field saying "batch", and the JSONL file, one request a line
        assert 'name="purpose"' in raw and "\r\n\r\nbatch\r\n" in raw
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        self.lines[file_id] = [json.loads(text) for text in raw.splitlines() if text.startswith('{"custom_id"')]
        return Reply(body={"id": file_id, "object": "file", "purpose": "batch", "bytes": len(raw)})

    def _create(self, body: dict) -> Reply:
        assert body["completion_window"] == "24h" and body["endpoint"] in ("/v1/chat/completions", "/v1/completions")
        lines = self.lines[body["input_file_id"]]
        for line in lines:
            assert line["method"] == "POST" and line["url"] == body["endpoint"] and line["body"]["model"] == "scripted"
            self.sent[line["custom_id"]] += 1
        number = len(self.batches)
        batch = {"id": f"batch_{uuid.uuid4().hex[:12]}", "object": "batch", "number": number,
                 "input_file_id": body["input_file_id"], "endpoint": body["endpoint"], "status": "validating",
                 "created_at": int(time.time()), "expires_at": int(time.time()) + 86400, "output_file_id": None,
                 "error_file_id": None, "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                 "attempts": {line["custom_id"]: self.sent[line["custom_id"]] for line in lines}}
        self.batches[batch["id"]] = batch
        self.create_arrived.set()
        return Reply(body=batch, delay=self.create_delay.get(number, 0.0))  # made before the answer goes out

    def _advance(self, batch: dict) -> None:
        if batch["status"] == "cancelling":
            batch["status"] = "cancelled"  # nothing was answered
            return
        if batch["status"] not in ("validating", "in_progress"):
            return
        if self.held(batch["number"]):
            batch["status"] = "in_progress"
            return
        if self.refused(batch["number"]):
            batch.update(status="failed", errors={"object": "list", "data": [
                {"code": "token_limit_exceeded", "message": "Enqueued token limit reached", "line": None}]})
            return
        output, errors = [], []
        for line in self.lines[batch["input_file_id"]]:
            fault = self.fault(line["custom_id"], batch["attempts"][line["custom_id"]])
            entry = {"id": f"batch_req_{uuid.uuid4().hex[:8]}", "custom_id": line["custom_id"], "error": None}
            if fault == "expired":
                errors.append({**entry, "response": None, "error": {"code": "batch_expired", "message": "late"}})
            elif fault:
                errors.append({**entry, "response": {"status_code": fault, "request_id": "r",
                                                     "body": {"error": {"message": f"scripted {fault}"}}}})
            else:
                reply = chat_reply if "messages" in line["body"] else completion_reply
                output.append({**entry, "response": {"status_code": 200, "request_id": "r",
                                                     "body": reply(self.answer(line["body"])).body}})
        for key, entries in (("output_file_id", output), ("error_file_id", errors)):
            if entries:
                file_id = f"file-{uuid.uuid4().hex[:12]}"
                self.files[file_id] = "".join(json.dumps(e) + "\n" for e in entries).encode()
                batch[key] = file_id
        expired = any(e["error"] for e in errors)
        batch.update(status="expired" if expired else "completed",
                     request_counts={"total": len(output) + len(errors), "completed": len(output),
                                     "failed": len(errors)})


@pytest.fixture
def seeds_file(tmp_path) -> Path:
    return write_seed_file(tmp_path / "seeds.jsonl", SEED_INSTRUCTIONS[:8])


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _data(out: Path) -> list[tuple]:
    return [(r["instruction"], r["input"], r["output"]) for r in _lines(out / "data.jsonl")]


def _cli(url: str, out: Path, seeds: Path, num: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "apprentice", "generate", "--teacher", f"openai:scripted@{url}", "--num",
            str(num), "--out", str(out), "--seeds", str(seeds), *extra]


# ---- the backend: answers by custom_id, expired and failed lines alone resubmitted, nothing paid twice --------------

def test_a_batch_collects_answers_by_custom_id_and_resubmits_only_expired_and_failed_lines(tmp_path):
    requests = [Request(messages=({"role": "user", "content": f"Task: question {i}"},), max_tokens=20)
                for i in range(12)]
    keys = [r.key() for r in requests]
    faults = {keys[1]: "expired", keys[4]: 500, keys[7]: 429, keys[9]: 400}  # each on the first attempt only...
    always = {keys[10]: 503}  # ...but this one fails every time

    def fault(custom_id, attempt):
        return always.get(custom_id) or (faults.get(custom_id) if attempt == 1 else None)

    record = tmp_path / "calls.sqlite"
    with BatchServer(fault=fault) as server:
        model = RecordedModel(load_model(f"openai:scripted@{server.url}", BackendOptions(
            batch=True, max_retries=2, keep_going=True), record=record), record, "openai:scripted")
        answers = model.generate(requests + [requests[0]])  # a request asked twice is sent once
        assert server.online == 0 and len(server.batches) == 3  # the batch, then two rounds of resubmissions
        # every line once, but the ones that expired or failed with 429/5xx: those again, alone; a 400 is final
        assert server.sent == Counter({**{k: 1 for k in keys}, keys[1]: 2, keys[4]: 2, keys[7]: 2, keys[10]: 3})
        again = model.generate(requests)
        # only the two that failed are asked again: the 400 is answered now, the 503 fails three times more
        assert len(server.batches) == 6 and (server.sent[keys[9]], server.sent[keys[10]]) == (2, 6)
    for i, answer in enumerate(answers[:12]):
        if i in (9, 10):
            assert answer.finish_reason == FAILED and answer.text == ""
            assert ("HTTP 400" if i == 9 else "HTTP 503") in answer.raw["error"]
        else:
            assert answer.text == teacher_text({"messages": [{"content": f"Task: question {i}"}]})
            assert (answer.prompt_tokens, answer.completion_tokens) == (5, 7)
    assert answers[12].text == answers[0].text
    assert [a.cached for a in again] == [i not in (9, 10) for i in range(12)] and again[10].finish_reason == FAILED
    db = sqlite3.connect(record)
    assert db.execute("SELECT COUNT(*), SUM(batch) FROM calls").fetchone() == (11, 11)  # failures are not answers
    assert db.execute("SELECT COUNT(*) FROM batches WHERE collected IS NULL").fetchone() == (0,)


def test_apprentice_serve_batch_endpoints_follow_openais_formats(tmp_path, tiny_model_dir):
    import openai
    from servers import ServeProcess

    with ServeProcess(f"hf:{tiny_model_dir}", "--name", "tiny") as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused")
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 5,
                "temperature": 0}
        lines = [{"custom_id": "ok", "method": "POST", "url": "/v1/chat/completions", "body": body},
                 {"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions", "body": {**body, "n": 2}}]
        upload = client.files.create(file=("in.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode()),
                                     purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        deadline = time.time() + 120
        while batch.status not in ("completed", "failed", "expired", "cancelled") and time.time() < deadline:
            time.sleep(0.2)
            batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed" and (batch.request_counts.total, batch.request_counts.completed,
                                                batch.request_counts.failed) == (2, 1, 1)
        assert batch.expires_at - batch.created_at == 86400
        [ok] = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        [bad] = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
        assert ok["custom_id"] == "ok" and ok["error"] is None and ok["response"]["status_code"] == 200
        assert ok["response"]["body"]["choices"][0]["message"]["role"] == "assistant"
        assert ok["response"]["body"]["usage"]["completion_tokens"] >= 1
        assert bad["custom_id"] == "bad" and bad["response"]["status_code"] == 400
        assert "n must be 1" in bad["response"]["body"]["error"]["message"]
        assert [b.id for b in client.batches.list()] == [batch.id]

        # a line for another endpoint fails the whole batch at validation, as OpenAI's does
        wrong = client.files.create(file=("w.jsonl", (json.dumps({**lines[0], "url": "/v1/completions"}) + "\n")
                                          .encode()), purpose="batch")
        failed = client.batches.create(input_file_id=wrong.id, endpoint="/v1/chat/completions",
                                       completion_window="24h")
        while failed.status not in ("completed", "failed"):
            time.sleep(0.1)
            failed = client.batches.retrieve(failed.id)
        assert failed.status == "failed" and failed.errors.data[0].code == "mismatched_endpoint"

        # a cancelled batch ends cancelled (what it had not answered goes to its error file)
        many = client.files.create(file=("m.jsonl", "".join(
            json.dumps({**lines[0], "custom_id": f"c{i}"}) + "\n" for i in range(200)).encode()), purpose="batch")
        cancelled = client.batches.create(input_file_id=many.id, endpoint="/v1/chat/completions",
                                          completion_window="24h")
        assert client.batches.cancel(cancelled.id).status == "cancelling"
        while cancelled.status != "cancelled":
            time.sleep(0.1)
            cancelled = client.batches.retrieve(cancelled.id)
        unanswered = [json.loads(x) for x in client.files.content(cancelled.error_file_id).text.splitlines()]
        assert unanswered and all(x["error"]["code"] == "batch_cancelled" for x in unanswered)

        # `apprentice answer --batch` through it: every prompt in one batch, recorded, and a rerun pays nothing
        prompts = tmp_path / "prompts.json"
        prompts.write_text(json.dumps([{"instruction": f"Name a colour number {i}.", "input": "", "output": ""}
                                       for i in range(5)]))
        out = tmp_path / "outputs.json"
        cli = [sys.executable, "-m", "apprentice", "answer", "--model", f"openai:tiny@{server.url}", "--prompts",
               str(prompts), "--out", str(out), "--max-tokens", "6", "--batch"]
        subprocess.run(cli, check=True, capture_output=True, timeout=300)
        first = json.loads(out.read_text())
        assert len(first) == 5 and len(client.batches.list().data) == 4
        out.unlink()
        subprocess.run(cli, check=True, capture_output=True, timeout=300)
        assert json.loads(out.read_text()) == first and len(client.batches.list().data) == 4
    assert sqlite3.connect(tmp_path / "outputs.cache.sqlite").execute(
        "SELECT COUNT(*), SUM(batch) FROM calls").fetchone() == (5, 5)


def test_a_batch_refused_for_a_full_queue_waits_for_another_to_end(tmp_path):
    chat = [Request(messages=({"role": "user", "content": f"Task: chat {i}"},)) for i in range(3)]
    plain = [Request(prompt=f"Task: plain {i}") for i in range(3)]
    polls = Counter()

    def held(number):  # the chat batch is still running when the completion batch is refused
        polls[number] += 1
        return number == 0 and polls[number] < 2

    record = tmp_path / "calls.sqlite"
    with BatchServer(held=held, refused=lambda number: number == 1) as server:
        model = load_model(f"openai:scripted@{server.url}", BackendOptions(batch=True), record=record)
        answers = model.generate(chat + plain)
        assert [b["endpoint"] for b in server.batches.values()] == ["/v1/chat/completions", "/v1/completions",
                                                                     "/v1/completions"]
        assert server.sent == Counter({**{r.key(): 1 for r in chat}, **{r.key(): 2 for r in plain}})
    assert [a.text for a in answers] == [teacher_text({"prompt": r.prompt} if r.prompt else
                                                      {"messages": list(r.messages)}) for r in chat + plain]

    # refused with nothing else of ours in flight: one line saying why, and what to do
    with BatchServer(refused=lambda number: True) as server:
        model = load_model(f"openai:scripted@{server.url}", BackendOptions(batch=True), record=tmp_path / "b.sqlite")
        with pytest.raises(BackendError, match="queue of batch tokens for this model is full"):
            model.generate(chat)


# ---- generate --batch: the online run's data, in waves, resumable, cancellable, at the batch price -------------------

def test_a_batch_run_gives_the_data_of_an_online_run_in_few_batches(tmp_path, seeds_file):
    with BatchServer() as server:
        teacher = f"openai:scripted@{server.url}"
        online = generate(GenerateConfig(teacher=teacher, out=tmp_path / "online", num=30, seeds=seeds_file,
                                         window=BATCH_WINDOW, concurrency=4, price_in=1.0, price_out=2.0))
        assert server.online == online.stats.answers and not server.batches
        batched = generate(GenerateConfig(teacher=teacher, out=tmp_path / "batch", num=30, seeds=seeds_file,
                                          batch=True, price_in=1.0, price_out=2.0))
        assert server.online == online.stats.answers  # the batch run sent nothing online
    assert batched.status == "done" and _data(tmp_path / "batch") == _data(tmp_path / "online")
    assert len(_data(tmp_path / "batch")) == 30
    assert _lines(tmp_path / "batch" / "rejected.jsonl") == _lines(tmp_path / "online" / "rejected.jsonl")
    # one batch per wave (bootstraps, their instances, the answers, ...), every request in exactly one of them
    sizes = [len(server.lines[b["input_file_id"]]) for b in server.batches.values()]
    assert len(sizes) <= 8 and sum(sizes) == batched.stats.paid and set(server.sent.values()) == {1}
    # the same tokens at half the price
    assert batched.stats.paid_prompt_tokens == online.stats.paid_prompt_tokens
    assert batched.stats.cost_usd == pytest.approx(0.5 * online.stats.cost_usd)
    stats = json.loads((tmp_path / "batch" / "stats.json").read_text())
    assert stats["price_discount"] == 0.5 and stats["cost_usd"] == pytest.approx(0.5 * online.stats.cost_usd, abs=1e-6)


def test_the_cost_cap_and_the_estimate_use_the_batch_price(tmp_path, seeds_file):
    from apprentice.generate.estimate import estimate_run
    from apprentice.generate.seeds import load_seed_tasks

    base = GenerateConfig(teacher="openai:scripted@http://127.0.0.1:9/v1", out=tmp_path / "e", num=52_000,
                          seeds=seeds_file, price_in=0.15, price_out=0.60)
    seeds = load_seed_tasks(seeds_file)
    online = estimate_run(resolve(base), seeds, None)
    batch = estimate_run(resolve(GenerateConfig(**{**base.__dict__, "batch": True})), seeds, None)
    cheaper = estimate_run(resolve(GenerateConfig(**{**base.__dict__, "batch": True, "batch_discount": 0.25})), seeds,
                           None)
    assert batch.requests == online.requests
    assert batch.cost_usd == pytest.approx(tuple(0.5 * c for c in online.cost_usd))
    assert cheaper.cost_usd == pytest.approx(tuple(0.25 * c for c in online.cost_usd))
    assert "Batch API" in batch.basis

    # a cap below the worst case of the first request at the online price, but above every request's worst case at
    # the batch price plus all the run pays: online stops before its first request, the batch run goes to the end
    from apprentice.generate.budget import worst_case_tokens

    price = 1e6  # USD per million tokens: a dollar a token, so costs read as token counts
    with BatchServer() as server:
        teacher = f"openai:scripted@{server.url}"
        free = generate(GenerateConfig(teacher=teacher, out=tmp_path / "free", num=3, seeds=seeds_file, batch=True))
        sent = [Request(**json.loads(row[0])) for row in sqlite3.connect(tmp_path / "free" / "requests.sqlite")
                .execute("SELECT request FROM calls ORDER BY id")]
        worst = [sum(worst_case_tokens(request)) for request in sent]
        cap = max(worst) / 2 + free.stats.paid_prompt_tokens + free.stats.paid_completion_tokens
        assert cap < worst[0], "the scripted requests no longer make this cap meaningful"
        batched = generate(GenerateConfig(teacher=teacher, out=tmp_path / "b", num=3, seeds=seeds_file, batch=True,
                                          price_in=price, price_out=price, max_cost=cap))
        online = generate(GenerateConfig(teacher=teacher, out=tmp_path / "o", num=3, seeds=seeds_file,
                                         window=BATCH_WINDOW, price_in=price, price_out=price, max_cost=cap))
    assert batched.status == "done" and batched.paid_usd <= cap and _data(tmp_path / "b") == _data(tmp_path / "free")
    assert batched.paid_usd == pytest.approx(0.5 * (free.stats.paid_prompt_tokens + free.stats.paid_completion_tokens))
    assert online.status == "cost_capped" and online.stats.answers == 0 and online.paid_usd == 0


def _whole_then_second_run(server: BatchServer, script: BatchServer, whole: Path, out: Path, seeds: Path, num: int,
                           **popen) -> subprocess.Popen:
    """Generate `whole` uninterrupted against `server`, then switch it to answer as `script` does, start a batch run
    into `out` and return it once `script` holds its second batch (or the run has ended, or two minutes have
    passed). `server`'s own counters keep what the uninterrupted run sent."""
    subprocess.run(_cli(server.url, whole, seeds, num, "--batch"), check=True, capture_output=True, timeout=300)
    server.http.handler = script.handle
    proc = subprocess.Popen(_cli(server.url, out, seeds, num, "--batch"), **popen)
    deadline = time.time() + 120
    while len(script.batches) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("kill_at", ["polling", "creating"])
def test_kill_9_during_a_batch_resumes_without_a_second_submission(tmp_path, seeds_file, kill_at):
    num = 20
    with BatchServer() as server:
        resumed = BatchServer()
        resumed.held = lambda number: number == 1 and kill_at == "polling"
        if kill_at == "creating":
            resumed.create_delay = {1: 5.0}  # the second batch is made, but the answer to its create call is late
        whole, out = tmp_path / "whole", tmp_path / "killed"
        proc = _whole_then_second_run(server, resumed, whole, out, seeds_file, num, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        uninterrupted = sum(server.sent.values())
        deadline = time.time() + 120
        if kill_at == "polling":  # it has polled the second batch at least once
            while server.http.count("/batches/" + list(resumed.batches)[-1]) < 1 and time.time() < deadline:
                time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert len(resumed.batches) == 2, "the kill came too late to test a resume"
        journal = sqlite3.connect(out / "requests.sqlite").execute(
            "SELECT batch_id FROM batches ORDER BY created").fetchall()
        assert [row[0] for row in journal] == ([*resumed.batches] if kill_at == "polling"
                                               else [list(resumed.batches)[0], None])

        resumed.held = lambda number: False
        rerun = subprocess.run(_cli(server.url, out, seeds_file, num, "--batch"), capture_output=True, text=True,
                               timeout=300)
        assert rerun.returncode == 0, rerun.stderr
    assert set(resumed.sent.values()) == {1}  # no request was submitted twice
    assert sum(resumed.sent.values()) == uninterrupted
    assert _data(out) == _data(whole) and len(_data(out)) == num
    assert _lines(out / "rejected.jsonl") == _lines(whole / "rejected.jsonl")


@pytest.mark.parametrize("running", [True, False], ids=["while-running", "after-kill"])
def test_cancel_batches_stops_what_is_in_flight_and_a_rerun_submits_the_rest(tmp_path, seeds_file, running):
    num = 12
    with BatchServer() as server:
        cancelled = BatchServer(held=lambda number: number == 1)  # the second wave waits until it is cancelled
        whole, out = tmp_path / "whole", tmp_path / "run"
        proc = _whole_then_second_run(server, cancelled, whole, out, seeds_file, num, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        if not running:
            os.kill(proc.pid, signal.SIGKILL)
        cancel = subprocess.run([sys.executable, "-m", "apprentice", "generate", "--cancel-batches", str(out)],
                                capture_output=True, text=True, timeout=120)
        assert cancel.returncode == 0, cancel.stderr
        second = list(cancelled.batches.values())[1]
        assert f"cancelled 1 batch ({second['request_counts']['total']} requests)" in cancel.stdout
        _, stderr = proc.communicate(timeout=120)
        if running:  # it stops with one line once the cancellation is done
            assert proc.returncode == 2 and "Traceback" not in stderr
            [error] = [line for line in stderr.splitlines() if line.startswith("error:")]
            assert f"batch {second['id']} was cancelled" in error
            again = subprocess.run([sys.executable, "-m", "apprentice", "generate", "--cancel-batches", str(out)],
                                   capture_output=True, text=True, timeout=120)
            assert "no batches in flight" in again.stdout

        cancelled.held = lambda number: False
        rerun = subprocess.run(_cli(server.url, out, seeds_file, num, "--batch"), capture_output=True, text=True,
                               timeout=300)
        assert rerun.returncode == 0, rerun.stderr
    # the cancelled wave was asked again (nothing of it was answered); every other request once
    resent = {custom_id for custom_id, times in cancelled.sent.items() if times > 1}
    assert resent == {line["custom_id"] for line in cancelled.lines[second["input_file_id"]]}
    assert set(cancelled.sent.values()) == {1, 2} and _data(out) == _data(whole)


def test_batch_needs_an_openai_teacher_and_cancel_needs_a_run(tmp_path, tiny_model_dir):
    for command in (["generate", "--teacher", f"hf:{tiny_model_dir}", "--num", "2", "--out", str(tmp_path / "r"),
                     "--batch"],
                    ["generate", "--cancel-batches", str(tmp_path / "nothing")],
                    ["answer", "--model", f"hf:{tiny_model_dir}", "--out", str(tmp_path / "o.json"), "--batch"]):
        proc = subprocess.run([sys.executable, "-m", "apprentice", *command], capture_output=True, text=True,
                              timeout=300)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "--batch needs an openai:" in lines[0] or "holds no generate run" in lines[0]
    assert not (tmp_path / "r").exists()


def test_judge_batch_asks_each_round_as_one_batch(tmp_path):
    from apprentice.evaluate.judge import judge_files

    def verdict(body):
        prompt = body["messages"][0]["content"]
        first = prompt.split("### Response A\n", 1)[1].split("\n\n### Response B\n", 1)[0]
        return "[[A]]" if "GOOD" in first else "[[B]]"

    outputs = {side: [{"instruction": f"Question {i}?", "output": f"{'GOOD ' if side == 'b' else ''}answer {i}",
                       "generator": side} for i in range(6)] for side in "ab"}
    for side, records in outputs.items():
        (tmp_path / f"{side}.json").write_text(json.dumps(records))
    with BatchServer(answer=verdict) as server:
        annotations = judge_files(tmp_path / "a.json", tmp_path / "b.json", f"openai:scripted@{server.url}",
                                  tmp_path / "j.json", options=BackendOptions(batch=True))
        assert server.online == 0 and len(server.batches) == 1 and sum(server.sent.values()) == 12
    assert [a["preference"] for a in annotations] == [2.0] * 6


def test_a_run_config_sets_batch_mode_for_openai_teachers_only(tmp_path, tiny_base_model_dir):
    from apprentice.errors import UserError
    from apprentice.pipeline.config import parse_config, to_toml

    data = {"teacher": {"model": "openai:gpt-4o-mini"}, "train": {"base": f"hf:{tiny_base_model_dir}"},
            "generate": {"num": 5, "batch": True, "batch_discount": 0.5, "price_in": 0.15, "price_out": 0.6}}
    config = parse_config(data, tmp_path)
    assert config.generate.batch and "batch = true" in to_toml(config)
    data["teacher"]["model"] = f"hf:{tiny_base_model_dir}"
    with pytest.raises(UserError, match=r"\[generate\] batch needs an openai: teacher"):
        parse_config(data, tmp_path)


def test_a_server_without_the_batch_api_is_one_line(tmp_path, seeds_file):
    with ScriptedServer(lambda path, body: Reply(status=404, body={"error": {"message": "Not Found"}})) as server:
        proc = subprocess.run(_cli(server.url, tmp_path / "run", seeds_file, 3, "--batch"), capture_output=True,
                              text=True, timeout=300)
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "has no Batch API" in error and "drop --batch" in error

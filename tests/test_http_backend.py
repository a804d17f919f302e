"""The HTTP backend against fault-injecting servers on 127.0.0.1: retries where it should, clear failures where not."""

import gc
import threading
import time

import pytest

from apprentice.errors import BackendError
from apprentice.models import Request, load_model
from apprentice.models.http import parse_retry_after
from apprentice.models.base import BackendOptions
from servers import Reply, ScriptedServer, chat_reply, completion_reply

FAST = BackendOptions(concurrency=4, timeout=1.0, max_retries=3)


def chat(text="hi", **kw):
    return Request(messages=[{"role": "user", "content": text}], **kw)


def failing_then_ok(failures: list[Reply]):
    """A handler that answers the scripted failures in turn, then succeeds."""
    lock = threading.Lock()
    remaining = list(failures)

    def handler(path, body):
        with lock:
            if remaining:
                return remaining.pop(0)
        return chat_reply("fine")

    return handler


@pytest.mark.parametrize(
    "fault",
    [
        Reply(status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0.2"}),
        Reply(status=500, body={"error": {"message": "boom"}}),
        Reply(status=503, body="not json at all"),
        Reply(body="{ this is not json"),
        Reply(body={"choices": []}),
        Reply(drop=True),
        Reply(delay=1.5, body={"choices": []}),  # slower than the 1 s timeout
    ],
    ids=["429-retry-after", "500", "503-text", "malformed-json", "missing-choices", "dropped", "timeout"],
)
def test_retries_transient_faults_then_succeeds(fault):
    with ScriptedServer(failing_then_ok([fault, fault])) as server:
        model = load_model(f"openai:m@{server.url}", FAST)
        [completion] = model.generate([chat()])
    assert completion.text == "fine"
    assert model.stats["retries"] == 2
    assert model.stats["http_requests"] == 3
    assert server.count("/chat/completions") == 3


def test_retry_after_is_honoured():
    fault = Reply(status=429, headers={"Retry-After": "0.6"}, body={"error": {"message": "later"}})
    with ScriptedServer(failing_then_ok([fault])) as server:
        model = load_model(f"openai:m@{server.url}", FAST)
        started = time.monotonic()
        [completion] = model.generate([chat()])
        assert time.monotonic() - started >= 0.6
        assert completion.seconds >= 0.6  # a request's time includes its retries


def test_gives_up_after_max_retries_with_clear_message():
    with ScriptedServer(lambda p, b: Reply(status=502, body={"error": {"message": "bad gateway"}})) as server:
        model = load_model(f"openai:m@{server.url}", BackendOptions(max_retries=2, timeout=1))
        with pytest.raises(BackendError, match=r"failed after 3 tries.*HTTP 502.*bad gateway"):
            model.generate([chat()])
        assert server.count() == 3


@pytest.mark.parametrize("status,hint", [(404, "model name"), (401, "OPENAI_API_KEY"), (400, "")])
def test_no_retry_on_other_4xx(status, hint):
    with ScriptedServer(lambda p, b: Reply(status=status, body={"error": {"message": "nope"}})) as server:
        model = load_model(f"openai:m@{server.url}", FAST)
        with pytest.raises(BackendError, match=f"HTTP {status}: nope.*{hint}"):
            model.generate([chat()])
        assert server.count() == 1


def peak_counting_echo():
    """A handler that echoes the message after 50 ms, and a list whose one item is the most requests it had at once."""
    active, peak, lock = [0], [0], threading.Lock()

    def handler(path, body):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return chat_reply(body["messages"][0]["content"])

    return handler, peak


def test_concurrency_is_bounded():
    handler, peak = peak_counting_echo()
    with ScriptedServer(handler) as server:
        model = load_model(f"openai:m@{server.url}", BackendOptions(concurrency=3))
        results = model.generate([chat(str(i)) for i in range(12)])
    assert [r.text for r in results] == [str(i) for i in range(12)]
    assert peak[0] == 3


def test_concurrency_bound_is_shared_by_streams_from_several_threads():
    handler, peak = peak_counting_echo()
    results: dict[int, list[str]] = {}
    with ScriptedServer(handler) as server:
        model = load_model(f"openai:m@{server.url}", BackendOptions(concurrency=3))

        def stream(worker: int) -> None:
            texts = [f"{worker}-{i}" for i in range(6)]
            results[worker] = [r.text for r in model.generate([chat(t) for t in texts])]

        threads = [threading.Thread(target=stream, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        model.close()
    assert results == {w: [f"{w}-{i}" for i in range(6)] for w in range(4)}
    assert peak[0] == 3
    assert model.stats["http_requests"] == 24


def test_leaving_a_stream_early_cancels_the_rest_and_the_model_stays_usable():
    with ScriptedServer(lambda p, b: Reply(delay=0.3, body=chat_reply("slow").body)) as server:
        model = load_model(f"openai:m@{server.url}", BackendOptions(concurrency=1))
        answers = model.stream([chat(str(i)) for i in range(6)])
        first_index, first = next(answers)
        answers.close()
        time.sleep(0.8)  # time for two or three more requests, had they not been cancelled
        asked = server.count()
        assert first.text == "slow" and asked <= 2
        [again] = model.generate([chat("again")])
        assert again.text == "slow" and server.count() == asked + 1
        model.close()
        model.close()  # closing twice is harmless
        [after_close] = model.generate([chat("after close")])  # and a closed model starts again on use
        model.close()
    assert after_close.text == "slow"


def test_several_urls_spread_and_skip_a_dead_one():
    with ScriptedServer(lambda p, b: chat_reply("one")) as one, ScriptedServer(lambda p, b: chat_reply("two")) as two:
        dead = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
        model = load_model(f"openai:m@{one.url},{dead},{two.url}", BackendOptions(concurrency=2, timeout=1))
        results = model.generate([chat(str(i)) for i in range(10)])
    assert {r.text for r in results} == {"one", "two"}
    assert one.count() > 0 and two.count() > 0
    assert one.count() + two.count() == 10


def test_completion_usage_and_logprobs_are_parsed():
    def handler(path, body):
        reply = completion_reply("continued", finish_reason="length")
        reply.body["choices"][0]["logprobs"] = {"top_logprobs": [{" A": -0.1, " B": -2.5}]}
        return reply

    with ScriptedServer(handler) as server:
        model = load_model(f"openai:m@{server.url}")
        [c] = model.generate([Request(prompt="Once upon", max_tokens=3, logprobs=2)])
        assert server.requests[0][1]["logprobs"] == 2 and server.requests[0][0] == "/v1/completions"
    assert (c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) == ("continued", "length", 5, 7)
    assert c.top_logprobs == {" A": -0.1, " B": -2.5}


def test_request_carries_sampling_settings():
    with ScriptedServer(lambda p, b: chat_reply("x")) as server:
        load_model(f"openai:gpt-x@{server.url}").generate(
            [chat(max_tokens=9, temperature=0.7, top_p=0.5, stop=("\n\n",), seed=3, presence_penalty=2.0)])
        body = server.requests[0][1]
    assert body == {"model": "gpt-x", "max_tokens": 9, "temperature": 0.7, "top_p": 0.5, "stop": ["\n\n"],
                    "seed": 3, "presence_penalty": 2.0, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("value,expected", [("2", 2.0), ("0.5", 0.5), (None, None), ("soon", None), ("-3", 0.0)])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def completion_batch_server(shuffle: bool = False, drop_last_choice_once: bool = False):
    """A completions server that answers each prompt of a list with its upper-case text, choices in any order."""
    bodies, lock = [], threading.Lock()
    dropped = [not drop_last_choice_once]

    def handler(path, body):
        with lock:
            bodies.append(body)
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            choices = [{"index": i, "text": p.upper(), "finish_reason": "stop"} for i, p in enumerate(prompts)]
            if shuffle:
                choices.reverse()
            if not dropped[0] and len(choices) > 1:
                dropped[0] = True
                choices = choices[:-1]
        return Reply(body={"choices": choices, "usage": {"prompt_tokens": 10 * len(prompts) + 1,
                                                         "completion_tokens": 3 * len(prompts)}})

    return handler, bodies


def test_several_prompts_share_a_request_and_answers_find_their_prompt():
    handler, bodies = completion_batch_server(shuffle=True)
    with ScriptedServer(handler) as server:
        model = load_model(f"openai:m@{server.url}", BackendOptions(concurrency=1, prompts_per_request=3))
        requests = [Request(prompt=f"p{i}", max_tokens=5) for i in range(7)]
        results = model.generate(requests)
        model.close()
    assert [r.text for r in results] == [f"P{i}" for i in range(7)]
    assert [b["prompt"] for b in bodies] == [["p0", "p1", "p2"], ["p3", "p4", "p5"], "p6"]
    # usage is per HTTP request: shared out so that the totals stay exact
    assert sum(r.prompt_tokens for r in results) == 31 + 31 + 11
    assert model.stats["prompt_tokens"] == 73 and model.stats["completion_tokens"] == 21


def test_only_requests_with_equal_settings_are_batched_and_chat_never():
    handler, bodies = completion_batch_server()
    with ScriptedServer(handler) as server:
        model = load_model(f"openai:m@{server.url}", BackendOptions(concurrency=1, prompts_per_request=4))
        requests = [Request(prompt="a", max_tokens=5), Request(prompt="b", max_tokens=5),
                    Request(prompt="c", max_tokens=9), Request(prompt="d", max_tokens=9)]
        assert [r.text for r in model.generate(requests)] == ["A", "B", "C", "D"]
        model.close()
    assert [b["prompt"] for b in bodies] == [["a", "b"], ["c", "d"]]
    with ScriptedServer(lambda p, b: chat_reply(b["messages"][0]["content"])) as server:
        model = load_model(f"openai:m@{server.url}", BackendOptions(concurrency=1, prompts_per_request=4))
        assert [r.text for r in model.generate([chat("x"), chat("y")])] == ["x", "y"]
        model.close()
        assert server.count() == 2


def test_a_batch_answer_missing_a_choice_is_retried():
    handler, bodies = completion_batch_server(drop_last_choice_once=True)
    with ScriptedServer(handler) as server:
        model = load_model(f"openai:m@{server.url}", BackendOptions(concurrency=1, prompts_per_request=2,
                                                                     max_retries=2))
        results = model.generate([Request(prompt="a"), Request(prompt="b")])
        model.close()
    assert [r.text for r in results] == ["A", "B"]
    assert model.stats["retries"] == 1 and len(bodies) == 2


def test_closing_a_model_fails_its_pending_streams_instead_of_hanging():
    with ScriptedServer(lambda p, b: Reply(delay=2.0, body=chat_reply("late").body)) as server:
        model = load_model(f"openai:m@{server.url}", BackendOptions(concurrency=1))
        errors: list[Exception] = []

        def consume() -> None:
            try:
                model.generate([chat("1"), chat("2")])
            except BackendError as exc:
                errors.append(exc)

        thread = threading.Thread(target=consume)
        thread.start()
        time.sleep(0.3)  # the first request is in flight, the second waits for the slot
        model.close()
        thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1 and "closed while requests were in flight" in str(errors[0])


def test_a_model_dropped_without_close_stops_its_loop_thread(capfd):
    def loop_threads() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "apprentice-http")

    with ScriptedServer(lambda p, b: chat_reply("ok")) as server:
        before = loop_threads()
        model = load_model(f"openai:m@{server.url}", BackendOptions(concurrency=4))
        assert model.generate([chat("x")])[0].text == "ok"
        assert loop_threads() == before + 1
        del model  # never closed: collecting it stops its workers and its loop thread
        gc.collect()
        deadline = time.monotonic() + 5
        while loop_threads() > before and time.monotonic() < deadline:
            time.sleep(0.05)
    assert loop_threads() == before
    assert "Task was destroyed" not in capfd.readouterr().err


def test_prompts_planned_one_by_one_still_share_a_request(monkeypatch):
    from apprentice.models import http

    monkeypatch.setattr(http, "BATCH_LINGER_S", 0.5)  # generous, so that the test does not race the clock
    handler, bodies = completion_batch_server()
    results: dict[str, str] = {}
    with ScriptedServer(handler) as server:
        model = load_model(f"openai:m@{server.url}", BackendOptions(concurrency=1, prompts_per_request=3))

        def ask(prompt: str) -> None:
            results[prompt] = model.generate([Request(prompt=prompt)])[0].text

        threads = [threading.Thread(target=ask, args=(p,)) for p in ("a", "b", "c", "d")]
        for thread in threads:  # each prompt in its own stream call, 50 ms apart, as a generate loop plans them
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join(10)
        model.close()
    assert results == {"a": "A", "b": "B", "c": "C", "d": "D"}
    # the free slot waited for a full request; the last prompt went alone once the wait was over
    assert [b["prompt"] for b in bodies] == [["a", "b", "c"], "d"]

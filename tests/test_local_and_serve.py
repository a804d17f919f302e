"""The local transformers backend, the response record/cache, and `apprentice serve` with the official openai client
(serving on the ctranslate2 engine in float32, whose answers equal transformers')."""

import concurrent.futures
import sqlite3

import openai
import pytest

from apprentice.models import Request, load_model
from apprentice.models.local import LocalModel, truncate_at_stop
from apprentice.models.record import RecordedModel
from apprentice.models.base import BackendOptions
from servers import ServeProcess


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    return load_model(f"hf:{tiny_model_dir}", BackendOptions(batch_size=4, engine="transformers"))


PROMPTS = ["Give three tips", "The quick brown fox jumps over", "Write a poem about the sea and the sky", "A"]


def test_batched_greedy_equals_one_at_a_time(local):
    requests = [Request(prompt=p, max_tokens=12) for p in PROMPTS]
    batched = [c.text for c in local.generate(requests)]
    single = [local.generate([r])[0].text for r in requests]
    assert batched == single
    assert all(c.completion_tokens > 0 for c in local.generate(requests))


def test_max_tokens_gives_length_finish(local):
    [c] = local.generate([Request(prompt="The quick", max_tokens=5)])
    assert c.finish_reason == "length" and c.completion_tokens == 5


def test_seeded_sampling_is_reproducible(local):
    request = Request(prompt="The quick brown", max_tokens=10, temperature=1.0, seed=7)
    first = local.generate([request])[0].text
    assert local.generate([request])[0].text == first
    others = {local.generate([Request(prompt="The quick brown", max_tokens=10, temperature=1.0, seed=s)])[0].text
              for s in range(8, 14)}
    assert len(others | {first}) > 1


def test_chat_uses_the_chat_template(local):
    rendered = local.render(Request(messages=[{"role": "user", "content": "hello"}]))
    assert rendered == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("text,stops,expected", [
    ("abc\n\ndef", ("\n\n",), ("abc", True)),
    ("abc 20. x 16. y", ("16.", "20."), ("abc ", True)),
    ("abc", ("zz",), ("abc", False)),
    ("abc", (), ("abc", False)),
])
def test_truncate_at_stop(text, stops, expected):
    assert truncate_at_stop(text, stops) == expected


def test_record_caches_and_records(local, tmp_path):
    db = tmp_path / "calls.sqlite"
    requests = [Request(prompt=p, max_tokens=6) for p in PROMPTS]
    recorded = RecordedModel(local, db)
    first = recorded.generate(requests)
    assert recorded.stats["paid_calls"] == 4 and not any(c.cached for c in first)
    recorded.close()
    again = RecordedModel(LocalModel(local.model, local.tokenizer, local.spec, local.options, "cpu"), db)
    second = again.generate(requests)
    assert again.stats["paid_calls"] == 0 and all(c.cached for c in second)
    assert [c.text for c in second] == [c.text for c in first]
    rows = sqlite3.connect(db).execute("SELECT backend, request, prompt_tokens, seconds FROM calls").fetchall()
    assert len(rows) == 4 and all(r[0] == local.spec and '"prompt"' in r[1] and r[2] > 0 for r in rows)
    # the recorded time is the backend's own (its batch), the same one the completion carries
    assert sorted(r[3] for r in rows) == sorted(c.seconds for c in first) and all(c.seconds > 0 for c in first)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with ServeProcess(f"hf:{tiny_model_dir}", "--name", "tiny", "--served-model-name", "tiny-instruct",
                      "--engine", "ctranslate2") as proc:
        yield proc


def test_openai_client_chat_and_completions(server, local):
    client = openai.OpenAI(base_url=server.url, api_key="unused")
    assert [m.id for m in client.models.list().data] == ["tiny", "tiny-instruct"]
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=8, temperature=0)
    expected = local.generate([Request(messages=[{"role": "user", "content": "hello"}], max_tokens=8)])[0]
    assert chat.choices[0].message.content == expected.text
    assert chat.usage.prompt_tokens == expected.prompt_tokens
    assert chat.usage.completion_tokens == expected.completion_tokens
    completion = client.completions.create(model="tiny", prompt=["The quick", "Give three"], max_tokens=5,
                                           temperature=0)
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 10


def test_openai_client_streaming_chat(server):
    client = openai.OpenAI(base_url=server.url, api_key="unused")
    chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=4, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_serve_honours_presence_penalty_and_answers_aliases(server, local):
    import httpx

    body = {"messages": [{"role": "user", "content": "The quick brown fox"}], "max_tokens": 16, "temperature": 0,
            "presence_penalty": 2.0}
    expected = local.generate([Request(messages=body["messages"], max_tokens=16, presence_penalty=2.0)])[0]
    plain = local.generate([Request(messages=body["messages"], max_tokens=16)])[0]
    assert expected.text != plain.text  # the penalty changes this answer, so the server must not drop it
    for name in ("tiny", "tiny-instruct"):
        reply = httpx.post(f"{server.url}/chat/completions", json={**body, "model": name}, timeout=60).json()
        assert reply["choices"][0]["message"]["content"] == expected.text and reply["model"] == "tiny"


@pytest.mark.parametrize("path, extra, message", [
    ("/chat/completions", {"max_tokens": -5}, "max_tokens must be between 1"),
    ("/chat/completions", {"temperature": "hot"}, "temperature must be a number"),
    ("/chat/completions", {"n": 2}, "n must be 1"),
    ("/completions", {"top_p": 3}, "top_p must be between 0 and 1"),
    ("/completions", {"seed": "x"}, "seed must be an integer"),
    ("/completions", {"stop": [1]}, "stop must be a string or a list of strings"),
])
def test_bad_parameters_are_a_400_naming_them(server, path, extra, message):
    import httpx

    body = {"model": "tiny", "max_tokens": 4, **({"prompt": "hi"} if path == "/completions" else
                                               {"messages": [{"role": "user", "content": "hi"}]}), **extra}
    response = httpx.post(f"{server.url}{path}", json=body, timeout=60)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_wrong_model_name_is_a_clear_404(server):
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])


def test_http_backend_against_serve_batches_concurrent_requests(server, local):
    model = load_model(f"openai:tiny@{server.url}", BackendOptions(concurrency=8))
    requests = [Request(prompt=p, max_tokens=6) for p in PROMPTS * 4]
    results = model.generate(requests)
    expected = [c.text for c in local.generate(requests)]
    assert [r.text for r in results] == expected
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda r: model.generate([r])[0].text, requests[:4]))
    assert texts == expected[:4]


def test_several_prompts_per_request_against_serve_give_the_same_answers(server, local):
    model = load_model(f"openai:tiny@{server.url}", BackendOptions(concurrency=2, prompts_per_request=4))
    requests = [Request(prompt=p, max_tokens=6) for p in PROMPTS * 3]
    results = model.generate(requests)
    model.close()
    assert [r.text for r in results] == [c.text for c in local.generate(requests)]
    assert model.stats["http_requests"] == -(-len(requests) // 4)  # ceil: every request carried 4 prompts or the rest


def test_presence_penalty_subtracts_once_per_generated_token():
    import torch

    from apprentice.models.local import PresencePenalty

    scores = torch.zeros(2, 6)
    input_ids = torch.tensor([[5, 5, 1, 1, 2], [5, 0, 3, 4, 4]])  # prompt width 2, then the completion so far
    out = PresencePenalty(2.0, prompt_width=2)(input_ids, scores)
    assert out.tolist() == [[0, -2, -2, 0, 0, 0], [0, 0, 0, -2, -2, 0]]


def test_presence_penalty_stops_greedy_repeats(local):
    plain, penalised = local.generate([
        Request(prompt="The quick brown fox", max_tokens=24),
        Request(prompt="The quick brown fox", max_tokens=24, presence_penalty=100.0),
    ])
    # the random tiny model loops on one token greedily; penalised, it has to keep moving to new ones
    assert len(set(plain.text)) <= 3 < len(set(penalised.text))


def test_record_db_opened_by_many_threads_at_once_migrates_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from apprentice.models.record import MIGRATIONS, open_db

    path = tmp_path / "calls.sqlite"

    def open_and_read(_):
        db = open_db(path)
        try:
            return [row[0] for row in db.execute("SELECT name FROM migrations")]
        finally:
            db.close()

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(open_and_read, range(8)))
    assert seen == [[name for name, _ in MIGRATIONS]] * 8

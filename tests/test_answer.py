"""`apprentice answer`: AlpacaEval outputs from a served model (real HTTP server) and from local tiny models, the
prompt style each model gets, resume from the sidecar after a failure, and bad input."""

from __future__ import annotations

import json
import sys

import pytest
from cli_support import run_in_process
from servers import Reply, ScriptedServer, chat_reply

from apprentice.errors import UserError
from apprentice.evaluate.answer import AnswerConfig, answer, choose_style
from apprentice.models.spec import parse_spec
from apprentice.train.templates import ALPACA_TEMPLATE

PROMPTS = [
    {"instruction": "Name a colour.", "input": "", "output": "red"},
    {"instruction": "Classify the sentiment.", "input": "I love it", "output": "positive"},
    {"instruction": "Translate into French.", "input": "yes", "output": "oui"},
    {"instruction": "Write a haiku about rain.", "input": "", "output": "..."},
]
TEXTS = ["Name a colour.", "Classify the sentiment.\n\nI love it", "Translate into French.\n\nyes",
         "Write a haiku about rain."]


def _prompts_file(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(PROMPTS))
    return path


def test_served_model_gets_chat_turns_and_a_rerun_resumes_after_a_failure(tmp_path):
    broken = {"on": True}

    def handler(path, body):
        text = body["messages"][0]["content"]
        if broken["on"] and text.startswith("Translate"):
            return Reply(status=400, body={"error": {"message": "bad request"}})
        return chat_reply(f"  answer to {text.splitlines()[0]}\n")

    out = tmp_path / "outputs.json"
    config = AnswerConfig(model="", prompts=str(_prompts_file(tmp_path)), out=str(out), concurrency=1,
                          generator="scripted")
    with ScriptedServer(handler) as server:
        config.model = f"openai:m@{server.url}"
        with pytest.raises(UserError, match="HTTP 400"):
            answer(config)
        sidecar = tmp_path / "outputs.json.partial.jsonl"
        assert not out.exists() and sidecar.exists()
        saved = [json.loads(line) for line in sidecar.read_text().splitlines()[1:]]
        assert [r["instruction"] for r in saved] == TEXTS[:2]
        asked_before = server.count("/chat/completions")
        with sidecar.open("a") as f:
            f.write('{"instruction": "Translate into Fre')  # a line cut short by a kill

        broken["on"] = False
        records = answer(config)
        assert server.count("/chat/completions") - asked_before == 2  # only the two unanswered prompts
        assert [body["messages"] for _, body in server.requests][-2:] == [
            [{"role": "user", "content": TEXTS[2]}], [{"role": "user", "content": TEXTS[3]}]]
    assert not sidecar.exists()
    written = json.loads(out.read_text())
    assert written == records
    assert written == [{"instruction": t, "output": f"answer to {t.splitlines()[0]}", "generator": "scripted",
                        "dataset": written[0]["dataset"], "finish_reason": "stop"} for t in TEXTS]


def test_sidecar_from_other_settings_is_refused(tmp_path):
    out = tmp_path / "o.json"
    (tmp_path / "o.json.partial.jsonl").write_text(json.dumps({"settings": {"model": "openai:other"}}) + "\n")
    with pytest.raises(UserError, match="other settings"):
        answer(AnswerConfig(model="openai:m@http://127.0.0.1:9/v1", prompts=str(_prompts_file(tmp_path)),
                            out=str(out)))


def test_prompt_style_per_model(tiny_model_dir, tiny_base_model_dir, tmp_path):
    assert choose_style(parse_spec("openai:m"), False).chat
    assert choose_style(parse_spec(f"hf:{tiny_model_dir}"), False).chat  # has a chat template
    forced = choose_style(parse_spec(f"hf:{tiny_model_dir}"), True)
    assert not forced.chat and forced.template is ALPACA_TEMPLATE
    base = choose_style(parse_spec(f"hf:{tiny_base_model_dir}"), False)
    assert not base.chat and base.template is ALPACA_TEMPLATE
    prompt = _eval_prompt()
    request = base.request(prompt.instruction, prompt.input, 7, 0.0)
    assert request.prompt == ALPACA_TEMPLATE.render_prompt("Translate into French.", "yes") and request.max_tokens == 7


def _eval_prompt():
    from apprentice.evaluate.prompts import EvalPrompt

    return EvalPrompt(instruction="Translate into French.", input="yes")


def test_local_model_outputs_are_alpaca_eval_and_greedy(tiny_model_dir, tmp_path):
    prompts = _prompts_file(tmp_path)
    first = answer(AnswerConfig(model=f"hf:{tiny_model_dir}", prompts=str(prompts), out=str(tmp_path / "a.json"),
                                max_tokens=8, batch_size=3))
    second = answer(AnswerConfig(model=f"hf:{tiny_model_dir}", prompts=str(prompts), out=str(tmp_path / "b.json"),
                                 max_tokens=8, batch_size=2))
    assert [list(r) for r in first] == [["instruction", "output", "generator", "dataset", "finish_reason"]] * 4
    assert {r["finish_reason"] for r in first} <= {"stop", "length"}
    assert [r["instruction"] for r in first] == TEXTS and {r["generator"] for r in first} == {"model"}
    assert first == second  # greedy: the same answers whatever the batching
    assert json.loads((tmp_path / "a.json").read_text()) == first


@pytest.mark.parametrize("args,message", [
    (["--model", "hf:/no/such/dir"], "no such directory"),
    (["--model", "openai:m", "--prompts", "{tmp}/missing.json"], "no such file"),
    (["--model", "openai:m", "--prompts", "{tmp}/bad.json"], "missing field 'instruction'"),
], ids=["bad model", "missing prompts", "bad prompts"])
def test_cli_bad_input(tmp_path, capsys, args, message):
    (tmp_path / "bad.json").write_text(json.dumps([{"input": "x"}]))
    code, err = run_in_process(["answer", "--out", str(tmp_path / "o.json"), *[a.format(tmp=tmp_path) for a in args]],
                               capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.json").exists()


def test_a_second_process_answering_into_the_same_file_stops_with_one_line(tmp_path):
    import subprocess
    import threading
    import time

    gate = threading.Event()

    def handler(path, body):
        gate.wait(timeout=60)
        return chat_reply("an answer")

    out = tmp_path / "outputs.json"
    with ScriptedServer(handler) as server:
        command = [sys.executable, "-m", "apprentice", "answer", "--model", f"openai:m@{server.url}", "--prompts",
                   str(_prompts_file(tmp_path)), "--out", str(out), "--concurrency", "1"]
        first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not server.requests and time.time() < deadline:  # the first one is asking
            time.sleep(0.02)
        second = subprocess.run(command, capture_output=True, text=True, timeout=60)
        gate.set()
        assert first.wait(timeout=120) == 0
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1
    assert f"in use by process {first.pid} (apprentice answer)" in second.stderr
    assert [r["output"] for r in json.loads(out.read_text())] == ["an answer"] * 4

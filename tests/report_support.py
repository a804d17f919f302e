"""A small synthetic run directory for the report tests, written in each stage's own formats: generate's records and
`RunStats.to_json()`, train's metrics lines and manifest (`TrainConfig`, `TokenCounts`), AlpacaEval outputs, and
annotations from the real LLM judge (`judge_pairs`) asking a scripted judge server on 127.0.0.1.

    run = write_run(tmp_path / "run")                       # every part
    run = write_run(tmp_path / "run", parts={"generate"})   # a run that has only generated its data
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from servers import ScriptedServer, chat_reply

from apprentice.evaluate.judge import judge_pairs, write_annotations
from apprentice.evaluate.outputs import join_outputs, load_outputs
from apprentice.generate.stats import RunStats
from apprentice.models import load_model
from apprentice.train.data import TokenCounts
from apprentice.train.loop import TrainConfig

PARTS = ("config", "generate", "train", "answers", "base", "fidelity", "judge")
NLL = {"base": 2.5, "student": 1.5}  # what the fidelity stage's models part says (models are not loaded here)
XSS = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\">"

# 24 kept instructions: root verbs write x6, explain x5, list x4, sort x3 (two behind a "Given ...," clause),
# summarize x2 (one behind "please"), translate x1 (behind "can you"), and 3 questions without a root verb
INSTRUCTIONS = (
    [f"Write a short poem about the number {i}." for i in range(6)]
    + [f"Explain why topic {i} matters to students." for i in range(5)]
    + [f"List three facts about planet number {i}." for i in range(4)]
    + ["Sort these words alphabetically.", "Given a list of numbers, sort them in descending order.",
       "Given five names, sort them by length."]
    + ["Summarize the paragraph in two sentences.", "Please summarize the news story for a child."]
    + ["Can you translate the greeting into French?"]
    + ["What is the boiling point of water at sea level?", "How do plants make food from light?",
       f"Why is the sky blue? {XSS}"]
)
REJECTED = Counter({"near_duplicate": 5, "too_short": 3, "blacklisted_word": 2, "unparseable": 1})

# ten evaluation prompts; the judge prefers the output that says GOOD, and a "FIRST" pair gets the first-shown
# output picked in both orders (the orders disagree: a tie)
EVAL = [f"Evaluation prompt {i}: describe thing {i}." for i in range(10)]
STUDENT_WINS, TEACHER_WINS, SPLIT = {0, 3, 6}, {1, 2, 4, 5}, {7}  # 8 and 9: neither says GOOD, a judged tie
STEPS = 12


def _losses() -> list[float]:
    return [round(3.0 - 0.15 * step, 4) for step in range(1, STEPS + 1)]


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _outputs(generator: str, text: dict[int, str], prompts: list[str]) -> list[dict]:
    return [{"instruction": p, "output": text[i], "generator": generator, "dataset": "apprentice-eval"}
            for i, p in enumerate(prompts)]


def student_output(i: int) -> str:
    marker = " GOOD" if i in STUDENT_WINS else " FIRST" if i in SPLIT else ""
    extra = f" {XSS}" if i == 0 else ""
    return f"Thing {i} is small and round.{marker}{extra}"


def teacher_output(i: int) -> str:
    marker = " GOOD" if i in TEACHER_WINS else " FIRST" if i in SPLIT else ""
    return f"Thing {i} is a round object that people use every day, in many ways, at home.{marker}"


def base_output(i: int) -> str:
    return f"### Instruction: describe thing {i}. " + "and then the next thing and the next " * 12


def _judge(path: str, body: dict):
    prompt = body["messages"][0]["content"]
    first = prompt.split("### Response A\n", 1)[1].split("\n\n### Response B\n", 1)[0]
    second = prompt.split("### Response B\n", 1)[1].split("\n\n### ", 1)[0]
    if "FIRST" in first:
        return chat_reply("A")
    if "GOOD" in first:
        return chat_reply("[[A]]")
    return chat_reply("B" if "GOOD" in second else "tie")


def write_run(root: Path, parts: set[str] | frozenset[str] = frozenset(PARTS)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if "config" in parts:
        (root / "run.toml").write_text('[teacher]\nmodel = "openai:teacher-model@http://127.0.0.1:9/v1"\n\n'
                                       '[train]\nbase = "hf:/models/base"\nlora = true\n', encoding="utf-8")
    if "generate" in parts:
        kept = [{"instruction": text, "input": "" if i % 3 else f"input {i}", "output": f"output {i}",
                 "teacher": "openai:teacher-model", "strategy": "self-instruct", "seed_ids": ["s1"],
                 "example_ids": [], "job": i, "parent_job": None, "request_id": f"r{i}", "most_similar": "",
                 "most_similar_score": 0.1} for i, text in enumerate(INSTRUCTIONS)]
        _write_jsonl(root / "generate" / "data.jsonl", kept)
        rejected = [{"reason": reason, "stage": "instruction", "instruction": f"rejected {reason} {n}", "input": "",
                     "output": "", "raw": "", "job": 100 + n, "request_id": f"x{n}"}
                    for reason, count in sorted(REJECTED.items()) for n in range(count)]
        _write_jsonl(root / "generate" / "rejected.jsonl", rejected)
        _write_json(root / "generate" / "alpaca_data.json",
                    [{k: r[k] for k in ("instruction", "input", "output")} for r in kept])
        stats = RunStats(target=len(kept), kept=len(kept), rejected=REJECTED, answers=40, cached=4,
                         prompt_tokens=12000, completion_tokens=3400)
        _write_json(root / "generate" / "stats.json", stats.to_json())
    if "train" in parts:
        metrics = [{"step": step, "epoch": round(step / 4, 4), "loss": loss,
                    "lr": 1e-3 * math.cos(math.pi * step / (2 * STEPS)), "grad_norm": 1.0, "tokens": 1000,
                    "response_tokens": 400, "examples": 8, "tokens_per_s": 2000.0, "seconds": 0.5}
                   for step, loss in enumerate(_losses(), start=1)]
        _write_jsonl(root / "student" / "metrics.jsonl", metrics)
        config = TrainConfig(base="hf:/models/base", data=str(root / "generate" / "alpaca_data.json"),
                             out=str(root / "student"), lora=True, lr=1e-3, epochs=3, max_len=384, token_budget=4096)
        counts = TokenCounts(examples=24, kept=23, dropped=1, truncated=2, prompt_tokens=1500, response_tokens=900)
        _write_json(root / "student" / "apprentice.json", {
            "template": {"kind": "alpaca"}, "base": "hf:/models/base", "base_dir": "/models/base",
            "data": config.data, "data_sha256": "0" * 64, "method": "lora", "merged": False,
            "hyperparameters": {**asdict(config), "peak_lr": config.peak_lr}, "token_counts": counts.to_json(),
            "steps": STEPS, "world_size": 1, "final_loss": _losses()[-1]})
    if "answers" in parts:
        _write_json(root / "answers" / "student.json", _outputs("student", {i: student_output(i) for i in range(10)},
                                                                EVAL))
        _write_json(root / "answers" / "teacher.json", _outputs("teacher", {i: teacher_output(i) for i in range(10)},
                                                                EVAL))
    if "base" in parts:
        _write_json(root / "answers" / "base.json", _outputs("base", {i: base_output(i) for i in range(3)}, EVAL[:3]))
    if "fidelity" in parts:  # the pipeline's fidelity.json: behaviour measured by the real code, NLL as stated
        from apprentice.evaluate.fidelity import behaviour, load_answers

        teacher = load_answers(root / "answers" / "teacher.json")
        answers = [{"file": str(root / "answers" / f"{who}.json"), "role": who,
                    **behaviour(load_answers(root / "answers" / f"{who}.json"), teacher)}
                   for who in ("base", "student") if (root / "answers" / f"{who}.json").is_file()]
        models = [{"model": f"hf:/models/{who}", "role": who, "nll": nll, "tokens": 180, "prompts": 10}
                  for who, nll in NLL.items()]
        _write_json(root / "fidelity.json", {"teacher": {"file": "teacher.json", "prompts": len(teacher)},
                                             "models": models, "answers": answers})
    if "judge" in parts:
        student, teacher = root / "answers" / "student.json", root / "answers" / "teacher.json"
        pairs = join_outputs(load_outputs(student), load_outputs(teacher), "student", "teacher")
        with ScriptedServer(_judge) as server:
            model = load_model(f"openai:judge-model@{server.url}")
            try:
                annotations = judge_pairs(pairs, model, annotator="openai:judge-model")
            finally:
                model.close()
        write_annotations(root / "judge" / "annotations.json", annotations)
    return root

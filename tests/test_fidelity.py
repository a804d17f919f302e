"""`apprentice fidelity`: the NLL of the teacher's answers checked against a direct transformers computation (chat,
Alpaca and a trained student's saved template; batched equals one by one), behaviour measures on crafted files
computed by hand, ROUGE-L against rouge_score, the CLI end to end, and bad input as one line with exit code 2."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest
from cli_support import run_in_process

from apprentice.errors import UserError
from apprentice.evaluate.fidelity import (
    Answer,
    behaviour,
    distinct_2,
    fidelity_report,
    measures,
    nll,
    score_model,
    teacher_examples,
    uses_markdown,
)
from apprentice.train.data import Example
from apprentice.train.templates import ALPACA_TEMPLATE, ChatTemplate

EXAMPLES = [
    Example("Name a colour.", "", "Red, like a ripe tomato."),
    Example("Classify the sentiment.", "I love it", "positive"),
    Example("Give three tips for staying healthy.", "", "Eat well, sleep enough and move every day. " * 3),
    Example("Translate into French.", "yes", "oui"),
    Example("Write a poem about the sea.", "", "The sea is wide\nthe sea is deep"),
]
PROMPTS = [{"instruction": e.instruction, "input": e.input, "output": ""} for e in EXAMPLES]


def _direct_nll(model_dir, render, examples) -> tuple[float, int]:
    """Total NLL / target tokens from the model's full logits, one example at a time: the reference numbers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    total, count = 0.0, 0
    for example in examples:
        prompt_text, add_special = render(tokenizer, example)
        prompt = tokenizer(prompt_text, add_special_tokens=add_special).input_ids
        target = tokenizer(example.output, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt + target])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        positions = torch.arange(len(prompt) - 1, len(prompt) + len(target) - 1)  # position t predicts token t + 1
        total -= float(logprobs[positions].gather(1, torch.tensor(target)[:, None]).sum())
        count += len(target)
    return total / count, count


def _chat(tokenizer, e):
    text = f"{e.instruction}\n\n{e.input}" if e.input else e.instruction
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                         add_generation_prompt=True), False


def _alpaca(tokenizer, e):
    return ALPACA_TEMPLATE.render_prompt(e.instruction, e.input), True


@pytest.mark.parametrize("which,render,kind", [("chat", _chat, "chat"), ("base", _alpaca, "alpaca")])
def test_nll_equals_a_direct_transformers_computation(request, which, render, kind):
    model_dir = request.getfixturevalue("tiny_model_dir" if which == "chat" else "tiny_base_model_dir")
    expected, tokens = _direct_nll(model_dir, render, EXAMPLES)
    result = score_model(f"hf:{model_dir}", EXAMPLES, batch_size=2)
    assert result["template"] == kind
    assert result["tokens"] == tokens and result["prompts"] == len(EXAMPLES)
    assert result["dropped"] == result["truncated"] == 0
    assert result["nll"] == pytest.approx(expected, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)


def test_batched_equals_one_by_one(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    template = ChatTemplate(tokenizer)
    seen = []
    batched = nll(model, tokenizer, template, EXAMPLES, batch_size=3, on_batch=seen.append)
    assert seen == [3, 2]  # one progress step per batch
    single = [nll(model, tokenizer, template, [e], batch_size=1) for e in EXAMPLES]
    assert batched.tokens == sum(s.tokens for s in single)
    assert batched.nll == pytest.approx(sum(s.nll * s.tokens for s in single) / batched.tokens, rel=1e-5)
    assert nll(model, tokenizer, template, EXAMPLES, batch_size=1).nll == pytest.approx(batched.nll, rel=1e-5)


def test_max_len_cuts_as_training_does(tiny_base_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_base_model_dir, dtype=torch.float32).eval()
    prompt_len = len(tokenizer(ALPACA_TEMPLATE.render_prompt("Name a colour.", "")).input_ids)
    result = nll(model, tokenizer, ALPACA_TEMPLATE, [EXAMPLES[0], Example("x " * 200, "", "y")], batch_size=2,
                 max_len=prompt_len + 2)
    assert (result.prompts, result.dropped, result.truncated, result.tokens) == (1, 1, 1, 2)
    with pytest.raises(UserError, match="no answer left to score"):
        nll(model, tokenizer, ALPACA_TEMPLATE, [Example("x " * 200, "", "y")], batch_size=2, max_len=prompt_len + 2)


def test_a_trained_student_is_scored_with_its_saved_template(tiny_base_model_dir, tmp_path):
    student = tmp_path / "student"
    shutil.copytree(tiny_base_model_dir, student)
    template = {"kind": "custom", "prompt_input": "Q: {instruction}\nIn: {input}\nA:",
                "prompt_no_input": "Q: {instruction}\nA:"}
    (student / "apprentice.json").write_text(json.dumps({"template": template}))

    def custom(tokenizer, e):
        text = template["prompt_input"] if e.input else template["prompt_no_input"]
        return text.replace("{instruction}", e.instruction).replace("{input}", e.input), True

    expected, tokens = _direct_nll(student, custom, EXAMPLES)
    result = score_model(f"hf:{student}", EXAMPLES, batch_size=4)
    assert result["template"] == "custom" and result["tokens"] == tokens
    assert result["nll"] == pytest.approx(expected, rel=1e-5)


def test_a_lora_student_is_scored_with_its_adapter(tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # random B as well as A, so the adapter changes the numbers (LoRA starts with B = 0)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False, task_type="CAUSAL_LM"))
    student = tmp_path / "lora"
    peft_model.save_pretrained(student)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(student)
    expected, tokens = _direct_nll(tiny_model_dir, _chat, EXAMPLES)
    result = score_model(f"hf:{student}", EXAMPLES, batch_size=2)
    assert result["tokens"] == tokens and result["nll"] != pytest.approx(expected, rel=1e-3)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    peft_model.eval()
    total = 0.0
    for example in EXAMPLES:  # the unmerged adapter, full logits: the reference
        prompt = tokenizer(_chat(tokenizer, example)[0], add_special_tokens=False).input_ids
        target = tokenizer(example.output, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        with torch.no_grad():
            logits = peft_model(input_ids=torch.tensor([prompt + target])).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)[len(prompt) - 1 : -1]
        total -= float(logprobs.gather(1, torch.tensor(target)[:, None]).sum())
    assert result["nll"] == pytest.approx(total / tokens, rel=1e-5)


def test_teacher_prompts_are_split_as_answer_split_them(tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS))
    teacher = [Answer(f"{e.instruction}\n\n{e.input}" if e.input else e.instruction, e.output) for e in EXAMPLES]
    assert teacher_examples(teacher, prompts) == EXAMPLES
    # not in the (default, shipped) prompt set: the whole text is the instruction, AlpacaEval's convention
    assert teacher_examples(teacher[1:2], None) == [Example("Classify the sentiment.\n\nI love it", "", "positive")]
    with pytest.raises(UserError, match="1 of the teacher's 2 prompts are not in it"):
        teacher_examples([teacher[0], Answer("Unknown prompt.", "x")], prompts)


# ---- behaviour ----------------------------------------------------------------------------------------------------

TEACHER = [
    Answer("p1", "red green blue", "stop"),
    Answer("p2", "1. Eat well\n2. Sleep", "stop"),
    Answer("p3", "the cat sat on the mat", "stop"),
    Answer("p4", "Paris", "stop"),
]
STUDENT = [
    Answer("p3", "the cat sat on the mat", "stop"),
    Answer("p1", "red green blue green blue", "stop"),
    Answer("p2", "**Eat** well", "length"),
    Answer("other", "an answer to a prompt the teacher never saw", "stop"),
]


def test_behaviour_measures_by_hand():
    result = behaviour(STUDENT, TEACHER)
    assert (result["prompts"], result["missing"], result["extra"]) == (3, 1, 1)
    got = result["measures"]
    # p1: 5/3 words, 2-grams (red green)(green blue)(blue green)(green blue) = 3 distinct of 4, LCS 3 -> F 0.75
    # p2: 2/5 words, cut at the limit, bold, LCS 2 of 5 and 2 -> F 2*1*0.4/1.4
    # p3: identical
    assert got["stop_rate"] == pytest.approx(2 / 3)
    assert got["length_ratio"] == pytest.approx(1.0)  # median of 5/3, 0.4, 1
    assert got["median_words"] == 5  # median of 5, 2, 6
    assert got["rouge_l"] == pytest.approx((0.75 + 2 * 0.4 / 1.4 + 1.0) / 3)
    assert got["distinct_2"] == pytest.approx((0.75 + 1.0 + 1.0) / 3)
    assert got["markdown"] == pytest.approx(1 / 3)
    assert result["teacher"] == {"stop_rate": 1.0, "length_ratio": 1.0, "median_words": 5, "rouge_l": 1.0,
                                 "distinct_2": 1.0, "markdown": pytest.approx(1 / 3)}  # "1. Eat well"


def test_a_file_without_finish_reason_has_no_stop_rate():
    unknown = [Answer(a.instruction, a.output) for a in STUDENT]
    assert behaviour(unknown, TEACHER)["measures"]["stop_rate"] is None
    assert behaviour(STUDENT, unknown)["teacher"]["stop_rate"] is None


def test_undefined_measures_are_none():
    got = measures([Answer("p", "one")], [Answer("p", "")])
    assert got["length_ratio"] is None and got["distinct_2"] is None and got["rouge_l"] == 0.0


def test_no_shared_prompt_is_a_user_error():
    with pytest.raises(UserError, match="shares no prompt"):
        behaviour([Answer("elsewhere", "x")], TEACHER)


@pytest.mark.parametrize("text,expected", [
    ("- a", True), ("* a", True), ("1. a", True), ("12) a", True), ("2.", True), ("intro\n  - nested", True),
    ("# Title", True), ("### Step", True), ("some **bold** text", True),
    ("plain prose", False), ("a - b * c", False), ("1.5 is a number", False), ("-5 degrees", False),
    ("#hashtag", False), ("**", False), ("2*3 = 6", False),
])
def test_markdown_detection(text, expected):
    assert uses_markdown(text) is expected


def test_distinct_2():
    assert distinct_2("a b a b a b") == pytest.approx(2 / 5)
    assert distinct_2("One.") is None


def test_rouge_l_equals_rouge_score():
    from rouge_score import rouge_scorer

    teacher = [Answer("a", "The quick brown fox jumps over the lazy dog."), Answer("b", "Paris is the capital."),
               Answer("c", "Eat well, sleep enough; MOVE every day!"), Answer("d", "x")]
    answers = [Answer("a", "A quick fox jumped over a dog"), Answer("b", "The capital of France is Paris."),
               Answer("c", "move, sleep and eat well every single day"), Answer("d", "...")]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = [scorer.score(t.output, a.output)["rougeL"].fmeasure for t, a in zip(teacher, answers)]
    assert measures(answers, teacher)["rouge_l"] == sum(expected) / len(expected)


# ---- files and the command line -----------------------------------------------------------------------------------


def _outputs(path, answers, generator="g", finish=True):
    records = [{"instruction": a.instruction, "output": a.output, "generator": generator, "dataset": "d",
                **({"finish_reason": a.finish_reason} if finish and a.finish_reason else {})} for a in answers]
    path.write_text(json.dumps(records))
    return path


def test_cli_json_report_from_answer_files(tiny_model_dir, tiny_base_model_dir, tmp_path):
    from apprentice.evaluate.answer import AnswerConfig, answer

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS))
    texts = [f"{e.instruction}\n\n{e.input}" if e.input else e.instruction for e in EXAMPLES]
    teacher = _outputs(tmp_path / "teacher.json", [Answer(t, e.output, "stop") for t, e in zip(texts, EXAMPLES)])
    student = tmp_path / "student.json"
    answer(AnswerConfig(model=f"hf:{tiny_base_model_dir}", prompts=str(prompts), out=str(student), max_tokens=6))
    assert all("finish_reason" in r for r in json.loads(student.read_text()))
    out = tmp_path / "fidelity.json"
    specs = [f"hf:{tiny_base_model_dir}", f"hf:{tiny_model_dir}"]
    proc = subprocess.run(
        [sys.executable, "-m", "apprentice", "fidelity", "--teacher", str(teacher), "--model", specs[0],
         "--model", specs[1], "--answers", str(student), "--prompts", str(prompts), "--batch-size", "2",
         "--json", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report == json.loads(out.read_text())
    assert [m["model"] for m in report["models"]] == specs
    assert [m["template"] for m in report["models"]] == ["alpaca", "chat"]
    for row in report["models"]:
        assert row["prompts"] == len(PROMPTS) and row["tokens"] > 0 and math.isfinite(row["nll"])
    # the command's numbers are the core's: the chat model scored on the teacher's answers, prompts split by the file
    assert report["models"][1]["nll"] == pytest.approx(score_model(specs[1], EXAMPLES, 5)["nll"], rel=1e-5)
    [row] = report["answers"]
    assert row["file"] == str(student) and (row["prompts"], row["missing"], row["extra"]) == (5, 0, 0)
    assert set(row["measures"]) == set(row["teacher"]) == set(report["teacher"]["measures"]) == {
        "stop_rate", "length_ratio", "median_words", "rouge_l", "distinct_2", "markdown"}
    # every answer of a random model runs to --max-tokens: the stop rate is measured (from finish_reason) and 0
    assert row["measures"]["stop_rate"] == 0.0 and row["teacher"]["stop_rate"] == 1.0
    assert row["teacher"]["length_ratio"] == 1.0 and row["teacher"]["markdown"] == 0.0


def test_report_without_models_reads_no_weights(tmp_path, capsys):
    from apprentice import cli

    teacher = _outputs(tmp_path / "teacher.json", TEACHER)
    student = _outputs(tmp_path / "student.json", STUDENT, finish=False)
    report = fidelity_report(teacher, [], [student])
    assert report["models"] == [] and report["answers"][0]["measures"]["stop_rate"] is None
    assert report["teacher"]["prompts"] == 4 and report["teacher"]["measures"]["stop_rate"] == 1.0
    old, sys.argv = sys.argv, ["apprentice", "fidelity", "--teacher", str(teacher), "--answers", str(student)]
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main()  # the table
    finally:
        sys.argv = old
    printed = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0
    assert "1 teacher prompts have no answer there" in printed and "teacher.json" in printed
    # the file has no finish_reason, the teacher's has
    assert "ROUGE-L" in printed and "stop rate │ - │ 1.000" in printed


@pytest.mark.parametrize("args,message", [
    (["--teacher", "{tmp}/missing.json", "--answers", "{tmp}/student.json"], "no such file"),
    (["--teacher", "{tmp}/object.json", "--answers", "{tmp}/student.json"], "expected an AlpacaEval outputs list"),
    (["--teacher", "{tmp}/teacher.json", "--answers", "{tmp}/elsewhere.json"], "shares no prompt"),
    (["--teacher", "{tmp}/teacher.json", "--model", "openai:gpt-4o-mini"], "openai: models cannot score text"),
    (["--teacher", "{tmp}/teacher.json", "--model", "llama:7b"], "unknown kind 'llama'"),
    (["--teacher", "{tmp}/teacher.json", "--model", "hf:/no/such/dir"], "no such directory"),
    (["--teacher", "{tmp}/teacher.json", "--answers", "{tmp}/reason.json"], "'finish_reason' must be a string"),
    (["--teacher", "{tmp}/teacher.json"], "nothing to measure"),
], ids=["missing file", "not a list", "no shared prompts", "openai model", "unknown spec", "missing model dir",
        "bad finish_reason", "nothing asked"])
def test_cli_bad_input(tmp_path, capsys, args, message):
    _outputs(tmp_path / "teacher.json", TEACHER)
    _outputs(tmp_path / "student.json", STUDENT)
    _outputs(tmp_path / "elsewhere.json", [Answer("nowhere", "x")])
    (tmp_path / "object.json").write_text(json.dumps({"instruction": "p1"}))
    (tmp_path / "reason.json").write_text(json.dumps([{"instruction": "p1", "output": "x", "finish_reason": 1}]))
    code, err = run_in_process(["fidelity", "--out", str(tmp_path / "f.json"), *[a.format(tmp=tmp_path) for a in args]],
                               capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "f.json").exists()


def test_cli_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    teacher = _outputs(tmp_path / "teacher.json", TEACHER)
    proc = subprocess.run([sys.executable, "-m", "apprentice", "fidelity", "--teacher", str(teacher), "--model",
                           "openai:gpt-4o-mini", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr

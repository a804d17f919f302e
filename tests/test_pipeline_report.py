"""`apprentice report DIR`: every section shows the run's real numbers, missing parts read "not run yet", model text
is escaped, bad files and non-run directories are one clear error, and the page renders in headless Chromium without
console errors (a full-page screenshot goes to test-artifacts/report.png).
Run: python -m pytest tests/test_pipeline_report.py -q"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from markupsafe import escape
from report_support import EVAL, INSTRUCTIONS, PARTS, REJECTED, STEPS, XSS, write_run

from apprentice.errors import UserError
from apprentice.evaluate.stats import summarize
from apprentice.pipeline.report import build_report

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SECTIONS = ("data", "training", "answers", "clone", "comparison", "examples", "before-after", "config")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    run = write_run(tmp_path_factory.mktemp("report") / "run")
    build_report(run)
    return run


def section_html(page: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', page, re.S)
    assert match, f"no section {name}"
    return match.group(1)


def text_of(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def section_text(page: str, name: str) -> str:
    return text_of(section_html(page, name))


def read_page(run: Path) -> str:
    return (run / "report.html").read_text(encoding="utf-8")


def test_every_section_shows_the_runs_numbers(full_run):
    page = read_page(full_run)
    data = section_text(page, "data")
    kept, rejected = len(INSTRUCTIONS), sum(REJECTED.values())
    assert f"{kept} instructions kept, {rejected} candidates rejected (68.6% accepted)" in data
    for reason, count in REJECTED.items():
        assert f"rejected: {reason} {count}" in data
    assert "requests (cached) 40 (4)" in data and "tokens in / out 12,000 / 3,400" in data
    assert "21 of 24 instructions start with a recognised verb" in data
    assert "mean 7.6 words, median 7.0, longest 12." in data
    assert data.count("output ") >= 10  # the sample of ten records

    training = section_text(page, "training")
    assert f"steps {STEPS}" in training and "loss, first → last 2.850 → 1.200" in training
    assert "tokens / s 2,000" in training and "tokens seen 12,000" in training
    assert "method lora" in training and "peak learning rate 0.001" in training and "LoRA rank 16" in training
    assert "examples trained on 23" in training and "response tokens (the loss) 900" in training

    answers = section_text(page, "answers")
    assert "student 10 7.1 6.0 14 0" in answers and "teacher 10 16.5 16.5 17 0" in answers

    annotations = json.loads((full_run / "judge" / "annotations.json").read_text())
    expected = summarize(annotations, model="student")
    low, high = (f"{100 * x:.1f}%" for x in expected["win_rate_ci"])
    comparison = section_text(page, "comparison")
    assert (expected["wins"], expected["ties"], expected["losses"]) == (3, 3, 4)
    assert "student win rate 45.0%" in comparison and f"95% interval {low} to {high}" in comparison
    assert f"sign test p {expected['sign_test_p']:.3g}" in comparison
    assert "judge swap agreement 90.0%" in comparison and "90.0% of 10 pairs judged in both orders" in comparison
    assert "No detectable difference." in comparison and "contains 50%" in comparison
    assert "openai:judge-model" in comparison

    examples = section_text(page, "examples")
    assert "8 of 10 instructions" in examples
    for verdict in ("student better", "teacher better", "tie (the two orders disagreed)"):
        assert verdict in examples
    before_after = section_text(page, "before-after")
    for prompt in EVAL[:3]:
        assert prompt in before_after
    assert "base model (101 words)" in before_after and "student (6 words)" in before_after
    assert "openai:teacher-model@http://127.0.0.1:9/v1" in text_of(page.split("<main", 1)[0])

    clone = section_text(page, "clone")
    assert "from 2.500 to 1.500 nats per token: 40.0% below the base model" in clone
    assert "NLL of the teacher's answers (nats/token; lower is closer) 2.500 1.500" in clone
    # the base wrote 3 rambling answers, the student 10 short ones; the teacher's measures are its own
    fidelity = json.loads((full_run / "fidelity.json").read_text())
    base, student = (a["measures"] for a in fidelity["answers"])
    teacher = fidelity["answers"][1]["teacher"]
    closed = 1 - abs(student["median_words"] - teacher["median_words"]) / abs(base["median_words"] -
                                                                               teacher["median_words"])
    assert (base["median_words"], student["median_words"], teacher["median_words"]) == (101, 6.0, 16.5)
    assert f"median length (words) 101 6.0 16.5 {100 * closed:.0f}%" in clone
    assert "base 3, student 10" in clone

    assert page.count('src="data:image/png;base64,') == 7  # counts, lengths, verbs, loss, answer lengths, gap, verdicts
    assert "not run yet" not in page.lower()


def test_model_text_is_escaped(full_run):
    page = read_page(full_run)
    assert "<script" not in page and "<img src=x" not in page
    assert str(escape(XSS)) in page  # shown as text, in the examples and in the before/after check
    assert page.count(str(escape(XSS))) >= 3  # data sample, side by side, before/after


@pytest.mark.parametrize("parts, ran", [
    ({"generate"}, {"data"}),
    ({"train"}, {"training"}),
    ({"generate", "train", "answers"}, {"data", "training", "answers", "examples"}),
    ({"answers", "base"}, {"answers", "examples", "before-after"}),
    ({"config"}, {"config"}),
    (set(PARTS) - {"base", "fidelity"}, {"data", "training", "answers", "comparison", "examples", "config"}),
], ids=["generate-only", "train-only", "before-judging", "answers-only", "config-only", "no-base-answers"])
def test_missing_parts_read_not_run_yet(tmp_path, parts, ran):
    run = write_run(tmp_path / "run", parts)
    build_report(run)
    page = read_page(run)
    waiting_for = {"data": "generate/data.jsonl", "training": "student/metrics.jsonl",
                   "answers": "answers/student.json", "comparison": "judge/annotations.json",
                   "examples": "answers/student.json and answers/teacher.json",
                   "before-after": "answers/base.json", "config": "run.toml", "clone": "fidelity.json"}
    for name in SECTIONS:
        text = section_text(page, name)
        if name in ran:
            assert "Not run yet" not in text, name
        else:
            assert "Not run yet" in text and waiting_for[name] in text, name


def test_a_training_run_in_progress_shows_its_log(tmp_path):
    run = write_run(tmp_path / "run", {"train"})
    (run / "student" / "apprentice.json").unlink()
    with (run / "student" / "metrics.jsonl").open("a") as log:
        log.write('{"step": 13, "loss": 1.1')  # the line a running trainer is writing
    before = (run / "student" / "metrics.jsonl").read_bytes()
    training = section_text(read_page(build_report(run).parent), "training")
    assert "Training has not finished" in training and f"steps {STEPS}" in training
    assert "Settings appear when training finishes." in training
    assert (run / "student" / "metrics.jsonl").read_bytes() == before  # the report never edits a run's files


def test_a_run_that_has_just_started(tmp_path):
    run = tmp_path / "run"
    (run / "generate").mkdir(parents=True)
    (run / "generate" / "data.jsonl").write_text("")
    (run / "student").mkdir()
    (run / "student" / "metrics.jsonl").write_text('{"event": "started"}\n')  # not a step: no loss
    page = read_page(build_report(run).parent)
    assert "0 instructions kept, 0 candidates rejected." in section_text(page, "data")
    training = section_text(page, "training")
    assert "Training has not finished" in training and "steps" not in training.split("Settings")[0].lower()


@pytest.mark.parametrize("file, content, message", [
    ("student/metrics.jsonl", '{"step": 1, "loss": 2.0}\nnot json\n{"step": 3, "loss": 1.0}\n',
     "student/metrics.jsonl:2: invalid JSON"),
    ("student/metrics.jsonl", '{"step": 1, "loss": "high"}\n', "student/metrics.jsonl:1: 'loss' must be a number"),
    ("generate/data.jsonl", '{"instruction": 5}\n', "generate/data.jsonl:1: field 'instruction' must be a string"),
    ("answers/student.json", '{"instruction": "x"}', "answers/student.json: expected an AlpacaEval outputs list"),
    ("judge/annotations.json", '[{"instruction": "x", "output_1": "a", "output_2": "b", "preference": 7}]',
     "judge/annotations.json: item 0: preference 7"),
    ("run.toml", "[teacher\n", "run.toml: not TOML"),
])
def test_a_malformed_file_is_one_error_naming_it(tmp_path, file, content, message):
    run = tmp_path / "run"
    (run / file).parent.mkdir(parents=True)
    (run / file).write_text(content)
    with pytest.raises(UserError) as caught:
        build_report(run)
    assert message in str(caught.value).replace(str(run) + "/", "")
    assert not (run / "report.html").exists()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apprentice", "report", *args], capture_output=True, text=True,
                          timeout=60)


def test_human_votes_from_votes_sqlite_are_counted_in_the_comparison(tmp_path):
    from apprentice.annotate import store as votes
    from apprentice.evaluate.outputs import join_outputs, load_outputs

    run = write_run(tmp_path / "run")
    student, teacher = run / "answers" / "student.json", run / "answers" / "teacher.json"
    db = votes.create_db(run / "votes.sqlite")
    votes.import_pairs(db, join_outputs(load_outputs(student), load_outputs(teacher), str(student), str(teacher)))
    build_report(run)
    assert "No votes yet in votes.sqlite" in section_text(read_page(run), "comparison")

    student_says = {o.instruction: o.output for o in load_outputs(student)}
    for name, ballots in (("ana", ["student"] * 10), ("bo", ["tie", "tie", "teacher", "student"])):
        annotator = votes.find_annotator(db, votes.add_annotator(db, name))
        for ballot in ballots:
            shown = votes.next_item(db, annotator, votes_per_item=2)
            student_side = "left" if shown.left == student_says[shown.instruction] else "right"
            side = {"student": student_side, "teacher": {"left": "right", "right": "left"}[student_side]}.get(
                ballot, "tie")
            votes.record_vote(db, annotator, shown.item_id, side, "", votes_per_item=2)
            votes.advance(db, annotator, shown.item_id)
    db.close()
    build_report(run)
    text = section_text(read_page(run), "comparison")
    assert "Human votes 14 blind votes from 2 annotators" in text
    assert "student wins / ties / losses 11 / 2 / 1" in text.split("Human votes")[1]
    expected = summarize([{**a, "generator_1": "student", "generator_2": "teacher"}
                          for a in votes.load_annotations(run / "votes.sqlite")], model="student")
    assert f"{100 * expected['win_rate']:.1f}%" in text.split("Human votes")[1]


def test_cli_prints_the_path_and_rejects_a_directory_that_is_no_run(tmp_path):
    run = write_run(tmp_path / "run", {"generate"})
    done = run_cli(str(run), "--no-open")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(run / "report.html") and (run / "report.html").is_file()

    (tmp_path / "empty" / "notes").mkdir(parents=True)
    empty, absent = tmp_path / "empty", tmp_path / "absent"
    for target, message in ((empty, f"{empty} is not a run directory"), (absent, f"{absent}: no such directory")):
        done = run_cli(str(target))
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
    assert not (tmp_path / "empty" / "report.html").exists()


def test_the_report_renders_in_chromium_without_errors(full_run):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed")
    from playwright.sync_api import sync_playwright

    url = (full_run / "report.html").resolve().as_uri()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url)
            assert problems == []
            assert [r for r in requests if not r.startswith("data:")] == [url]  # the page loads nothing else
            sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
            assert len(sizes) == 7 and all(w > 200 and h > 80 for w, h in sizes)
            assert page.evaluate("window.__xss") is None
            assert page.locator("section").count() == len(SECTIONS)
            assert page.locator("#comparison .big strong").first.inner_text() == "45.0%"
            clone = page.locator("#clone")
            assert clone.locator("img").count() == 1 and clone.locator("tr").count() == 1 + 1 + 5  # header, NLL, 5
            assert clone.bounding_box()["width"] > 600
            ARTIFACTS.mkdir(exist_ok=True)
            clone.screenshot(path=str(ARTIFACTS / "report_clone.png"))
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()


def test_alpaca_evals_own_annotations_read_as_published(tmp_path, shared_data):
    """AlpacaEval's GPT-4 judgments of text-davinci-003 (output_1, here in the student's place) against Alpaca 7B:
    the leaderboard's 205 Alpaca wins, 16 ties and 584 losses, seen from the other side."""
    run = tmp_path / "run"
    (run / "judge").mkdir(parents=True)
    source = shared_data / "alpaca_eval" / "alpaca-7b_vs_text_davinci_003.alpaca_eval_gpt4.annotations.json"
    (run / "judge" / "annotations.json").write_bytes(source.read_bytes())
    page = read_page(build_report(run).parent)
    comparison = section_text(page, "comparison")
    assert "student wins / ties / losses 584 / 16 / 205" in comparison and "student win rate 73.5%" in comparison
    assert "Better." in comparison and "not checked: no pair was judged in both orders" in comparison
    assert "8 of 805 instructions" in section_text(page, "examples")

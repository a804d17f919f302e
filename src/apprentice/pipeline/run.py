"""`apprentice run`: every stage of the Alpaca loop from one config, into one run directory.

    generate -> train -> answer (student, teacher, base) -> fidelity -> judge -> tally -> [annotate] -> report

Each stage's key is a hash of its settings and of the keys of the stages it reads from, so a stage whose inputs and
settings are unchanged is skipped, one whose key changed is redone (with everything after it), and one that was
interrupted continues where it stopped (every stage resumes on its own files). `RUN/state.json` holds the keys.

Layout of RUN/:
    run.toml               the resolved config
    generate/              data.jsonl, rejected.jsonl, alpaca_data.json, stats.json, requests.sqlite
    student/               the trained model, metrics.jsonl, apprentice.json
    eval_prompts.jsonl     the evaluation prompts both models answer
    answers/               student.json, teacher.json, base.json (AlpacaEval model_outputs)
    fidelity.json          how close base and student are to the teacher, without a judge (apprentice fidelity)
    judge/annotations.json judgments, output_1 = student, output_2 = teacher
    tally.json             the statistics, from the student's side
    votes.sqlite           with [annotate]: the blind human-vote database
    report.html
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rich.console import Console

from apprentice.errors import UserError
from apprentice.jsonfile import write_json_atomic
from apprentice.pipeline.config import RunConfig, to_toml
from apprentice.runlock import hold

STUDENT, TEACHER, BASE = "student", "teacher", "base"


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]  # stages whose output this one uses
    outputs: tuple[str, ...]  # paths under RUN/ that belong to this stage
    settings: Callable[[RunConfig], dict]
    run: Callable[[RunConfig, Path, bool, Console], None]  # (config, run dir, resuming, console)
    always: bool = False  # run on every invocation, even when up to date (its inputs change outside the pipeline)


def _file_sha(path: Path | None) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path else None


def _json_default(value):
    return str(value)


# ---- the stages: each calls one stage's core with settings from the config -------------------------------------


def _generate(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.generate.config import GenerateConfig
    from apprentice.generate.run import generate

    g = config.generate
    result = generate(GenerateConfig(
        teacher=config.teacher.model, out=run_dir / "generate", num=g.num, seeds=g.seeds, strategy=g.strategy,
        api=g.api, seed=g.seed, concurrency=config.teacher.concurrency,
        prompts_per_request=config.teacher.prompts_per_request, max_requests=g.max_requests,
        price_in=g.price_in, price_out=g.price_out, threshold=g.threshold, filters=g.filters, outputs=g.outputs,
        answer_max_tokens=g.answer_max_tokens, answer_temperature=g.answer_temperature,
    ), console)
    kept = result.stats.kept
    if kept == 0:
        raise UserError(f"the teacher produced no usable records in {run_dir / 'generate'} (see rejected.jsonl): "
                        "try another teacher or strategy, or raise [generate] max_requests")
    if result.status == "capped":
        console.print(f"[yellow]generate stopped at max_requests with {kept} of {g.num} records[/]; the run goes on "
                      "with those (raise [generate] max_requests for more)")


def _train(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.train.loop import TrainConfig, train

    out = run_dir / "student"
    resume = resuming and (out / "checkpoints").exists()
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    settings = asdict(config.train)
    launch = settings.pop("launch")
    train_config = TrainConfig(**settings, data=str(run_dir / "generate" / "alpaca_data.json"), out=str(out),
                               resume=resume)
    if launch is None:
        train(train_config, console)
        return
    command = [*shlex.split(launch), "-m", "apprentice", "train", *train_arguments(train_config)]
    console.print(f"launching: {shlex.join(command)}", highlight=False)
    if subprocess.run(command).returncode != 0:
        raise UserError(f"training failed under `{launch}` (its output is above); fix it and rerun to resume")


def train_arguments(config) -> list[str]:
    """`apprentice train` options that reproduce a TrainConfig: the fields that differ from their defaults (every
    such field the run config can set is a command-line option), flags only when true."""
    defaults = {f.name: f.default for f in fields(config)}
    arguments: list[str] = []
    for name, value in asdict(config).items():
        if value == defaults[name] and name not in ("base", "data", "out"):
            continue
        option = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            arguments += [option] if value else []
        elif value is not None:
            arguments += [option, str(value)]
    return arguments


def _eval_prompts(config: RunConfig, run_dir: Path) -> Path:
    """Write the prompts both models answer (the first `limit` of the eval set) as Self-Instruct JSONL."""
    from apprentice.evaluate.prompts import load_prompts

    prompts = load_prompts(config.eval.prompts)[: config.eval.limit]
    path = run_dir / "eval_prompts.jsonl"
    lines = [json.dumps({"id": p.id, "instruction": p.instruction, "instances": [{"input": p.input, "output": ""}]},
                        ensure_ascii=False) for p in prompts]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _answer(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.evaluate.answer import AnswerConfig, answer

    prompts = _eval_prompts(config, run_dir)
    answers = run_dir / "answers"
    common = dict(max_tokens=config.eval.max_tokens, batch_size=config.eval.batch_size,
                  concurrency=config.teacher.concurrency)
    console.rule("student answers")
    answer(AnswerConfig(model=f"hf:{run_dir / 'student'}", prompts=str(prompts), out=str(answers / "student.json"),
                        generator=STUDENT, **common), console)
    console.rule("teacher answers")
    answer(AnswerConfig(model=config.teacher.model, prompts=str(prompts), out=str(answers / "teacher.json"),
                        generator=TEACHER, **common), console)
    if config.eval.before_after:
        console.rule("base model answers (before training)")
        few = run_dir / "answers" / "base_prompts.jsonl"
        few.write_text("".join(prompts.read_text(encoding="utf-8").splitlines(keepends=True)
                               [: config.eval.before_after]), encoding="utf-8")
        answer(AnswerConfig(model=config.train.base, prompts=str(few), out=str(answers / "base.json"),
                            generator=BASE, base_template=True, **common), console)


def _fidelity(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    """NLL of the teacher's answers under the base model and the student, and the behaviour measures of their
    answers beside the teacher's: how far training moved the student towards the teacher, with no judge."""
    from apprentice.evaluate.fidelity import fidelity_report

    answers = run_dir / "answers"
    common = dict(batch_size=config.eval.batch_size, prompts_file=run_dir / "eval_prompts.jsonl",
                  max_len=config.train.max_len, console=console)
    behaviour = [answers / f"{who}.json" for who in (BASE, STUDENT) if (answers / f"{who}.json").is_file()]
    # the base model is scored with the Alpaca template, as it answered; the student with the template it learned
    base = fidelity_report(answers / "teacher.json", [config.train.base], behaviour, base_template=True, **common)
    student = fidelity_report(answers / "teacher.json", [f"hf:{run_dir / 'student'}"], [], **common)
    report = {**base, "models": [{**base["models"][0], "role": BASE}, {**student["models"][0], "role": STUDENT}],
              "answers": [{**item, "role": Path(item["file"]).stem} for item in base["answers"]]}
    write_json_atomic(run_dir / "fidelity.json", report)
    nll = {m["role"]: m["nll"] for m in report["models"]}
    change = nll[STUDENT] / nll[BASE] - 1
    console.print(f"NLL of the teacher's answers: base {nll[BASE]:.3f}, student {nll[STUDENT]:.3f} nats/token "
                  f"({100 * abs(change):.1f}% {'below' if change <= 0 else 'above'} the base); see "
                  f"{run_dir / 'fidelity.json'}", highlight=False)


def _judge(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.evaluate.judge import judge_files
    from apprentice.models.spec import BackendOptions

    judge_files(run_dir / "answers" / "student.json", run_dir / "answers" / "teacher.json", config.judge_model,
                run_dir / "judge" / "annotations.json", orders=config.judge.orders, seed=config.judge.seed,
                max_tokens=config.judge.max_tokens, console=console,
                options=BackendOptions(concurrency=config.teacher.concurrency, batch_size=config.eval.batch_size))


def _tally(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.evaluate.tally import print_summary, tally_file

    summary = tally_file(run_dir / "judge" / "annotations.json", STUDENT)
    write_json_atomic(run_dir / "tally.json", summary)
    print_summary(summary, console)


def _annotate(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.annotate.store import create_db, import_pairs
    from apprentice.evaluate.outputs import join_outputs, load_outputs

    a, b = run_dir / "answers" / "student.json", run_dir / "answers" / "teacher.json"
    db = create_db(run_dir / "votes.sqlite")
    import_pairs(db, join_outputs(load_outputs(a), load_outputs(b), str(a), str(b)))
    db.close()
    console.print(f"human votes: apprentice annotate --a {a} --b {b} --db {run_dir / 'votes.sqlite'} "
                  f"--votes-per-item {config.annotate.votes_per_item}", highlight=False)


def _report(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.pipeline.report import build_report

    console.print(f"report: {build_report(run_dir)}", highlight=False)


STAGES: tuple[Stage, ...] = (
    Stage("generate", (), ("generate",),
          lambda c: {"teacher": c.teacher.model, **asdict(c.generate), "seeds_sha": _file_sha(c.generate.seeds)},
          _generate),
    Stage("train", ("generate",), ("student",), lambda c: asdict(c.train), _train),
    Stage("answer", ("train",), ("answers", "eval_prompts.jsonl"),
          lambda c: {"teacher": c.teacher.model, "base": c.train.base, **asdict(c.eval),
                     "prompts_sha": _file_sha(c.eval.prompts)}, _answer),
    Stage("fidelity", ("answer",), ("fidelity.json",),
          lambda c: {"batch_size": c.eval.batch_size, "max_len": c.train.max_len}, _fidelity),
    Stage("judge", ("answer",), ("judge",), lambda c: {"judge": c.judge_model, **asdict(c.judge)}, _judge),
    Stage("tally", ("judge",), ("tally.json",), lambda c: {}, _tally),
    Stage("annotate", ("answer",), ("votes.sqlite",), lambda c: asdict(c.annotate) if c.annotate else {}, _annotate),
    # cheap, and it shows the human votes too, which arrive outside the pipeline: rebuilt on every run
    Stage("report", ("generate", "train", "answer", "fidelity", "judge", "tally"), ("report.html",), lambda c: {}, _report,
          always=True),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def stage_keys(config: RunConfig) -> dict[str, str]:
    keys: dict[str, str] = {}
    for stage in STAGES:
        blob = json.dumps({"settings": stage.settings(config), "reads": [keys[r] for r in stage.reads]},
                          sort_keys=True, default=_json_default)
        keys[stage.name] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return keys


class RunState:
    """RUN/state.json: per stage, the key it ran with and whether it finished."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "state.json"
        try:
            self.stages: dict[str, dict] = json.loads(self.path.read_text()).get("stages", {})
        except FileNotFoundError:
            self.stages = {}
        except ValueError:
            raise UserError(f"{self.path} is not valid JSON: delete it to redo the whole run") from None

    def set(self, name: str, key: str, status: str) -> None:
        self.stages[name] = {"key": key, "status": status, "time": time.time()}
        write_json_atomic(self.path, {"stages": self.stages})


def run_pipeline(config: RunConfig, run_dir: Path, from_stage: str | None = None,
                 console: Console | None = None) -> Path:
    """Run every stage that is not up to date; returns the report's path."""
    console = console or Console()
    if from_stage is not None and from_stage not in STAGE_NAMES:
        raise UserError(f"unknown stage {from_stage!r} for --from: choose one of {', '.join(STAGE_NAMES)}")
    with hold(run_dir, "apprentice run"):  # one pipeline per run directory
        return _run_stages(config, run_dir, from_stage, console)


def _run_stages(config: RunConfig, run_dir: Path, from_stage: str | None, console: Console) -> Path:
    (run_dir / "run.toml").write_text(to_toml(config), encoding="utf-8")
    state = RunState(run_dir)
    keys = stage_keys(config)
    forced = STAGE_NAMES[STAGE_NAMES.index(from_stage):] if from_stage else ()
    for index, stage in enumerate(STAGES, 1):
        if stage.name == "annotate" and config.annotate is None:
            continue
        saved = state.stages.get(stage.name, {})
        same_key = saved.get("key") == keys[stage.name] and stage.name not in forced and not stage.always
        if same_key and saved.get("status") == "done":
            console.print(f"[dim]stage {index}/{len(STAGES)} {stage.name}: up to date, skipped[/]")
            continue
        resuming = same_key and saved.get("status") == "started"
        if not resuming:
            for output in stage.outputs:
                target = run_dir / output
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        console.rule(f"stage {index}/{len(STAGES)}: {stage.name}" + (" (resuming)" if resuming else ""))
        state.set(stage.name, keys[stage.name], "started")
        stage.run(config, run_dir, resuming, console)
        state.set(stage.name, keys[stage.name], "done")
    return run_dir / "report.html"

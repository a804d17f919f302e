"""`apprentice run`: every stage of the Alpaca loop from one config, into one run directory.

    generate -> train -> references (teacher and base answers) -> answer (student) -> fidelity -> judge -> tally
    -> [annotate] -> report

A stage decides what invalidates it. Its key is a hash of the settings that change its output (generate: the ones
that decide its requests, with the teacher's model but not its URL; not `num`, prices, concurrency or the request
cap) and of the content of the files it reads from earlier stages, so a rerun after an upstream change redoes only
what that change reached. On a rerun:
* same key, finished, same other settings: skipped;
* same key, other settings changed (generate's `num`) or interrupted: run again on its own files, which continues
  it (generate goes on to the new `num`, train resumes from its checkpoint, answer from its sidecar);
* a new key (or `--from`): its old outputs are moved aside to RUN/replaced/<time>-<stage>/, never deleted, and it
  runs anew.
Every teacher, answer and judge call of a served model goes through one call record, RUN/calls.sqlite, so a request
that was answered is never sent again, whatever changed. Human votes are never moved with a stage: when the answers
change, RUN/votes.sqlite is renamed after the answers it was cast on (votes.<hash>.sqlite) and a new one started.
`RUN/state.json` holds each stage's key; one process at a time holds the run directory's lock.

Layout of RUN/:
    run.toml               the resolved config
    calls.sqlite           every model call of the run (request, answer, usage): the cache that never pays twice
    generate/              data.jsonl, rejected.jsonl, alpaca_data.json, stats.json
    student/               the trained model, metrics.jsonl, apprentice.json
    eval_prompts.jsonl     the evaluation prompts both models answer
    answers/               student.json, teacher.json, base.json (AlpacaEval model_outputs)
    fidelity.json          how close base and student are to the teacher, without a judge (apprentice fidelity)
    judge/annotations.json judgments, output_1 = student, output_2 = teacher
    tally.json             the statistics, from the student's side
    votes.sqlite           with [annotate]: the blind human-vote database (votes.<hash>.sqlite: on earlier answers)
    replaced/              outputs of stages whose settings changed, moved aside
    report.html
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rich.console import Console

from apprentice.errors import UserError
from apprentice.jsonfile import write_json_atomic, write_text_atomic
from apprentice.pipeline.config import RunConfig, to_toml
from apprentice.runlock import hold
from apprentice.settings import output_names, output_values

STUDENT, TEACHER, BASE = "student", "teacher", "base"


CALLS = "calls.sqlite"  # RUN/calls.sqlite: the call record every stage shares
REPLACED = "replaced"  # RUN/replaced/<time>-<stage>/: outputs of a stage whose key changed


def _nothing(config: RunConfig) -> dict:
    return {}


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[str, ...]  # files under RUN/ (made by earlier stages) whose content this one uses
    outputs: tuple[str, ...]  # paths under RUN/ that belong to this stage (moved aside when its key changes)
    key: Callable[[RunConfig], dict]  # settings that change its output
    run: Callable[[RunConfig, Path, bool, Console], None]  # (config, run dir, continuing, console)
    settings: Callable[[RunConfig], dict] = _nothing  # settings it continues with: a change reruns it on its files
    always: bool = False  # run on every invocation, even when up to date (its inputs change outside the pipeline)


def _file_sha(path: Path | None) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path else None


def _json_default(value):
    return str(value)


# ---- the stages: each calls one stage's core with settings from the config -------------------------------------


def _generate_config(config: RunConfig, run_dir: Path):
    """[generate]'s settings (with [teacher]'s, which the config put there) in the run directory."""
    return replace(config.generate, out=run_dir / "generate", cache=run_dir / CALLS)


def _generate_key(config: RunConfig) -> dict:
    """What decides generate's requests (generate/config.py's `plan_identity`, the teacher by model, not URL), but
    not its lookahead, which a run fixes when it starts."""
    from apprentice.generate.config import plan_identity, resolve, to_json

    plan = plan_identity(to_json(resolve(_generate_config(config, Path("RUN")))))
    return {key: value for key, value in plan.items() if key != "window"}


def estimate_generate(config: RunConfig, run_dir: Path):
    """The generate stage's estimate (a table) for this config and run directory; sends and writes nothing."""
    from apprentice.generate.config import resolve
    from apprentice.generate.estimate import estimate_run, estimate_table, measured_basis
    from apprentice.generate.seeds import load_seed_tasks

    generate_config = resolve(_generate_config(config, run_dir))
    basis = measured_basis(generate_config, _model(config.teacher.model))
    return estimate_table(estimate_run(generate_config, load_seed_tasks(config.generate.seeds), basis))


def _generate(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.generate.run import generate

    g = config.generate
    result = generate(_generate_config(config, run_dir), console)
    kept = result.stats.kept
    if kept == 0:
        raise UserError(f"the teacher produced no usable records in {run_dir / 'generate'} (see rejected.jsonl): "
                        "try another teacher or strategy, or raise [generate] max_requests")
    if result.status in ("capped", "cost_capped"):
        cap = "max_requests" if result.status == "capped" else f"max_cost (${result.paid_usd:.4f} paid)"
        console.print(f"[yellow]generate stopped at {cap} with {kept} of {g.num} records[/]; the run goes on "
                      f"with those (raise [generate] {cap.split()[0]} for more)", highlight=False)


def _train(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.train.loop import train

    out = run_dir / "student"
    resume = resuming and (out / "checkpoints").exists()
    if not resume and out.exists():  # interrupted before its first checkpoint: start over, keeping what was there
        _move_aside(run_dir, "train", ("student",), console)
    train_config = replace(config.train, data=str(run_dir / "generate" / "alpaca_data.json"), out=str(out),
                           resume=resume)
    if train_config.launch is None:
        train(train_config, console)
        return
    command = [*shlex.split(train_config.launch), "-m", "apprentice", "train", *train_arguments(train_config)]
    console.print(f"launching: {shlex.join(command)}", highlight=False)
    if subprocess.run(command).returncode != 0:
        raise UserError(f"training failed under `{train_config.launch}` (its output is above); fix it and rerun to "
                        "resume")


def train_arguments(config) -> list[str]:
    """`apprentice train` options that reproduce a TrainConfig: its command-line settings that differ from their
    defaults (the required ones always), flags only when true."""
    from apprentice.settings import cli_fields, flag_of

    arguments: list[str] = []
    for f, _ in cli_fields(type(config)):
        value = getattr(config, f.name)
        if value == f.default:
            continue
        if isinstance(value, bool):
            arguments += [flag_of(f)] if value else []
        elif value is not None:
            arguments += [flag_of(f), str(value)]
    return arguments


def _write_prompts(prompts, path: Path) -> Path:
    """Evaluation prompts as Self-Instruct JSONL (what `apprentice answer --prompts` reads)."""
    lines = [json.dumps({"id": p.id, "instruction": p.instruction, "instances": [{"input": p.input, "output": ""}]},
                        ensure_ascii=False) for p in prompts]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _references(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    """The answers training does not change: the teacher's (through the call record) and the untrained base's."""
    from apprentice.evaluate.answer import AnswerConfig, answer
    from apprentice.evaluate.prompts import load_prompts

    prompts = load_prompts(config.eval.prompts)[: config.eval.limit]
    path = _write_prompts(prompts, run_dir / "eval_prompts.jsonl")
    answers = run_dir / "answers"
    common = dict(max_tokens=config.eval.max_tokens, temperature=config.eval.temperature,
                  batch_size=config.eval.batch_size, concurrency=config.teacher.concurrency,
                  timeout=config.teacher.timeout, max_retries=config.teacher.max_retries, rpm=config.teacher.rpm,
                  tpm=config.teacher.tpm, engine=config.teacher.engine)
    console.rule("teacher answers")
    answer(AnswerConfig(model=config.teacher.model, prompts=str(path), out=str(answers / "teacher.json"),
                        generator=TEACHER, cache=str(run_dir / CALLS), **common), console)
    if config.eval.before_after:
        console.rule("base model answers (before training)")
        few = _write_prompts(prompts[: config.eval.before_after], answers / "base_prompts.jsonl")
        answer(AnswerConfig(model=config.train.base, prompts=str(few), out=str(answers / "base.json"),
                            generator=BASE, base_template=True, **common), console)


def _answer(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.evaluate.answer import AnswerConfig, answer

    console.rule("student answers")
    answer(AnswerConfig(model=f"hf:{run_dir / 'student'}", prompts=str(run_dir / "eval_prompts.jsonl"),
                        out=str(run_dir / "answers" / "student.json"), generator=STUDENT,
                        max_tokens=config.eval.max_tokens, temperature=config.eval.temperature,
                        batch_size=config.eval.batch_size, engine=config.teacher.engine), console)


def _fidelity(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    """NLL of the teacher's answers under the base model and the student, and the behaviour measures of their
    answers beside the teacher's: how far training moved the student towards the teacher, with no judge."""
    from apprentice.evaluate.fidelity import fidelity_report

    answers = run_dir / "answers"
    common = dict(batch_size=config.eval.batch_size, prompts_file=run_dir / "eval_prompts.jsonl",
                  max_len=config.train.max_len, console=console)
    behaviour = [answers / f"{who}.json" for who in (BASE, STUDENT) if (answers / f"{who}.json").is_file()]
    base, student = config.train.base, f"hf:{run_dir / 'student'}"
    # the base model is scored with the Alpaca template, as it answered; the student with the template it learned
    report = fidelity_report(answers / "teacher.json", [base, student], behaviour, base_template=[base], **common)
    report["models"] = [{**report["models"][0], "role": BASE}, {**report["models"][1], "role": STUDENT}]
    report["answers"] = [{**item, "role": Path(item["file"]).stem} for item in report["answers"]]
    write_json_atomic(run_dir / "fidelity.json", report)
    nll = {m["role"]: m["nll"] for m in report["models"]}
    change = nll[STUDENT] / nll[BASE] - 1
    console.print(f"NLL of the teacher's answers: base {nll[BASE]:.3f}, student {nll[STUDENT]:.3f} nats/token "
                  f"({100 * abs(change):.1f}% {'below' if change <= 0 else 'above'} the base); see "
                  f"{run_dir / 'fidelity.json'}", highlight=False)


def _judge(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.evaluate.judge import judge_files
    from apprentice.models.base import BackendOptions

    judge_files(run_dir / "answers" / "student.json", run_dir / "answers" / "teacher.json", config.judge_model,
                run_dir / "judge" / "annotations.json", orders=config.judge.orders, seed=config.judge.seed,
                max_tokens=config.judge.max_tokens, console=console, cache=run_dir / CALLS,
                controls=config.judge.controls,
                options=BackendOptions(concurrency=config.teacher.concurrency, batch_size=config.eval.batch_size,
                                       timeout=config.judge.timeout, max_retries=config.judge.max_retries,
                                       engine=config.teacher.engine, **_judge_limits(config)))


def _judge_limits(config: RunConfig) -> dict[str, float | None]:
    """[judge] rpm and tpm; when the teacher judges, its limits unless [judge] sets its own (one key, one limit)."""
    limits = {"rpm": config.judge.rpm, "tpm": config.judge.tpm}
    if config.judge_model == config.teacher.model:
        limits = {key: getattr(config.teacher, key) if value is None else value for key, value in limits.items()}
    return limits


def _tally(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.evaluate.tally import print_summary, tally_file

    summary = tally_file(run_dir / "judge" / "annotations.json", STUDENT)
    write_json_atomic(run_dir / "tally.json", summary)
    print_summary(summary, console)


def _annotate(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.annotate.store import create_db, import_pairs, move_aside, pairs_fingerprint, stored_fingerprint
    from apprentice.evaluate.outputs import join_outputs, load_outputs

    a, b = run_dir / "answers" / "student.json", run_dir / "answers" / "teacher.json"
    pairs = join_outputs(load_outputs(a), load_outputs(b), str(a), str(b))
    votes = run_dir / "votes.sqlite"
    earlier = stored_fingerprint(votes)
    if earlier is not None and earlier != pairs_fingerprint(pairs):  # people voted on other answers: keep them
        kept = run_dir / f"votes.{earlier[:12]}.sqlite"
        move_aside(votes, kept)
        console.print(f"the answers changed: the votes cast on the earlier ones are kept in {kept}", highlight=False)
    db = create_db(votes)
    # 0 keeps what the database has, so controls added with `apprentice annotate --controls` survive a rerun
    import_pairs(db, pairs, config.annotate.controls or None)
    db.close()
    console.print(f"human votes: apprentice annotate --a {a} --b {b} --db {run_dir / 'votes.sqlite'} "
                  f"--votes-per-item {config.annotate.votes_per_item}", highlight=False)


def _report(config: RunConfig, run_dir: Path, resuming: bool, console: Console) -> None:
    from apprentice.pipeline.report import build_report

    console.print(f"report: {build_report(run_dir)}", highlight=False)


def _eval_key(config: RunConfig) -> dict:
    e = config.eval
    return {"prompts_sha": _file_sha(e.prompts), "limit": e.limit, "max_tokens": e.max_tokens,
            "temperature": e.temperature}


def _model(spec: str) -> str:
    from apprentice.models.spec import model_identity, parse_spec

    return model_identity(parse_spec(spec))


ANSWERS = ("answers/student.json", "answers/teacher.json")
STAGES: tuple[Stage, ...] = (
    Stage("generate", (), ("generate",), _generate_key, _generate,
          settings=lambda c: {name: value for name, value in asdict(c.generate).items()
                              if name not in output_names(type(c.generate))}),
    Stage("train", ("generate/alpaca_data.json",), ("student",),
          lambda c: output_values(c.train), _train),
    Stage("references", (), ("answers/teacher.json", "answers/base.json", "answers/base_prompts.jsonl",
                             "eval_prompts.jsonl"),
          lambda c: {"teacher": _model(c.teacher.model), "base": c.train.base, "before_after": c.eval.before_after,
                     **_eval_key(c)}, _references),
    Stage("answer", ("student/apprentice.json", "eval_prompts.jsonl"), ("answers/student.json",),
          lambda c: {"max_tokens": c.eval.max_tokens, "temperature": c.eval.temperature}, _answer),
    Stage("fidelity", (*ANSWERS, "answers/base.json", "student/apprentice.json"), ("fidelity.json",),
          lambda c: {"base": c.train.base, "max_len": c.train.max_len}, _fidelity),
    Stage("judge", ANSWERS, ("judge",),
          lambda c: {"judge": _model(c.judge_model), "orders": c.judge.orders, "seed": c.judge.seed,
                     "max_tokens": c.judge.max_tokens,
                     # only when set, so that runs judged before controls existed keep their key
                     **({"controls": c.judge.controls} if c.judge.controls else {})}, _judge),
    Stage("tally", ("judge/annotations.json",), ("tally.json",), _nothing, _tally),
    # votes are never moved with the stage: _annotate keeps the database of earlier answers under its own name
    Stage("annotate", ANSWERS, (), _nothing, _annotate,
          settings=lambda c: asdict(c.annotate) if c.annotate else {}),
    # cheap, and it shows the human votes too, which arrive outside the pipeline: rebuilt on every run
    Stage("report", (), ("report.html",), _nothing, _report, always=True),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=_json_default).encode()).hexdigest()[:16]


def stage_key(stage: Stage, config: RunConfig, run_dir: Path) -> str:
    """The stage's settings that change its output and the content of the files it reads, hashed."""
    inputs = {name: _file_sha(run_dir / name) if (run_dir / name).is_file() else None for name in stage.reads}
    return _digest({"settings": stage.key(config), "reads": inputs})


def _move_aside(run_dir: Path, stage: str, outputs: tuple[str, ...], console: Console) -> None:
    """Move a stage's outputs to RUN/replaced/<time>-<stage>/ (what they cost is never thrown away)."""
    present = [name for name in outputs if (run_dir / name).exists()]
    if not present:
        return
    target = run_dir / REPLACED / f"{time.strftime('%Y%m%d-%H%M%S')}-{stage}"
    while target.exists():
        target = target.with_name(target.name + "+")
    for name in present:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).rename(target / name)
    console.print(f"[dim]{stage}: its settings or inputs changed; the earlier outputs are in "
                  f"{target.relative_to(run_dir)}[/]")


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

    def set(self, name: str, key: str, settings: str, status: str) -> None:
        self.stages[name] = {"key": key, "settings": settings, "status": status, "time": time.time()}
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
    _adopt_generate_cache(run_dir)
    state = RunState(run_dir)
    forced = STAGE_NAMES[STAGE_NAMES.index(from_stage):] if from_stage else ()
    for index, stage in enumerate(STAGES, 1):
        if stage.name == "annotate" and config.annotate is None:
            continue
        key, settings = stage_key(stage, config, run_dir), _digest(stage.settings(config))
        saved = state.stages.get(stage.name, {})
        same_key = saved.get("key") == key and stage.name not in forced
        if same_key and saved.get("status") == "done" and saved.get("settings") == settings and not stage.always:
            console.print(f"[dim]stage {index}/{len(STAGES)} {stage.name}: up to date, skipped[/]")
            continue
        if not same_key:
            _move_aside(run_dir, stage.name, stage.outputs, console)
        continuing = same_key and saved.get("status") in ("started", "done")
        console.rule(f"stage {index}/{len(STAGES)}: {stage.name}" + (" (continuing)" if continuing else ""))
        state.set(stage.name, key, settings, "started")
        stage.run(config, run_dir, continuing, console)
        state.set(stage.name, key, settings, "done")
    return run_dir / "report.html"


def _adopt_generate_cache(run_dir: Path) -> None:
    """Runs made before RUN/calls.sqlite kept generate's calls in generate/requests.sqlite: start the shared record
    from a copy of it, so those answers are not paid for again."""
    import sqlite3

    old, new = run_dir / "generate" / "requests.sqlite", run_dir / CALLS
    if new.exists() or not old.is_file():
        return
    source, target = sqlite3.connect(old), sqlite3.connect(new)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()

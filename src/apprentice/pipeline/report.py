"""`apprentice report RUN`: one self-contained HTML page about a run directory (data, training, answers, how close
the clone is, the blind comparison, side-by-side examples, base model before/after), written to RUN/report.html.

    from apprentice.pipeline.report import build_report
    path = build_report(Path("runs/demo"))     # or: apprentice report runs/demo

Every part of the run may be missing (a run in progress, a stage not run yet): its section then says so and names
the file it waits for. Files that are present but malformed stop the report with one line naming the file. The page
embeds its plots as base64 PNGs and its one stylesheet, loads nothing from the network, needs no JavaScript, and
escapes all model text (Jinja2 autoescape). It is written to a temporary file and renamed, so a reader never sees
half a page.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from apprentice.errors import UserError
from apprentice.evaluate.agreement import annotator_agreement, compare
from apprentice.evaluate.controls import control_summary
from apprentice.evaluate.outputs import ModelOutput, load_outputs, read_json
from apprentice.evaluate.stats import is_control, summarize
from apprentice.evaluate.tally import read_annotations
from apprentice.generate import store
from apprentice.jsonfile import Where, get_str, parse_json_list, read_log_lines, read_text, require_object, \
    write_text_atomic
from apprentice.pipeline import report_facts as facts
from apprentice.pipeline import report_plots as plots
from apprentice.train.templates import MANIFEST

REPORT = "report.html"
TEMPLATE = "report.html.j2"
SAMPLE_RECORDS = 10
SIDE_BY_SIDE = 8
_TRAINING_KEYS = (  # hyper-parameters shown, in this order, when the manifest has them
    ("peak_lr", "peak learning rate"), ("epochs", "epochs"), ("max_steps", "max steps"), ("max_len", "max length"),
    ("token_budget", "tokens per step (padded)"), ("warmup_ratio", "warm-up share"), ("weight_decay", "weight decay"),
    ("grad_clip", "gradient clipping"), ("lora_rank", "LoRA rank"), ("lora_alpha", "LoRA alpha"),
    ("lora_dropout", "LoRA dropout"), ("seed", "seed"),
)


@dataclass(frozen=True)
class RunFiles:
    """Where each stage of `apprentice run` leaves its output inside a run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "run.toml"

    @property
    def generate(self) -> Path:
        return self.root / "generate"

    @property
    def student(self) -> Path:
        return self.root / "student"

    def answers(self, who: str) -> Path:
        """`who`: "student", "teacher" or "base"."""
        return self.root / "answers" / f"{who}.json"

    @property
    def annotations(self) -> Path:
        return self.root / "judge" / "annotations.json"

    @property
    def fidelity(self) -> Path:
        return self.root / "fidelity.json"

    @property
    def votes(self) -> Path:
        return self.root / "votes.sqlite"

    def known(self) -> list[Path]:
        generated = [self.generate / name for name in (store.DATA, store.REJECTED, store.ALPACA_DATA, store.STATS)]
        return [self.config, *generated, self.student / "metrics.jsonl", self.student / MANIFEST,
                *(self.answers(who) for who in ("student", "teacher", "base")), self.fidelity, self.annotations,
                self.votes]


def build_report(run_dir: Path) -> Path:
    """Write RUN/report.html for the run directory `run_dir` and return its path."""
    files = RunFiles(Path(run_dir))
    if not files.root.is_dir():
        raise UserError(f"{files.root}: no such directory")
    if not any(path.is_file() for path in files.known()):
        raise UserError(f"{files.root} is not a run directory: it holds none of run.toml, generate/data.jsonl, "
                        f"student/metrics.jsonl, answers/*.json, judge/annotations.json (apprentice run makes one)")
    html = render(report_context(files))
    out = files.root / REPORT
    write_text_atomic(out, html)
    return out


def report_context(files: RunFiles) -> dict[str, Any]:
    """Everything the template shows, section by section; a section whose files are missing has `ran` False."""
    student = _outputs(files.answers("student"))
    teacher = _outputs(files.answers("teacher"))
    annotations = read_annotations(files.annotations) if files.annotations.is_file() else None
    sections = {
        "data": data_section(files),
        "training": training_section(files),
        "answers": answers_section(files, student, teacher),
        "clone": clone_section(files),
        "comparison": comparison_section(files, annotations),
        "votes": votes_section(files, annotations),
        "examples": examples_section(annotations, student, teacher),
        "before_after": before_after_section(files, student),
    }
    config = files.config.read_text(encoding="utf-8") if files.config.is_file() else None
    return {"run": files.root.resolve().name, "run_path": str(files.root.resolve()), "config": config,
            "models": models_of(files.config, config) if config is not None else [],
            "created": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), **sections}


def models_of(path: Path, text: str) -> list[tuple[str, str]]:
    """(role, model spec) of the teacher, the student's base and the judge named in run.toml."""
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not TOML ({exc})") from None
    def setting(section: str, key: str) -> Any:
        table = config.get(section)
        return table.get(key) if isinstance(table, dict) else None

    teacher = setting("teacher", "model")
    judge = setting("judge", "model") or teacher
    base = setting("train", "base")
    roles = (("teacher", teacher), ("student, before training", base), ("judge", judge))
    return [(role, str(spec)) for role, spec in roles if spec]


def render(context: dict[str, Any]) -> str:
    """The page for a `report_context`, with model text escaped."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    environment.filters.update(pct=_percent, num=_number)
    return environment.get_template(TEMPLATE).render(**context)


def data_section(files: RunFiles) -> dict[str, Any]:
    data_path = files.generate / store.DATA
    alpaca_path = files.generate / store.ALPACA_DATA
    if data_path.is_file():
        records = _records(read_jsonl(data_path))
    elif alpaca_path.is_file():
        records = _records(parse_json_list(alpaca_path, read_text(alpaca_path)))
    else:
        return _not_run(files, data_path, "apprentice generate")
    rejected_path = files.generate / store.REJECTED
    rejected = [record for _, record in read_jsonl(rejected_path)] if rejected_path.is_file() else []
    reasons: dict[str, int] = {}
    for record in rejected:
        reason = str(record.get("reason", "unknown"))
        reasons[reason] = reasons.get(reason, 0) + 1
    by_reason = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    instructions = [r["instruction"] for r in records]
    verbs, with_verb = facts.verb_counts(instructions)
    counts = [("kept", len(records)), *by_reason]
    stats_path = files.generate / store.STATS
    return {
        "ran": True, "kept": len(records), "rejected": len(rejected), "by_reason": by_reason,
        "acceptance": len(records) / (len(records) + len(rejected)) if records or rejected else None,
        "counts_plot": plots.bars(counts, "records", [plots.WIN] + [plots.LOSS] * len(by_reason), plots.HALF),
        "lengths": facts.describe_lengths(instructions),
        "lengths_plot": plots.histogram([("instructions", [facts.word_count(t) for t in instructions], plots.STUDENT)],
                                        "instruction length (words)", width=plots.HALF) if records else None,
        "verbs": verbs, "with_verb": with_verb,
        "verbs_plot": plots.bars(verbs, "instructions") if verbs else None,
        "sample": facts.sample([{k: facts.clip(r.get(k, "")) for k in store.ALPACA_FIELDS} for r in records],
                               SAMPLE_RECORDS),
        "stats": _json_object(stats_path) if stats_path.is_file() else None,
    }


def training_section(files: RunFiles) -> dict[str, Any]:
    metrics_path = files.student / "metrics.jsonl"
    manifest_path = files.student / MANIFEST
    if not metrics_path.is_file() and not manifest_path.is_file():
        return _not_run(files, metrics_path, "apprentice train")
    # a line without a loss is not an optimizer step (room for other kinds of lines); a step needs numbers
    logged = [(w, r) for w, r in read_jsonl(metrics_path) if "loss" in r] if metrics_path.is_file() else []
    for where, record in logged:
        for key in ("step", "loss"):
            if not isinstance(record.get(key), int | float) or isinstance(record.get(key), bool):
                raise where.error(f"{key!r} must be a number")
    metrics = [record for _, record in logged]
    manifest = _json_object(manifest_path) if manifest_path.is_file() else None
    hyper = (manifest or {}).get("hyperparameters") or {}
    settings = [("method", (manifest or {}).get("method")), ("base model", (manifest or {}).get("base")),
                ("template", ((manifest or {}).get("template") or {}).get("kind"))]
    lora = (manifest or {}).get("method") == "lora"
    settings += [(label, hyper.get(key)) for key, label in _TRAINING_KEYS
                 if key in hyper and (lora or not key.startswith("lora_"))]
    settings += [("processes", (manifest or {}).get("world_size"))]
    return {
        "ran": True, "finished": manifest is not None, "manifest_path": str(manifest_path),
        "summary": facts.training_summary(metrics),
        "loss_plot": plots.loss_curve([m["step"] for m in metrics], [m["loss"] for m in metrics],
                                      [m.get("lr") for m in metrics]) if metrics else None,
        "settings": [(label, value) for label, value in settings if value is not None],
        "token_counts": (manifest or {}).get("token_counts") or {},
        "final_loss": (manifest or {}).get("final_loss"),
    }


def answers_section(files: RunFiles, student: list[ModelOutput] | None,
                    teacher: list[ModelOutput] | None) -> dict[str, Any]:
    if student is None and teacher is None:
        return _not_run(files, files.answers("student"), "apprentice answer")
    sides = [(who, outputs, color) for who, outputs, color in
             (("student", student, plots.STUDENT), ("teacher", teacher, plots.TEACHER)) if outputs is not None]
    return {
        "ran": True,
        "sides": [{"who": who, "generator": outputs[0].generator,
                   "lengths": facts.describe_lengths([o.output for o in outputs])} for who, outputs, _ in sides],
        "missing": [f"answers/{who}.json" for who, outputs in (("student", student), ("teacher", teacher))
                    if outputs is None],
        "lengths_plot": plots.histogram([(who, [facts.word_count(o.output) for o in outputs], color)
                                         for who, outputs, color in sides], "output length (words)"),
    }


def clone_section(files: RunFiles) -> dict[str, Any]:
    """Base -> student -> teacher on each fidelity measure (RUN/fidelity.json, the pipeline's fidelity stage)."""
    if not files.fidelity.is_file():
        return _not_run(files, files.fidelity, "apprentice run (its fidelity stage) or apprentice fidelity --json")
    clone = facts.clone_rows(_json_object(files.fidelity))
    closed = [(row["label"], row["closed"]) for row in clone["rows"] if row["closed"] is not None]
    return {"ran": True, **clone, "plot": plots.gap_closed(closed) if closed else None}


def comparison_section(files: RunFiles, annotations: list[dict] | None) -> dict[str, Any]:
    if annotations is None:
        return _not_run(files, files.annotations, "apprentice judge --a answers/student.json --b answers/teacher.json")
    if not annotations:
        return {**_not_run(files, files.annotations, "apprentice judge"), "empty": True}
    summary = _summary(files.annotations, annotations)
    word, sentence = facts.reading(summary)
    controls = _controls(files.annotations, annotations)
    if controls and controls["flagged"]:
        sentence += " " + facts.control_caution(controls)
    first = annotations[0]
    return {
        "ran": True, "s": summary, "reading": word, "reading_text": sentence, "controls": controls,
        "student": first.get("generator_1") or "output_1", "teacher": first.get("generator_2") or "output_2",
        "judges": sorted({str(a.get("annotator")) for a in annotations if a.get("annotator")}),
        "bar_plot": plots.verdict_bar(summary["wins"], summary["ties"], summary["losses"], summary["failed"]),
    }


def votes_section(files: RunFiles, judged: list[dict] | None = None) -> dict[str, Any]:
    """Blind human votes from RUN/votes.sqlite (`[annotate]` in the config, then `apprentice annotate`), counted like
    the judge's verdicts: one judgment per vote; with the agreement between annotators (under their pseudonyms: the
    page may be mailed), their accuracy on control items and, when the judge ran too, humans against the judge."""
    # databases a rerun moved aside when the answers changed: votes on earlier answers, counted but not tallied here
    earlier = [{"db": path.name, "votes": len(read_annotations(path))}
               for path in sorted(files.root.glob("votes.*.sqlite"))]
    if not files.votes.is_file():
        return {"ran": False, "exists": False, "earlier": earlier}
    votes = [{**v, "annotator": v["annotator_id"]} for v in read_annotations(files.votes)]
    real = [v for v in votes if not is_control(v)]
    if not real:
        return {"ran": False, "exists": True, "db": str(files.votes.relative_to(files.root)), "earlier": earlier}
    summary = _summary(files.votes, real)
    word, sentence = facts.reading(summary)
    controls = control_summary(votes)
    versus = None
    if judged and any(not is_control(a) for a in judged):
        try:
            versus = compare(votes, judged, "the votes", "the judge")
        except UserError as exc:  # a run in progress: the judge has not judged the new answers yet
            versus = {"error": str(exc)}
    return {"ran": True, "s": summary, "reading": word, "reading_text": sentence, "earlier": earlier,
            "annotators": len({v.get("annotator") for v in votes}), "control_votes": len(votes) - len(real),
            "agreement": annotator_agreement(votes), "controls": controls, "versus_judge": versus,
            "bar_plot": plots.verdict_bar(summary["wins"], summary["ties"], summary["losses"], summary["failed"])}


def examples_section(annotations: list[dict] | None, student: list[ModelOutput] | None,
                     teacher: list[ModelOutput] | None) -> dict[str, Any]:
    controls = control_summary(annotations) if annotations else None
    annotations = [a for a in annotations or [] if not is_control(a)]
    if annotations:
        rows = []
        for index in facts.pick_examples(annotations, SIDE_BY_SIDE):
            item = annotations[index]
            css, words = facts.verdict(item, index)
            judge_said = [{"first": "student" if order.get("shown_first") == 1 else "teacher",
                           "texts": [facts.clip(t, 600) for t in order.get("texts") or []]}
                          for order in item.get("orders") or [] if isinstance(order, dict)]
            rows.append({"instruction": item.get("instruction", ""), "student": facts.clip(item["output_1"]),
                         "teacher": facts.clip(item["output_2"]), "verdict": words, "css": css,
                         "judge_said": judge_said})
        return {"ran": True, "judged": True, "rows": rows, "total": len(annotations), "controls": controls}
    if student is not None and teacher is not None:
        answers = {o.instruction: o.output for o in teacher}
        shared = [o for o in student if o.instruction in answers][:SIDE_BY_SIDE]
        rows = [{"instruction": o.instruction, "student": facts.clip(o.output),
                 "teacher": facts.clip(answers[o.instruction]), "verdict": "not judged yet", "css": "tie",
                 "judge_said": []} for o in shared]
        return {"ran": bool(rows), "judged": False, "rows": rows, "total": len(shared),
                "missing": "judge/annotations.json", "how": "apprentice judge"}
    return {"ran": False, "missing": "answers/student.json and answers/teacher.json", "how": "apprentice answer"}


def before_after_section(files: RunFiles, student: list[ModelOutput] | None) -> dict[str, Any]:
    base = _outputs(files.answers("base"))
    if base is None:
        return _not_run(files, files.answers("base"), "apprentice answer --model BASE")
    answers = {o.instruction: o.output for o in student or []}
    rows = [{"instruction": o.instruction, "base": facts.clip(o.output), "base_words": facts.word_count(o.output),
             "student": facts.clip(answers[o.instruction]) if o.instruction in answers else None,
             "student_words": facts.word_count(answers.get(o.instruction, ""))} for o in base]
    return {"ran": True, "rows": rows, "base": base[0].generator}


def read_jsonl(path: Path) -> list[tuple[Where, dict[str, Any]]]:
    """The objects of a stage's JSONL log with their lines, read without changing the file: a last line without its
    newline is a record a running stage is still writing and is left out; any other bad line is an error."""
    return read_log_lines(path)[0]


def _records(values: list[tuple[Where, Any]]) -> list[dict[str, Any]]:
    """Instruction records checked for string Alpaca fields (the instruction required)."""
    checked = []
    for where, value in values:
        record = require_object(value, where)
        get_str(record, "instruction", where)
        for key in ("input", "output"):
            get_str(record, key, where, "")
        checked.append(record)
    return checked


def _json_object(path: Path) -> dict[str, Any]:
    data = read_json(path, "a JSON object")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found a JSON {type(data).__name__}")
    return data


def _outputs(path: Path) -> list[ModelOutput] | None:
    return load_outputs(path) if path.is_file() else None


def _summary(path: Path, annotations: list[dict]) -> dict[str, Any]:
    """`summarize` from the student's side. The run judges with `--a student --b teacher`, so output_1 is the
    student's by position; sides are named here so that equal generator names cannot swap them."""
    named = [{**a, "generator_1": "student", "generator_2": "teacher"} if isinstance(a, dict) else a
             for a in annotations]
    try:
        return summarize(named, model="student")
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def _controls(path: Path, annotations: list[dict]) -> dict[str, Any] | None:
    try:
        return control_summary(annotations)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def _not_run(files: RunFiles, missing: Path, how: str) -> dict[str, Any]:
    return {"ran": False, "missing": str(missing.relative_to(files.root)), "how": how}


def _percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"



"""The run config: one TOML file that drives every stage of `apprentice run`.

Each section maps onto one stage's settings; keys are the stage's own option names (with `_` for `-`), so a config
line and a command-line option mean the same thing. The whole file is checked before anything runs: an unknown
section or key, a wrong type, a bad model spec or a missing file is one error naming the key.

    [teacher]   model, concurrency, ...                 who writes the data (and, by default, judges)
    [generate]  num, strategy, seeds, seed, ...          apprentice generate options
    [train]     base, lora, epochs, max_steps, lr, ...   apprentice train options
    [eval]      prompts, limit, max_tokens, before_after which prompts both models answer
    [judge]     model, orders, seed, max_tokens, ...     the LLM judge (default: the teacher), its controls
    [annotate]  votes_per_item, controls                 optional: prepare a blind human-vote database too
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from apprentice.errors import UserError
from apprentice.generate.config import TEACHER_KEYS, GenerateConfig
from apprentice.models.base import BackendOptions
from apprentice.models.ratelimit import check_limits
from apprentice.models.spec import parse_spec
from apprentice.settings import check_bounds, declares_settings, toml_names
from apprentice.train.loop import TrainConfig


@dataclass
class TeacherSection:
    model: str  # model spec of the teacher: writes the data and answers the eval prompts
    concurrency: int = 8  # HTTP teachers: requests in flight; local teachers: prompts generated together
    prompts_per_request: int = 1  # HTTP teachers, completion API: prompts sent in one generate request
    timeout: float = BackendOptions.timeout  # HTTP teachers: seconds per request before it is retried
    max_retries: int = BackendOptions.max_retries  # HTTP teachers: retries on 429/5xx/timeouts/dropped connections
    rpm: float | None = None  # HTTP teachers: requests per minute at most (the provider's limit); none: no limit
    tpm: float | None = None  # HTTP teachers: tokens per minute at most (prompt plus max_tokens per request)
    # local models of the run (teacher, judge, base, student): auto | transformers | ctranslate2 | ctranslate2-int8
    engine: str = "auto"


@dataclass
class EvalSection:
    prompts: Path | None = None  # evaluation prompts; none: the set shipped with apprentice
    limit: int | None = None  # answer only the first N prompts (a quick run)
    max_tokens: int = 256  # most tokens per answer
    temperature: float = 0.0  # 0 = greedy
    before_after: int = 4  # prompts the untrained base model also answers, for the report's before/after check
    batch_size: int = 16  # local models: prompts generated together


@dataclass
class JudgeSection:
    model: str | None = None  # model spec of the judge; none: the teacher
    orders: int = 2  # 2: both orders, disagreement is a tie; 1: one seeded random order
    seed: int = 0
    max_tokens: int = 16
    timeout: float = BackendOptions.timeout  # HTTP judges: seconds per request before it is retried
    max_retries: int = BackendOptions.max_retries  # HTTP judges: retries on 429/5xx/timeouts/dropped connections
    controls: int = 0  # control pairs (a real answer against a wrong one) the judge also judges, to check it
    rpm: float | None = None  # HTTP judges: requests per minute at most; none: the teacher's when it judges too
    tpm: float | None = None  # HTTP judges: tokens per minute at most; none: the teacher's when it judges too


@dataclass
class AnnotateSection:
    votes_per_item: int = 1  # human votes wanted per instruction, from different annotators
    controls: int = 0  # control items shown to every annotator, made once with the database, to check them


@dataclass
class RunConfig:
    teacher: TeacherSection
    train: TrainConfig  # [train]: `apprentice train`'s settings, but data and out, which are the run's
    # [generate]: `apprentice generate`'s settings; the teacher and how it is reached come from [teacher], the paths
    # are the run directory's
    generate: GenerateConfig
    eval: EvalSection = field(default_factory=EvalSection)
    judge: JudgeSection = field(default_factory=JudgeSection)
    annotate: AnnotateSection | None = None

    @property
    def judge_model(self) -> str:
        return self.judge.model or self.teacher.model


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    inner = args[0] if args else hint
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a file path"}.get(
        inner, getattr(inner, "__name__", str(inner)))


def _coerce(value: Any, hint: Any, where: str, base_dir: Path) -> Any:
    """Check one TOML value against a dataclass field's type; relative paths are taken from the config's folder."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _coerce(value, options[0], where, base_dir)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list):
            raise UserError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(item, args[0], f"{where}[{i}]", base_dir) for i, item in enumerate(value))
    if is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a table ([{where.split(' ')[-1]}])")
        return _build(hint, value, where, base_dir)
    ok = {bool: isinstance(value, bool), int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, int | float) and not isinstance(value, bool), str: isinstance(value, str),
          Path: isinstance(value, str) and bool(value)}.get(hint, False)
    if not ok:
        raise UserError(f"{where} must be {_type_name(hint)}, got {value!r}")
    if hint is float:
        return float(value)
    if hint is Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else base_dir / path
    return value


def _build(cls: type, table: dict, where: str, base_dir: Path, given: dict | None = None) -> Any:
    """An instance of `cls` from a TOML table, with `given` values for fields the table does not hold."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.name in _keys(cls)}
    values = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in known:
            raise UserError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        values[name] = _coerce(value, hints[name], f"{where}.{key}", base_dir)
        if known[name].metadata:
            check_bounds(known[name], values[name], f"{where} {key}")
    for name, f in known.items():
        if name not in values and f.default is MISSING and f.default_factory is MISSING:
            raise UserError(f"{where}: missing required key {name!r}")
    return cls(**(given or {}), **values)


def _keys(cls: type) -> set[str]:
    """The TOML keys of a table: a stage's settings dataclass says which of its fields are (`toml_names`)."""
    if declares_settings(cls):
        return toml_names(cls)
    return {f.name for f in fields(cls)}


def _section_class(section: str) -> type:
    hint = typing.get_type_hints(RunConfig)[section]
    return next(a for a in (typing.get_args(hint) or (hint,)) if a is not type(None))


def section_keys(section: str) -> set[str]:
    """The keys a run config's [section] takes."""
    return _keys(_section_class(section))


def parse_config(data: dict, base_dir: Path, source: str = "config") -> RunConfig:
    """Build and check a RunConfig from parsed TOML; every error names `source` and the key."""
    known = {f.name for f in fields(RunConfig)}
    for section, value in data.items():
        if section not in known:
            raise UserError(f"{source}: unknown section [{section}] (known: {', '.join(sorted(known))})")
        if not isinstance(value, dict):
            raise UserError(f"{source}: {section} must be a table ([{section}])")
    for required in ("teacher", "train"):
        if required not in data:
            raise UserError(f"{source}: missing section [{required}]")
    sections: dict[str, Any] = {}
    for f in fields(RunConfig):  # in order: [teacher] first, which [generate] takes the teacher from
        given = None
        if f.name == "generate":
            teacher = sections["teacher"]
            given = {"teacher": teacher.model, **{key: getattr(teacher, key) for key in TEACHER_KEYS}}
        if f.name in data or given:
            sections[f.name] = _build(_section_class(f.name), data.get(f.name, {}), f"{source}: [{f.name}]",
                                      base_dir, given)
    config = RunConfig(**sections)
    _check(config, source)
    return config


def _check(config: RunConfig, source: str) -> None:
    checks = [("teacher.model", config.teacher.model), ("train.base", config.train.base),
              ("judge.model", config.judge_model)]
    for key, spec in checks:
        try:
            parse_spec(spec)
        except UserError as exc:
            raise UserError(f"{source}: [{key.split('.')[0]}] {key.split('.')[1]}: {exc}") from None
    if parse_spec(config.train.base).kind == "openai":
        raise UserError(f"{source}: [train] base must be a local model (hf:, gguf: or bundled:), not openai:")
    if config.generate.batch and parse_spec(config.teacher.model).kind != "openai":
        raise UserError(f"{source}: [generate] batch needs an openai: teacher (the Batch API), not "
                        f"{config.teacher.model}")
    for key, path in (("generate.seeds", config.generate.seeds), ("eval.prompts", config.eval.prompts)):
        if path is not None and not path.is_file():
            raise UserError(f"{source}: [{key.split('.')[0]}] {key.split('.')[1]}: no such file {path}")
    positive = [("teacher.concurrency", config.teacher.concurrency),
                ("teacher.prompts_per_request", config.teacher.prompts_per_request),
                ("eval.max_tokens", config.eval.max_tokens), ("judge.max_tokens", config.judge.max_tokens)]
    if config.eval.limit is not None:
        positive.append(("eval.limit", config.eval.limit))
    for key, value in positive:
        if value < 1:
            raise UserError(f"{source}: [{key.split('.')[0]}] {key.split('.')[1]} must be at least 1, got {value}")
    if config.judge.orders not in (1, 2):
        raise UserError(f"{source}: [judge] orders must be 1 or 2, got {config.judge.orders}")
    if config.eval.before_after < 0:
        raise UserError(f"{source}: [eval] before_after must be 0 or more, got {config.eval.before_after}")
    for section in ("teacher", "judge"):
        limits = getattr(config, section)
        check_limits(limits.rpm, limits.tpm, f"{source}: [{section}] rpm", f"{source}: [{section}] tpm")
    annotate = config.annotate or AnnotateSection()
    for section, controls in (("judge", config.judge.controls), ("annotate", annotate.controls)):
        if controls < 0:
            raise UserError(f"{source}: [{section}] controls must be 0 or more, got {controls}")


def load_config(path: Path) -> RunConfig:
    """Read and check a run config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"no such config file {path}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None
    return parse_config(data, path.resolve().parent, str(path))


def to_toml(config: RunConfig) -> str:
    """The resolved config as TOML (saved as RUN/run.toml beside what it made)."""
    lines: list[str] = []

    def emit(table: str, obj: Any) -> None:
        nested = []
        lines.append(f"[{table}]")
        for f in fields(obj):
            if f.name not in _keys(type(obj)):
                continue
            value = getattr(obj, f.name)
            if is_dataclass(value):
                nested.append((f"{table}.{f.name}", value))
            elif value is not None:
                lines.append(f"{f.name} = {_toml_value(value)}")
        lines.append("")
        for name, value in nested:
            emit(name, value)

    for f in fields(config):
        section = getattr(config, f.name)
        if section is not None:
            emit(f.name, section)
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    import json

    return json.dumps(str(value))


def demo_config(teacher: str | None = None, num: int | None = None) -> RunConfig:
    """The shipped demo config (pipeline/demo.toml), optionally with another teacher or size."""
    from importlib.resources import files

    data = tomllib.loads(files("apprentice.pipeline").joinpath("demo.toml").read_text(encoding="utf-8"))
    if teacher:
        data["teacher"]["model"] = teacher
    if num:
        data["generate"]["num"] = num
    return parse_config(data, Path.cwd(), "demo config")

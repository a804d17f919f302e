"""One declaration per stage setting: its name, type, default, unit, help, and whether it changes what the stage
makes. A stage's settings dataclass declares each field with `setting(...)`; the command line (`command`), the run
config's section (`toml_names`) and the stage's key in the pipeline (`output_values`) are all read from it, so an
option is added in one place.

    @dataclass
    class TrainConfig:
        epochs: int = setting(3, "Passes over the data.")
        save_every: int = setting(200, "Steps between checkpoints.", output=False)

    app.command("train")(command(TrainConfig, run_training, doc="Fine-tune a model ..."))

A field whose type is itself a settings dataclass (generate's `filters`) is flattened: its settings are options of
the same command and keys of the nested TOML table.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any

import typer

from apprentice.errors import UserError

_KEY = "apprentice.setting"


@dataclass(frozen=True)
class Setting:
    help: str
    unit: str | None = None  # shown after the help, e.g. "USD per million tokens"
    output: bool = True  # changes what the stage makes: part of its key, so a change reruns the stage
    flag: str | None = None  # the option's name when it is not --field-name
    short: str | None = None  # a one-letter alias such as -n
    cli: bool = True  # an option of the stage's command
    toml: bool = True  # a key of the stage's run-config section (False: the pipeline sets it from the run directory)
    required: bool = False  # the command needs it although the pipeline fills it (paths of the run directory)
    min: float | None = None  # the smallest value allowed (checked on the command line and in run configs)
    max: float | None = None


def setting(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING, **meta: Any) -> Any:
    """A dataclass field with its `Setting` metadata (keyword arguments as `Setting`'s)."""
    return field(default=default, default_factory=default_factory, metadata={_KEY: Setting(help, **meta)})


def setting_of(f: Field) -> Setting:
    try:
        return f.metadata[_KEY]
    except KeyError:
        raise TypeError(f"field {f.name!r} is not declared with setting()") from None


def declares_settings(cls: type) -> bool:
    """Whether `cls` declares its fields with `setting` (a settings dataclass)."""
    return any(_KEY in f.metadata for f in fields(cls))


def is_settings(hint: Any) -> bool:
    return isinstance(hint, type) and is_dataclass(hint)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _plain(hint: Any) -> Any:
    """What the command line parses: `X | None` -> X (an option left out keeps its default, None), a tuple ->
    a list (the option repeated)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _plain(options[0])
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]]
    return hint


def flag_of(f: Field) -> str:
    return setting_of(f).flag or "--" + f.name.replace("_", "-")


def cli_fields(cls: type) -> list[tuple[Field, Any]]:
    """(field, type) of every command-line setting of `cls`, nested settings dataclasses flattened, in order."""
    hints = _hints(cls)
    found: list[tuple[Field, Any]] = []
    for f in fields(cls):
        if is_settings(hints[f.name]):
            found += cli_fields(hints[f.name])
        elif setting_of(f).cli:
            found.append((f, _plain(hints[f.name])))
    return found


def toml_names(cls: type) -> set[str]:
    """The keys of `cls`'s run-config table (a nested settings dataclass is a sub-table, named by its field)."""
    return {f.name for f in fields(cls) if is_settings(_hints(cls)[f.name]) or setting_of(f).toml}


def output_names(cls: type) -> list[str]:
    """The fields of `cls` that change what its stage makes (a nested settings dataclass counts as one), in order."""
    hints = _hints(cls)
    return [f.name for f in fields(cls) if is_settings(hints[f.name]) or setting_of(f).output]


def output_values(obj: Any) -> dict[str, Any]:
    """The settings of `obj` that change what its stage makes and that a run config sets: the stage's key."""
    hints = _hints(type(obj))
    values: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_settings(hints[f.name]):
            values[f.name] = output_values(value)
        elif setting_of(f).output and setting_of(f).toml:
            values[f.name] = value
    return values


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return list(f.default) if isinstance(f.default, tuple) else f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return ...


def _option(f: Field, hint: Any) -> typer.models.OptionInfo:
    meta = setting_of(f)
    default = ... if meta.required else _default(f)
    help_text = f"{meta.help} [{meta.unit}]" if meta.unit else meta.help
    names = [flag_of(f)] + ([meta.short] if meta.short else [])
    if hint is bool and default is True:
        names[0] = f"{names[0]}/--no-{names[0][2:]}"
    bounds = {key: getattr(meta, key) for key in ("min", "max") if getattr(meta, key) is not None}
    return typer.Option(default, *names, help=help_text, **bounds)


def check_bounds(f: Field, value: Any, where: str) -> None:
    """A value against its setting's bounds; `where` names it in the error (an option or a run-config key)."""
    meta = setting_of(f)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    if meta.min is not None and value < meta.min:
        raise UserError(f"{where} must be at least {meta.min:g}, got {value}")
    if meta.max is not None and value > meta.max:
        raise UserError(f"{where} must be at most {meta.max:g}, got {value}")


def check_settings(obj: Any) -> None:
    """Every setting of `obj` (nested ones too) within its bounds; the error names the option, as the command line
    would (what the Python API and the pipeline build is checked the same way)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_settings(type(value)):
            check_settings(value)
        else:
            check_bounds(f, value, flag_of(f))


def build(cls: type, values: dict[str, Any]) -> Any:
    """An instance of `cls` from flat option values (nested settings dataclasses gathered from theirs)."""
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if is_settings(hints[f.name]):
            kwargs[f.name] = build(hints[f.name], values)
        elif f.name in values:
            value = values[f.name]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def command(cls: type, run: Callable[..., Any], *, doc: str,
            extra: dict[str, tuple[Any, typer.models.OptionInfo]] | None = None) -> Callable[..., Any]:
    """A typer command whose options are `cls`'s command-line settings (plus `extra` options that say what to do
    rather than how, such as --estimate); it calls `run(config, **extra_values)`."""
    extra = extra or {}
    parameters = {f.name: inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_option(f, hint),
                                            annotation=hint) for f, hint in cli_fields(cls)}
    for name, (hint, option) in extra.items():
        parameters[name] = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=hint)
    names = list(parameters)

    def invoke(**values: Any) -> Any:
        extras = {name: values.pop(name) for name in extra}
        return run(build(cls, values), **extras)

    invoke.__signature__ = inspect.Signature([parameters[name] for name in names])  # type: ignore[attr-defined]
    invoke.__annotations__ = {name: parameters[name].annotation for name in names}
    invoke.__doc__ = doc
    invoke.__name__ = run.__name__
    return invoke

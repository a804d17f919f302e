"""Every stage setting is settable in both places, under the same name: the `apprentice STAGE` options, the stage's
dataclass and its run-config section must list the same settings. A new field that reaches only one of them fails
here; the few that belong to one place only are listed below with the reason."""

from __future__ import annotations

from dataclasses import fields

from typer.main import get_command

from apprentice.cli import app
from apprentice.evaluate.answer import AnswerConfig
from apprentice.evaluate.judge import JudgeConfig
from apprentice.generate.config import TEACHER_KEYS, GenerateConfig
from apprentice.generate.filters import FilterConfig
from apprentice.pipeline.config import section_keys
from apprentice.pipeline.config import EvalSection, TeacherSection
from apprentice.settings import cli_fields, toml_names
from apprentice.train.loop import TrainConfig


def names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def options(command: str) -> set[str]:
    return {p.name for p in get_command(app).commands[command].params}


def cli_names(cls) -> set[str]:
    return {f.name for f, _ in cli_fields(cls)}


def test_generate_options_are_the_dataclass():
    actions = {"estimate", "cancel_batches"}  # what to do with the settings (or a run's batches), not a setting
    assert options("generate") - actions == (names(GenerateConfig) - {"filters"}) | names(FilterConfig)
    assert cli_names(GenerateConfig) == options("generate") - actions


def test_generate_section_is_the_dataclass_with_the_teacher_from_its_own_section():
    # the paths are the run directory's, the lookahead a run fixes when it starts; [teacher] holds the teacher
    # (its `model`) and how it is reached, shared by generate, the teacher's answers and (by default) the judge
    pipeline_sets = {"out", "cache", "window"}
    assert section_keys("generate") == names(GenerateConfig) - pipeline_sets - {"teacher", *TEACHER_KEYS}
    assert section_keys("teacher") == {"model", *TEACHER_KEYS}
    teacher = {f.name: f.default for f in fields(TeacherSection)}
    assert all(teacher[key] == GenerateConfig.__dataclass_fields__[key].default for key in TEACHER_KEYS)
    assert section_keys("generate") >= {"filters"} and names(FilterConfig) == toml_names(FilterConfig)


def test_train_options_and_section_match_the_dataclass():
    # data and out are the run directory's; resume is how the pipeline continues; launch is the pipeline's own
    assert options("train") == names(TrainConfig) - {"launch"}
    assert section_keys("train") == names(TrainConfig) - {"data", "out", "resume"}


def test_answer_options_match_the_dataclass_and_eval_section():
    assert options("answer") == names(AnswerConfig)
    # [eval] says how both models are asked (and which prompts); the rest the pipeline sets per model ([teacher]
    # timeout, max_retries, rpm and tpm for the teacher's answers; the pipeline answers online: few prompts, wanted now;
    # [teacher] engine for every local model of the run)
    per_model = {"model", "out", "generator", "base_template", "concurrency", "cache", "timeout", "max_retries",
                 "batch", "rpm", "tpm", "engine"}
    assert names(EvalSection) - {"limit", "before_after"} == names(AnswerConfig) - per_model


def test_judge_options_are_the_dataclass_and_its_section():
    assert options("judge") == names(JudgeConfig)
    # the run directory's answers, annotations and call record; the prompts [eval] limits; [teacher] concurrency and
    # engine, [eval] batch_size for every model of the run; the pipeline's judge is online (a few calls, wanted now)
    # and runs where torch picks
    per_run = {"a", "b", "out", "cache", "limit", "concurrency", "engine", "batch_size", "batch", "device"}
    assert section_keys("judge") == names(JudgeConfig) - per_run

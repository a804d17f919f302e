"""Every stage setting is settable in both places, under the same name: the `apprentice STAGE` options, the stage's
dataclass and its run-config section must list the same settings. A new field that reaches only one of them fails
here; the few that belong to one place only are listed below with the reason."""

from __future__ import annotations

from dataclasses import fields

import pytest
from typer.main import get_command

from apprentice.cli import app
from apprentice.evaluate.answer import AnswerConfig
from apprentice.generate.config import GenerateConfig
from apprentice.generate.filters import FilterConfig
from apprentice.pipeline.config import section_keys
from apprentice.pipeline.config import EvalSection, GenerateSection, JudgeSection, TeacherSection
from apprentice.train.loop import TrainConfig


def names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def options(command: str) -> set[str]:
    return {p.name for p in get_command(app).commands[command].params}


# settings the pipeline sets itself from the run directory, or that a run fixes when it starts
GENERATE_PIPELINE = {"out", "cache", "window"}
# [teacher] holds the teacher's settings, which generate, the teacher's answers and the judge (by default) share
GENERATE_FROM_TEACHER = {"teacher": "model", "concurrency": "concurrency", "prompts_per_request": "prompts_per_request",
                         "timeout": "timeout", "max_retries": "max_retries", "rpm": "rpm", "tpm": "tpm"}
# the filter thresholds a command line needs most; [generate.filters] sets every FilterConfig field
FILTER_OPTIONS = {"min_words", "max_words", "loop_compression", "echo_rouge"}


def test_generate_options_match_the_dataclass():
    actions = {"estimate", "cancel_batches"}  # what to do with the settings (or a run's batches), not a setting
    assert options("generate") - actions == (names(GenerateConfig) - {"filters", "window"}) | FILTER_OPTIONS
    assert {"min_words", "max_words", "echo_rouge"} <= names(FilterConfig)  # loop_compression: loop_max_compression


def test_generate_config_sections_match_the_dataclass():
    toml = names(GenerateSection) | set(GENERATE_FROM_TEACHER)
    assert toml == names(GenerateConfig) - GENERATE_PIPELINE
    assert set(GENERATE_FROM_TEACHER.values()) <= names(TeacherSection)


def test_train_options_and_section_match_the_dataclass():
    # data and out are the run directory's; resume is how the pipeline continues; launch is the pipeline's own
    assert options("train") == names(TrainConfig) - {"launch"}
    assert section_keys("train") == names(TrainConfig) - {"data", "out", "resume"}


def test_answer_options_match_the_dataclass_and_eval_section():
    assert options("answer") == names(AnswerConfig)
    # [eval] says how both models are asked (and which prompts); the rest the pipeline sets per model ([teacher]
    # timeout, max_retries, rpm and tpm for the teacher's answers; the pipeline answers online: few prompts, wanted now)
    per_model = {"model", "out", "generator", "base_template", "concurrency", "cache", "timeout", "max_retries",
                 "batch", "rpm", "tpm"}
    assert names(EvalSection) - {"limit", "before_after"} == names(AnswerConfig) - per_model


@pytest.mark.parametrize("setting", ["orders", "seed", "max_tokens", "timeout", "max_retries", "controls", "rpm",
                                     "tpm"])
def test_judge_settings_are_options_and_config_keys(setting):
    assert setting in options("judge") and setting in names(JudgeSection)

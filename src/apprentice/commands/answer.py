"""`apprentice answer`: answer evaluation prompts with a model and write AlpacaEval `model_outputs.json`. The options
are `AnswerConfig`'s settings (evaluate/answer.py)."""

from __future__ import annotations

import typer

from apprentice.evaluate.answer import AnswerConfig
from apprentice.settings import command


def _answer(config: AnswerConfig) -> None:
    from apprentice.evaluate.answer import answer

    answer(config)


def register(app: typer.Typer) -> None:
    app.command("answer")(command(AnswerConfig, _answer, doc=(
        "Answer evaluation prompts; a model trained by apprentice is asked with the template it was trained on.")))

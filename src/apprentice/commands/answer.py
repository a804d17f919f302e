"""`apprentice answer`: answer evaluation prompts with a model and write AlpacaEval `model_outputs.json`."""

from __future__ import annotations

import typer

from apprentice.evaluate.answer import AnswerConfig
from apprentice.evaluate.answer import answer as run_answer
from apprentice.models.spec import SPEC_HELP

D = AnswerConfig  # the dataclass's class attributes are its defaults: one source for the CLI and the API


def answer(
    model: str = typer.Option(..., "--model", "-m", help=f"The model that answers ({SPEC_HELP})."),
    prompts: str = typer.Option(
        None, help="Evaluation prompts: Self-Instruct JSONL, AlpacaEval JSON or Alpaca JSON (default: the set "
        "shipped with apprentice)."),
    out: str = typer.Option(
        ..., "--out", help="AlpacaEval model_outputs.json to write (resumable: rerun to continue)."),
    max_tokens: int = typer.Option(D.max_tokens, help="Most tokens per answer."),
    batch_size: int = typer.Option(D.batch_size, help="Local models: prompts generated together."),
    concurrency: int = typer.Option(D.concurrency, help="openai: specs: requests in flight at once."),
    temperature: float = typer.Option(D.temperature, help="Sampling temperature; 0 answers greedily."),
    generator: str = typer.Option(None, help="Name written in the outputs' generator field (default: the model name)."),
    base_template: bool = typer.Option(
        False, "--base-template", help="Use the Alpaca template even when the model has a chat template."),
    cache: str = typer.Option(
        None, "--cache", help="openai: specs: a call record (SQLite, e.g. the one `apprentice generate` or `judge` "
        "keeps); answers already in it are not paid for again."),
    timeout: float = typer.Option(D.timeout, help="openai: specs: seconds to wait for one answer before retrying."),
    max_retries: int = typer.Option(
        D.max_retries, help="openai: specs: retries after the first try on 429, 5xx, timeouts and dropped connections."),
    batch: bool = typer.Option(
        D.batch, "--batch", help="openai: specs: ask every prompt in one Batch API batch (OpenAI: half price, answers "
        "within 24 hours), recorded in --cache (default: OUT with the suffix .cache.sqlite); a rerun polls it."),
    rpm: float = typer.Option(
        D.rpm, help="openai: specs: requests per minute at most, spread evenly (the provider's limit: no 429s)."),
    tpm: float = typer.Option(
        D.tpm, help="openai: specs: tokens per minute at most (each request's prompt tokens, estimated, plus "
        "--max-tokens)."),
) -> None:
    """Answer evaluation prompts; a model trained by apprentice is asked with the template it was trained on."""
    run_answer(AnswerConfig(
        model=model, prompts=prompts, out=out, max_tokens=max_tokens, temperature=temperature, batch_size=batch_size,
        concurrency=concurrency, generator=generator, base_template=base_template, cache=cache, timeout=timeout,
        max_retries=max_retries, batch=batch, rpm=rpm, tpm=tpm,
    ))


def register(app: typer.Typer) -> None:
    app.command()(answer)

"""Answer evaluation prompts with a model and write AlpacaEval `model_outputs.json`, resumably.

    from apprentice.evaluate.answer import AnswerConfig, answer
    answer(AnswerConfig(model="hf:runs/x/student", prompts=None, out="runs/x/student_outputs.json"))

How a prompt is put to the model:
* a model trained by apprentice (its directory has `apprentice.json`): the template it was trained with, as a plain
  completion (or a chat turn, when it was trained with the chat template);
* a model whose tokenizer has a chat template, and every `openai:` spec: one user message with the prompt's text;
* any other local model (a base model): the Alpaca template; `--base-template` forces this for chat models too.

Answers are appended to `OUT.partial.jsonl` as they arrive; a rerun skips the prompts answered there. The final JSON
is written at the end (temp file, then rename) and the sidecar removed. Each record also keeps the answer's
`finish_reason` ("stop", or "length" at --max-tokens): AlpacaEval ignores extra keys, `apprentice fidelity`
reads it for the stop rate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from apprentice.errors import UserError
from apprentice.evaluate.prompts import EvalPrompt, load_prompts
from apprentice.jsonfile import cut_torn_tail, read_log_lines, write_json_atomic
from apprentice.models.base import BackendOptions, Request
from apprentice.models.engine import ENGINE_HELP, check_engine
from apprentice.models.ratelimit import check_limits
from apprentice.progress import ModelStatus
from apprentice.runlock import hold
from apprentice.models.spec import SPEC_HELP, ModelSpec, local_model_dir, model_identity, parse_spec
from apprentice.settings import check_settings, setting
from apprentice.train.templates import ALPACA_TEMPLATE, Template, has_chat_template, saved_template, user_message


@dataclass
class AnswerConfig:
    """`apprentice answer`'s settings (its options)."""

    model: str = setting(help=f"The model that answers ({SPEC_HELP}).", short="-m")
    prompts: str | None = setting(None, "Evaluation prompts: Self-Instruct JSONL, AlpacaEval JSON or Alpaca JSON "
                                  "(default: the set shipped with apprentice).")
    out: str | None = setting(None, "AlpacaEval model_outputs.json to write (resumable: rerun to continue).",
                              required=True, output=False)
    max_tokens: int = setting(512, "Most tokens per answer.", unit="tokens", min=1)
    batch_size: int = setting(16, "Local models: prompts generated together.", min=1, output=False)
    concurrency: int = setting(8, "openai: specs: requests in flight at once.", min=1, output=False)
    temperature: float = setting(0.0, "Sampling temperature; 0 answers greedily.", min=0)
    generator: str | None = setting(None, "Name written in the outputs' generator field (default: the model name).")
    base_template: bool = setting(False, "Use the Alpaca template even when the model has a chat template.")
    # an answer already paid for comes from the call record, whatever else changed
    cache: str | None = setting(
        None, "openai: specs: a call record (SQLite, e.g. the one `apprentice generate` or `judge` keeps); answers "
        "already in it are not paid for again.", output=False)
    timeout: float = setting(BackendOptions.timeout, "openai: specs: seconds to wait for one answer before "
                             "retrying.", unit="seconds", output=False)
    max_retries: int = setting(BackendOptions.max_retries, "openai: specs: retries after the first try on 429, 5xx, "
                               "timeouts and dropped connections.", min=0, output=False)
    batch: bool = setting(
        False, "openai: specs: ask every prompt in one Batch API batch (OpenAI: half price, answers within 24 "
        "hours), recorded in --cache (default: OUT with the suffix .cache.sqlite); a rerun polls it.", output=False)
    rpm: float | None = setting(
        None, "openai: specs: requests per minute at most, spread evenly (the provider's limit: no 429s).",
        output=False)
    tpm: float | None = setting(
        None, "openai: specs: tokens per minute at most (each request's prompt tokens, estimated, plus "
        "--max-tokens).", output=False)
    engine: str = setting("auto", ENGINE_HELP, output=False)


@dataclass(frozen=True)
class PromptStyle:
    """How prompts reach the model: a chat turn, or a completion of a rendered template."""

    chat: bool
    template: Template | None = None
    why: str = ""

    def request(self, instruction: str, input: str, max_tokens: int, temperature: float,
                seed: int | None = None) -> Request:
        """The request that puts one instruction (and its input) to the model; generate's teacher answers too."""
        if self.chat:
            return Request(messages=({"role": "user", "content": user_message(instruction, input)},),
                           max_tokens=max_tokens, temperature=temperature, seed=seed)
        assert self.template is not None
        return Request(prompt=self.template.render_prompt(instruction, input), max_tokens=max_tokens,
                       temperature=temperature, seed=seed)


def choose_style(spec: ModelSpec, base_template: bool) -> PromptStyle:
    """Pick the prompt style from the model's files (tokenizer and apprentice.json only; no weights are loaded)."""
    if not spec.is_local:
        return PromptStyle(chat=True, why="served model: chat messages")
    from apprentice.models.local import load_tokenizer

    model_dir = local_model_dir(spec)
    tokenizer = load_tokenizer(model_dir, str(spec))
    template = saved_template(model_dir, tokenizer)
    if template is not None:
        return PromptStyle(chat=template.kind == "chat", template=template, why=f"trained template ({template.kind})")
    if has_chat_template(tokenizer) and not base_template:
        return PromptStyle(chat=True, why="the tokenizer's chat template")
    return PromptStyle(chat=False, template=ALPACA_TEMPLATE, why="the Alpaca template")


def default_generator(spec: ModelSpec) -> str:
    return spec.target.rstrip("/").split("/")[-1] or str(spec)


class Sidecar:
    """`OUT.partial.jsonl`: a settings line, then one answer per line, appended as answers arrive."""

    def __init__(self, path: Path, settings: dict[str, Any]):
        self.path = path
        self.settings = settings

    def read(self) -> dict[str, dict[str, Any]]:
        """Answers saved by an earlier run with the same settings, by prompt text (a last line a kill cut short is
        not one: that answer is simply made again)."""
        if not self.path.exists():
            return {}
        lines = [record for _, record in read_log_lines(self.path)[0]]
        if not lines:
            return {}
        saved = lines[0].get("settings")
        if not isinstance(saved, dict):
            raise UserError(f"{self.path}: not an answer sidecar (no settings on its first line); delete it")
        if saved != self.settings:
            changed = sorted(k for k in self.settings if saved.get(k) != self.settings[k])
            raise UserError(
                f"{self.path} holds answers made with other settings ({', '.join(changed)}): "
                "rerun with the same ones, or delete it to start over"
            )
        return {record["instruction"]: record for record in lines[1:]}

    def open(self):
        """Open for appending, writing the settings line first into a new (or empty) file; a line a killed run cut
        short is cut off first, so the next answer starts a line of its own."""
        if self.path.exists():
            records, complete, size = read_log_lines(self.path)
            cut_torn_tail(self.path, complete, size)
        else:
            records = []
        handle = self.path.open("a", encoding="utf-8")
        if not records:
            handle.write(json.dumps({"settings": self.settings}) + "\n")
        handle.flush()
        return handle


def output_record(prompt: EvalPrompt, text: str, generator: str, finish_reason: str) -> dict[str, Any]:
    return {"instruction": prompt.text, "output": text.strip(), "generator": generator, "dataset": prompt.dataset,
            "finish_reason": finish_reason}


def answer(config: AnswerConfig, console: Console | None = None) -> list[dict[str, Any]]:
    """Answer every prompt (skipping those already in the sidecar) and write the outputs file; returns its records."""
    console = console or Console(stderr=True)
    check_settings(config)
    if config.out is None:
        raise UserError("answer needs an outputs file to write (--out)")
    check_limits(config.rpm, config.tpm)
    check_engine(config.engine)
    spec = parse_spec(config.model)
    prompts = load_prompts(Path(config.prompts) if config.prompts else None)
    out = Path(config.out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as {out / 'model_outputs.json'}")
    with hold(out.parent, "apprentice answer", output=out):  # two processes would append to one sidecar
        return _answer_locked(config, spec, prompts, out, console)


def _answer_locked(config: AnswerConfig, spec: ModelSpec, prompts: list[EvalPrompt], out: Path,
                   console: Console) -> list[dict[str, Any]]:
    style = choose_style(spec, config.base_template)
    generator = config.generator or default_generator(spec)
    settings = {"model": str(spec), "generator": generator, "chat": style.chat, "max_tokens": config.max_tokens,
                "temperature": config.temperature,
                "template": style.template.to_json() if style.template and not style.chat else None}
    sidecar = Sidecar(out.with_name(out.name + ".partial.jsonl"), settings)
    done = sidecar.read()
    todo = [p for p in prompts if p.text not in done]
    console.print(f"{len(prompts)} prompts, {len(prompts) - len(todo)} already answered; prompting with {style.why}",
                  highlight=False)
    if todo:
        _generate(config, spec, style, todo, generator, sidecar, done, console)
    records = [done[p.text] for p in prompts]  # finish_reason kept: AlpacaEval ignores it, `fidelity` reads it
    write_json_atomic(out, records)
    sidecar.path.unlink(missing_ok=True)
    cut = sum(done[p.text].get("finish_reason") == "length" for p in prompts)
    console.print(f"wrote {len(records)} answers to {out}" + (f" ({cut} hit --max-tokens)" if cut else ""))
    return records


def _generate(config: AnswerConfig, spec: ModelSpec, style: PromptStyle, todo: Sequence[EvalPrompt], generator: str,
              sidecar: Sidecar, done: dict[str, dict[str, Any]], console: Console) -> None:
    from apprentice.models import load_model

    requests = [style.request(p.instruction, p.input, config.max_tokens, config.temperature) for p in todo]
    cache = config.cache or (str(Path(config.out).with_suffix(".cache.sqlite")) if config.batch else None)
    model = load_model(spec, BackendOptions(concurrency=config.concurrency, batch_size=config.batch_size,
                                            timeout=config.timeout, max_retries=config.max_retries,
                                            batch=config.batch, rpm=config.rpm, tpm=config.tpm,
                                            engine=config.engine),
                       record=Path(cache) if cache else None)
    if cache and not spec.is_local:  # a local model's directory may be retrained in place: never cached
        from apprentice.models.record import RecordedModel

        model = RecordedModel(model, cache, model_identity(spec))
    progress = Progress(TextColumn("[bold]answer"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("eta"), TimeRemainingColumn(), ModelStatus(model), console=console)
    try:
        with progress, sidecar.open() as log:
            task = progress.add_task("answer", total=len(requests))
            for index, completion in model.stream(requests):
                record = output_record(todo[index], completion.text, generator, completion.finish_reason)
                log.write(json.dumps(record, ensure_ascii=False) + "\n")
                log.flush()
                done[record["instruction"]] = record
                progress.advance(task)
    finally:
        model.close()

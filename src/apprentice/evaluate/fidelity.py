"""How close models are to the teacher, without a judge: the likelihood each model gives the teacher's answers, and
how answer files behave next to the teacher's (stop rate, length, overlap, repetition, lists and markdown).

    apprentice fidelity --teacher runs/x/answers/teacher.json --model bundled:gemma-3-270m \
        --model hf:runs/x/student --answers runs/x/answers/base.json --answers runs/x/answers/student.json --json

or from Python (what the pipeline calls):

    from apprentice.evaluate.fidelity import fidelity_report
    report = fidelity_report("teacher.json", ["hf:runs/x/student"], ["student.json"], batch_size=8)

NLL is teacher-forced: each teacher answer is rendered with the template the model answers with (the choice
`apprentice answer` makes: a student's saved template, the tokenizer's chat template, or the Alpaca template) by the
training renderer, so the target is the answer plus the end token and only target tokens are scored. The number is
total NLL / total target tokens (nats per token), exactly the loss training minimises, here on the teacher's answers
to the evaluation prompts. Imitation moves style far more than facts (Gudibande et al. 2023), so these measures say
how well a student copies its teacher, not how good either is.

The core (`nll`, `behaviour`, `measures`) takes values and returns values; `fidelity_report` does the reading and
loading. Tests: `python3 -m pytest tests/test_fidelity.py -q`.
"""

from __future__ import annotations

import gc
import math
import re
import statistics
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from apprentice.errors import UserError
from apprentice.evaluate.outputs import load_outputs
from apprentice.generate.rouge import rouge_l_f, tokenize as rouge_tokenize
from apprentice.train.data import Example
from apprentice.train.templates import Template

# A line that starts a list item or a heading, or **bold** anywhere: what "answers in lists" counts (Gudibande et
# al. measured the share of ChatGPT answers in lists; a heading or bold text is the same markdown habit).
_LIST_LINE = re.compile(r"^[ \t]*(?:[-*][ \t]|\d+[.)](?:\s|$)|#{1,6}(?:\s|$))", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*")


@dataclass(frozen=True)
class Answer:
    """One record of an outputs file; `finish_reason` is None when the file does not say ("stop" or "length")."""

    instruction: str
    output: str
    finish_reason: str | None = None


@dataclass(frozen=True)
class NLLResult:
    nll: float  # total NLL / total target tokens, nats per token
    tokens: int  # target tokens scored (answer + end token, after any truncation at max_len)
    prompts: int  # answers scored
    dropped: int  # answers whose prompt alone filled max_len: nothing left to score
    truncated: int  # scored, but cut at max_len

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)


# ---- behaviour: pure functions over answer texts -------------------------------------------------------------------


def words(text: str) -> int:
    return len(text.split())


def distinct_2(text: str) -> float | None:
    """Distinct word 2-grams / all word 2-grams (rouge_score's tokens); None for answers shorter than two words.

    1.0: no 2-gram repeats; a repetition loop drives it toward 0."""
    tokens = rouge_tokenize(text)
    grams = list(zip(tokens, tokens[1:]))
    return len(set(grams)) / len(grams) if grams else None


def uses_markdown(text: str) -> bool:
    """A line starting with `- `, `* `, `1. ` / `1)` or `#`, or **bold** text."""
    return bool(_LIST_LINE.search(text) or _BOLD.search(text))


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def measures(answers: Sequence[Answer], references: Sequence[Answer]) -> dict[str, Any]:
    """The behaviour measures of `answers`, where answers[i] and references[i] answer the same prompt.

    stop_rate: share not cut at the token limit (finish_reason other than "length"); None unless every answer has a
    finish_reason. length_ratio: median of words(answer) / words(reference), over references with words.
    median_words: median answer length in words. rouge_l: mean ROUGE-L F against the reference. distinct_2: mean of
    `distinct_2` over answers of two words or more. markdown: share of answers that `uses_markdown`."""
    if len(answers) != len(references):
        raise ValueError("answers and references must be aligned, one reference per answer")
    if not answers:
        raise ValueError("no answers to measure")
    reasons = [a.finish_reason for a in answers]
    ratios = [words(a.output) / words(r.output) for a, r in zip(answers, references) if words(r.output)]
    diversity = [d for d in (distinct_2(a.output) for a in answers) if d is not None]
    return {
        "stop_rate": None if None in reasons else sum(r != "length" for r in reasons) / len(answers),
        "length_ratio": statistics.median(ratios) if ratios else None,
        "median_words": statistics.median(words(a.output) for a in answers),
        "rouge_l": _mean([rouge_l_f(rouge_tokenize(r.output), rouge_tokenize(a.output))
                          for a, r in zip(answers, references)]),
        "distinct_2": _mean(diversity),
        "markdown": sum(uses_markdown(a.output) for a in answers) / len(answers),
    }


def behaviour(answers: Sequence[Answer], teacher: Sequence[Answer], name: str = "answers",
              teacher_name: str = "teacher") -> dict[str, Any]:
    """`measures` of the answers against the teacher's, over the prompts both answer (in the teacher's order), and
    the teacher's own `measures` over the same prompts, so the two can be put side by side.

    Returns {"prompts": shared, "missing": teacher prompts the answers lack, "extra": answers to other prompts,
    "measures": {...}, "teacher": {...}}; no shared prompt at all is a UserError."""
    by_instruction = {a.instruction: a for a in answers}
    teacher_instructions = {t.instruction for t in teacher}
    shared = [t for t in teacher if t.instruction in by_instruction]
    extra = sum(a.instruction not in teacher_instructions for a in answers)
    if not shared:
        raise UserError(f"{name} shares no prompt with {teacher_name} ({len(answers)} answers, {len(teacher)} teacher "
                        "answers): give answers to the same evaluation prompts")
    mine = [by_instruction[t.instruction] for t in shared]
    return {"prompts": len(shared), "missing": len(teacher) - len(shared), "extra": extra,
            "measures": measures(mine, shared), "teacher": measures(shared, shared)}


# ---- NLL: teacher-forced, batched ----------------------------------------------------------------------------------


def nll(model: Any, tokenizer: Any, template: Template, examples: Sequence[Example], batch_size: int,
        max_len: int | None = None, on_batch: Callable[[int], None] | None = None) -> NLLResult:
    """Mean per-token NLL of each example's output given its prompt, as training computes it.

    `model` is a transformers causal LM (float32 for exact numbers), `template` the template the model answers with.
    Sequences are rendered by `apprentice.train.data.tokenize` (output + EOS, loss on the target only), sorted by
    length and scored `batch_size` at a time, right-padded with padding masked, through the training loss
    (`ResponseLoss`: the LM head on target positions only, so a 262K vocabulary never makes whole-batch logits).
    `max_len` cuts sequences as training does (default: the model's context length). `on_batch(n)` is called after
    each batch with the number of examples it held."""
    import torch

    from apprentice.train.data import tokenize
    from apprentice.train.loop import collate  # the training loop's own padding, so the batches are the same
    from apprentice.train.loss import ResponseLoss

    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, not {batch_size}")
    limit = max_len or getattr(model.config, "max_position_embeddings", None) or 1 << 30
    data = tokenize(examples, template, tokenizer, limit)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loss = ResponseLoss(model)
    device = next(model.parameters()).device
    order = sorted(range(len(data.sequences)), key=lambda i: -len(data.sequences[i][0]))
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [data.sequences[i] for i in order[start : start + batch_size]]
            input_ids, mask, labels = collate(batch, pad_id, 1, device)
            batch_total, batch_count = loss(input_ids, mask, labels)
            total += float(batch_total)
            count += int(batch_count)
            if on_batch is not None:
                on_batch(len(batch))
    counts = data.counts
    if not count:
        raise UserError(f"no answer left to score: every prompt fills the {limit}-token limit (--max-len)")
    return NLLResult(nll=total / count, tokens=count, prompts=counts.kept, dropped=counts.dropped,
                     truncated=counts.truncated)


# ---- I/O at the edges ----------------------------------------------------------------------------------------------


def load_answers(path: str | Path) -> list[Answer]:
    """An AlpacaEval outputs file (checked by `load_outputs`), with each record's `finish_reason` when it has one."""
    return [Answer(o.instruction, o.output, o.finish_reason) for o in load_outputs(path)]


def check_model_spec(text: str):
    """Parse a --model spec, refusing served models: scoring needs the weights."""
    from apprentice.models.spec import parse_spec

    spec = parse_spec(text)
    if not spec.is_local:
        raise UserError(f"--model {text}: openai: models cannot score text: give a local model (hf:, gguf:, bundled:)")
    return spec


def teacher_examples(teacher: Sequence[Answer], prompts_file: str | Path | None) -> list[Example]:
    """The teacher's answers as training examples, with each prompt split into instruction and input as
    `apprentice answer` split it: by the prompts file (default: the shipped evaluation set); a prompt not found there
    is taken whole as the instruction (AlpacaEval's convention). An explicit prompts file must hold every prompt."""
    from apprentice.evaluate.prompts import load_prompts

    prompts = {p.text: p for p in load_prompts(Path(prompts_file) if prompts_file else None)}
    missing = [t.instruction for t in teacher if t.instruction not in prompts]
    if prompts_file and missing:
        raise UserError(f"--prompts {prompts_file}: {len(missing)} of the teacher's {len(teacher)} prompts are not in "
                        f"it, first {missing[0][:60]!r}")
    examples = []
    for t in teacher:
        prompt = prompts.get(t.instruction)
        instruction, input = (prompt.instruction, prompt.input) if prompt else (t.instruction, "")
        examples.append(Example(instruction, input, t.output))
    return examples


def score_model(spec_text: str, examples: Sequence[Example], batch_size: int, max_len: int | None = None,
                device: str = "cpu", base_template: bool = False,
                on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Load one local model (LoRA adapters merged), pick its template as `apprentice answer` does, score the
    examples in float32; returns {"model", "nll", "perplexity", "tokens", "prompts", "dropped", "truncated",
    "template", "prompt_style"}."""
    import torch

    from apprentice.evaluate.answer import choose_style
    from apprentice.models.local import LocalModel
    from apprentice.models.base import BackendOptions
    from apprentice.models.spec import local_model_dir
    from apprentice.train.templates import ChatTemplate

    spec = check_model_spec(spec_text)
    local = LocalModel.from_dir(local_model_dir(spec), str(spec), BackendOptions(device=device))
    try:
        local.model.to(torch.float32)  # from_dir picks bfloat16 on CUDA; the numbers should not depend on the device
        style = choose_style(spec, base_template)
        template = style.template if style.template is not None else ChatTemplate(local.tokenizer)
        result = nll(local.model, local.tokenizer, template, examples, batch_size, max_len, on_batch)
    finally:
        del local
        gc.collect()
    return {"model": spec_text, **asdict(result), "perplexity": result.perplexity, "template": template.kind,
            "prompt_style": style.why}


def fidelity_report(teacher_file: str | Path, model_specs: Sequence[str], answer_files: Sequence[str | Path],
                    batch_size: int = 8, prompts_file: str | Path | None = None, max_len: int | None = None,
                    device: str = "cpu", base_template: bool | Collection[str] = False,
                    console: Any = None) -> dict[str, Any]:
    """Everything `apprentice fidelity` reports, as one JSON-ready dict:

    {"teacher": {"file", "prompts", "measures"},
     "models": [{"model", "nll", "perplexity", "tokens", "prompts", "dropped", "truncated", "template",
                 "prompt_style"}, ...],                      # in the order given
     "answers": [{"file", "prompts", "missing", "extra", "measures", "teacher"}, ...]}   # in the order given

    `base_template`: score every model (True), or the specs listed, with the Alpaca template, as a base model is
    asked. Every file and spec is checked before any model is loaded. `console` (rich) shows a progress bar over
    batches."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    teacher = load_answers(teacher_file)
    for spec in model_specs:
        check_model_spec(spec)
    answers = [{"file": str(path), **behaviour(load_answers(path), teacher, str(path), str(teacher_file))}
               for path in answer_files]
    examples = teacher_examples(teacher, prompts_file) if model_specs else []
    models = []
    console = console or Console(stderr=True)
    for spec in model_specs:
        columns = (TextColumn(f"[bold]nll[/] {escape(spec)}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("nll", total=len(examples))
            as_base = base_template if isinstance(base_template, bool) else spec in base_template
            models.append(score_model(spec, examples, batch_size, max_len, device, as_base,
                                      on_batch=lambda n: progress.advance(task, n)))
    return {"teacher": {"file": str(teacher_file), "prompts": len(teacher), "measures": measures(teacher, teacher)},
            "models": models, "answers": answers}

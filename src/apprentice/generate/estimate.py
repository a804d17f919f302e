"""What generating `--num` records will take, before the first request: `apprentice generate --estimate`.

Two bases, said in the output:

* measured: when OUT already holds records and its call record holds this teacher's answers, the requests, prompt
  and completion tokens per kept record so far, times the records still missing. The range is that rate times
  1 -/+ 2 / sqrt(records so far): a rate from few records is uncertain.
* assumed: otherwise, from the plan itself. The prompts the run would send first are built (no request is sent) and
  counted at about 4 characters per token; each kind of request is expected to fill half of its `max_tokens` (a
  quarter to all of it for the range), and a share of the candidates to be kept of 50% (80% to 25%: fewer kept,
  more requests). Per candidate, self-instruct sends 1/8 of a bootstrap request and one instance request, Alpaca
  1/16 of a request; with teacher outputs each candidate also gets an answer request.

With `--batch` the cost is at the batch price (`--batch-discount` times the prices).

Pure but for `measured_basis`, which reads OUT.

    estimate = estimate_run(config, seeds, measured_basis(config))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from apprentice.generate import store
from apprentice.generate.config import GenerateConfig, plan_of
from apprentice.generate.filters import FilterConfig
from apprentice.generate.loop import SELF_INSTRUCT, Generation, Plan
from apprentice.generate.prompts import instance_prompt
from apprentice.generate.seeds import SeedTask
from apprentice.jsonfile import read_log_lines
from apprentice.models.base import Request
from rich.table import Table

CHARS_PER_TOKEN = 4
ACCEPTANCE = (0.8, 0.5, 0.25)  # share of candidates kept: (fewest requests, expected, most requests)
FILL = (0.25, 0.5, 1.0)  # completion tokens as a share of max_tokens: (low, expected, high)

Range = tuple[float, float, float]  # low, expected, high


@dataclass(frozen=True)
class Measured:
    records: int  # records OUT holds
    requests: int  # this teacher's calls in the call record
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Estimate:
    missing: int  # records still to make
    requests: Range
    prompt_tokens: Range
    completion_tokens: Range
    cost_usd: Range
    basis: str  # how it was estimated, in words


def measured_basis(config: GenerateConfig, backend: str) -> Measured | None:
    """What OUT has so far (records, and the teacher's calls in its call record); None for a new run. Read only:
    an estimate changes nothing in OUT."""
    from apprentice.models.record import usage

    data = config.out / store.DATA
    records = len(read_log_lines(data)[0]) if data.is_file() else 0
    if records == 0 or config.cache is None:
        return None
    requests, prompt, completion = usage(Path(config.cache), backend)
    return Measured(records, requests, prompt, completion) if requests else None


def _tokens(request: Request) -> float:
    text = request.prompt if not request.is_chat else "".join(m["content"] for m in request.messages or ())
    return len(text or "") / CHARS_PER_TOKEN


def _kinds(plan: Plan, seeds: list[SeedTask], filters: FilterConfig) -> list[tuple[float, float, int]]:
    """(requests per candidate, prompt tokens, max_tokens) of each kind of request the plan sends."""
    state = Generation(plan, seeds, filters)
    first = state.new_jobs()[0].request  # a bootstrap or Alpaca prompt, exactly as the run would send it
    per_candidate = 1 / plan.bootstrap_new if plan.strategy == SELF_INSTRUCT else 1 / plan.alpaca_limit
    kinds = [(per_candidate, _tokens(first), first.max_tokens)]
    example = seeds[0]
    if plan.strategy == SELF_INSTRUCT:
        shown = [(t.instruction, t.instances[0].input, t.instances[0].output)
                 for t in seeds[1: 1 + plan.instance_examples]]
        text = instance_prompt(example.instruction, shown, False, plan.chat)
        kinds.append((1.0, len(text) / CHARS_PER_TOKEN, plan.instance_max_tokens))
    if plan.outputs == "teacher":
        question = f"{example.instruction}\n\n{example.instances[0].input}"
        kinds.append((1.0, len(question) / CHARS_PER_TOKEN, plan.answer_max_tokens))
    return kinds


def estimate_run(config: GenerateConfig, seeds: list[SeedTask], measured: Measured | None) -> Estimate:
    """The estimate for the resolved `config`: requests, tokens and cost for the records still missing."""
    missing = max(0, config.num - (measured.records if measured else 0))

    discount = config.batch_discount if config.batch else 1.0

    def cost(prompt: float, completion: float) -> float:
        return (prompt * config.price_in + completion * config.price_out) * discount / 1e6

    if measured is not None:
        spread = min(1.0, 2 / math.sqrt(measured.records))
        factors = (1 - spread, 1.0, 1 + spread)
        per = [value / measured.records for value in
               (measured.requests, measured.prompt_tokens, measured.completion_tokens)]
        requests, prompt, completion = ([missing * rate * f for f in factors] for rate in per)
        basis = (f"measured: {measured.requests} requests for the {measured.records} records in {config.out}; "
                 f"range = that rate x (1 -/+ {spread:.2f})")
    else:
        kinds = _kinds(plan_of(config), seeds, config.filters)
        requests, prompt, completion = [], [], []
        for acceptance, fill in zip(ACCEPTANCE, FILL):
            candidates = missing / acceptance
            requests.append(sum(candidates * share for share, _, _ in kinds))
            prompt.append(sum(candidates * share * tokens for share, tokens, _ in kinds))
            completion.append(sum(candidates * share * fill * limit for share, _, limit in kinds))
        basis = ("assumed: 50% of candidates kept (80% to 25%), answers filling half their max_tokens (a quarter "
                 f"to all), about {CHARS_PER_TOKEN} characters per token; no run in {config.out} to measure yet")
    if config.batch:
        basis += f"; cost at the Batch API's price ({discount:g} x --price-in/--price-out)"
    return Estimate(missing, tuple(requests), tuple(prompt), tuple(completion),  # type: ignore[arg-type]
                    tuple(cost(p, c) for p, c in zip(prompt, completion)), basis)  # type: ignore[arg-type]


def estimate_table(estimate: Estimate) -> Table:
    """The estimate as a table: each quantity's low, expected and high value, then the basis."""
    table = Table(title=f"generate: estimate for the {estimate.missing:,} records still missing",
                  title_justify="left", caption=estimate.basis, caption_justify="left")
    for column in ("", "low", "expected", "high"):
        table.add_column(column, justify="left" if not column else "right")
    for label, values, shown in (("requests", estimate.requests, "{:,.0f}"),
                                 ("prompt tokens", estimate.prompt_tokens, "{:,.0f}"),
                                 ("completion tokens", estimate.completion_tokens, "{:,.0f}"),
                                 ("cost (USD)", estimate.cost_usd, "${:,.2f}")):
        table.add_row(label, *(shown.format(v) for v in values))
    return table


"""Counters of a generation run (records, rejections by reason, requests, tokens, cost) and how they are shown: the
live progress line, the final summary table, and `stats.json`.

Record counts describe the run directory (what `data.jsonl` and `rejected.jsonl` hold, earlier invocations
included). Request, token and time counters describe this invocation; `cost_usd` is what this invocation paid
(answers from the response cache are free), `data_cost_usd` what every answer used this time costs at this
invocation's price (a batch run's `discount` applies to both).

    stats = RunStats(target=100, price_in=0.15, price_out=0.60)
    stats.add_answer(completion)
    print(stats.progress_text())
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from rich.table import Table

from apprentice.models.base import FAILED, Completion


@dataclass
class RunStats:
    target: int
    price_in: float = 0.0  # USD per million prompt tokens
    price_out: float = 0.0  # USD per million completion tokens
    discount: float = 1.0  # share of the prices paid: the Batch API's discount in a batch run
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason code -> count
    answers: int = 0
    cached: int = 0
    failed: int = 0  # requests that failed after their retries (counted as answered, never paid)
    prompt_tokens: int = 0  # every answer, cached or paid
    completion_tokens: int = 0
    paid_prompt_tokens: int = 0
    paid_completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None  # set by `stop`; until then the run's time runs on

    def add_answer(self, completion: Completion) -> None:
        self.answers += 1
        if completion.finish_reason == FAILED:
            self.failed += 1
            return
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        if completion.cached:
            self.cached += 1
        else:
            self.paid_prompt_tokens += completion.prompt_tokens
            self.paid_completion_tokens += completion.completion_tokens

    @property
    def paid(self) -> int:
        return self.answers - self.cached - self.failed

    def stop(self) -> None:
        """The run's clock stops here (the first call counts): waiting for surplus answers still in flight, writing
        the final files and the summary are not the run's time."""
        if self.ended is None:
            self.ended = time.monotonic()

    @property
    def seconds(self) -> float:
        return (time.monotonic() if self.ended is None else self.ended) - self.started

    @property
    def candidates(self) -> int:
        return self.kept + sum(self.rejected.values())

    @property
    def acceptance(self) -> float:
        return self.kept / self.candidates if self.candidates else 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for these tokens at this invocation's price (the discount included)."""
        return (prompt_tokens * self.price_in + completion_tokens * self.price_out) * self.discount / 1e6

    @property
    def cost_usd(self) -> float:
        return self.cost(self.paid_prompt_tokens, self.paid_completion_tokens)

    @property
    def data_cost_usd(self) -> float:
        return self.cost(self.prompt_tokens, self.completion_tokens)

    def progress_text(self) -> str:
        rate = self.answers / self.seconds if self.seconds > 0 else 0.0
        tokens = self.prompt_tokens + self.completion_tokens
        # the data's cost so far per kept record, times the target: where the run is heading
        projected = f" (~${self.data_cost_usd / self.kept * self.target:.2f} for {self.target:,})" if self.kept else ""
        return (f"accept {self.acceptance:.0%} · {rate:.{1 if rate >= 10 else 2}f} req/s · {self.answers} req "
                f"({self.cached} cached) · "
                f"{tokens:,} tok · ${self.cost_usd:.4f}{projected if self.price_in or self.price_out else ''}")

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "kept": self.kept,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "acceptance_rate": round(self.acceptance, 4),
            "requests": {"answered": self.answers, "cached": self.cached, "paid": self.paid, "failed": self.failed},
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens,
                       "paid_prompt": self.paid_prompt_tokens, "paid_completion": self.paid_completion_tokens},
            "price_per_million": {"input": self.price_in, "output": self.price_out},
            "price_discount": self.discount,
            "cost_usd": round(self.cost_usd, 6),
            "data_cost_usd": round(self.data_cost_usd, 6),
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.answers / self.seconds, 3) if self.seconds > 0 else 0.0,
        }


def summary_table(stats: RunStats) -> Table:
    """The end-of-run summary: records, rejections by reason, requests, tokens, cost, time."""
    table = Table(title="generate: summary", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("kept", f"{stats.kept} / {stats.target}")
    table.add_row("rejected", str(sum(stats.rejected.values())))
    for reason, count in sorted(stats.rejected.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(f"  {reason}", str(count))
    table.add_row("acceptance rate", f"{stats.acceptance:.1%}")
    table.add_row("requests (cached / paid)", f"{stats.answers} ({stats.cached} / {stats.paid})")
    if stats.failed:
        table.add_row("  failed after their retries", str(stats.failed))
    table.add_row("tokens in / out", f"{stats.prompt_tokens:,} / {stats.completion_tokens:,}")
    batch = f" (batch price, x{stats.discount:g})" if stats.discount != 1.0 else ""
    table.add_row(f"cost paid now / of the data{batch}", f"${stats.cost_usd:.4f} / ${stats.data_cost_usd:.4f}")
    table.add_row("time", f"{stats.seconds:.1f} s")
    return table

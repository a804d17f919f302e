"""Run `apprentice generate`: the I/O shell around the state machine in `loop.py`.

It checks the inputs before touching OUT (a bad seed file writes nothing), loads the teacher behind the response
cache (`RecordedModel`, `OUT/requests.sqlite` by default), keeps `concurrency` requests in flight, appends every
kept and rejected record as it is committed, shows a live progress bar, and writes `alpaca_data.json` and
`stats.json` at the end. With `--batch` (an `openai:` teacher) each wave of planned requests goes to the Batch API
as one batch (models/batch.py), and the next wave is planned from what its answers kept.

Resuming: rerunning the same command replays the run from its first request. The plan is deterministic and the
answers already received come back from the response cache, so the replay rebuilds exactly the state the killed
run had (ROUGE index included) without paying again; records already in `data.jsonl` and `rejected.jsonl` are
checked and skipped, not written twice, and the run goes on from there to `--num`. A new `--num`, or a cache that
cannot replay the records (deleted, or another `--cache`), starts a new *segment*: a new plan, seeded by where it
starts, that takes the records already there as kept (still no duplicates). The segment's start is saved in
generate_config.json, so a segment is replayed like a whole run when it is resumed in turn.

    from apprentice.generate.run import generate
    result = generate(GenerateConfig(teacher="bundled:smollm2-135m-instruct", out=Path("runs/x"), num=20))
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from apprentice.errors import BackendError, UserError
from apprentice.generate import store
from apprentice.generate.budget import Budget
from apprentice.generate.config import GenerateConfig, check_resumable, plan_of, resolve, to_json
from apprentice.generate.dispatch import Dispatcher
from apprentice.generate.loop import Generation, Outcome
from apprentice.generate.seeds import SeedTask, load_seed_tasks
from apprentice.generate.stats import RunStats
from apprentice.models import load_model
from apprentice.models.base import FAILED, BackendOptions, Model
from apprentice.models.record import RecordedModel, is_recorded, open_db, usage
from apprentice.models.spec import model_identity, parse_spec
from apprentice.runlock import hold

STATS_EVERY_S = 2.0  # stats.json is rewritten this often during a run
WAVE_LIMIT = 1_000_000  # requests a batch run may have in flight: above any wave (the batch backend splits them)
# this many requests in a row failing after their retries means the teacher is down, not unlucky: stop
MAX_FAILURES_IN_A_ROW = 10
_IDENTITY = ("instruction", "input", "output")


@dataclass
class RunResult:
    status: str  # "done" (reached --num), "capped" (stopped at --max-requests) or "cost_capped" (at --max-cost)
    stats: RunStats
    config: GenerateConfig
    resumed_from: int  # records data.jsonl held before this invocation
    replayed: bool  # False when the cache could not replay the earlier records and the run continued from them
    paid_usd: float = 0.0  # with --max-cost: what the teacher has been paid in all (earlier invocations included)


class _Diverged(Exception):
    """The replay produced a record that differs from data.jsonl: the cache does not hold the earlier answers."""


class _Sink:
    """Writes committed outcomes: records the files already hold (from an earlier invocation) are compared and
    skipped, the rest appended; the record counters in `stats` follow what the files hold."""

    def __init__(self, out: Path, replay_kept: list[dict], skip_rejected: int, stats: RunStats):
        self.replay_kept = replay_kept
        self.skip_rejected = skip_rejected
        self.stats = stats
        self.seen_kept = 0
        self.seen_rejected = 0
        self.data = store.AppendLog(out / store.DATA)
        self.rejected = store.AppendLog(out / store.REJECTED)

    def write(self, outcome: Outcome) -> None:
        for record in outcome.kept:
            if self.seen_kept < len(self.replay_kept):
                earlier = self.replay_kept[self.seen_kept]
                if any(record[key] != earlier.get(key) for key in _IDENTITY):
                    raise _Diverged(self.seen_kept)
            else:
                self.data.append(record)
                self.stats.kept += 1
            self.seen_kept += 1
        for record in outcome.rejected:
            if self.seen_rejected >= self.skip_rejected:
                if self.seen_kept < len(self.replay_kept):  # the file ran out of rejections before records
                    raise _Diverged(self.seen_kept)
                self.rejected.append(record)
                self.stats.rejected[record["reason"]] += 1
            self.seen_rejected += 1

    def close(self) -> None:
        self.data.close()
        self.rejected.close()


@dataclass(frozen=True)
class _Segment:
    """The stretch of a run that one deterministic plan produced: it starts from the first `records` kept records
    and `rejections` rejections of the files (0 and 0 for a new run), and can be replayed from the cache."""

    records: int = 0
    rejections: int = 0


def generate(config: GenerateConfig, console: Console | None = None) -> RunResult:
    """Generate until OUT/data.jsonl holds `config.num` records (or the request cap stops the run)."""
    console = console or Console(stderr=True)
    seeds = load_seed_tasks(config.seeds)  # a bad seed file stops here, before OUT exists
    out = config.out
    saved_path = out / store.CONFIG
    saved = json.loads(saved_path.read_text(encoding="utf-8")) if saved_path.exists() else None
    if saved is None and (out / store.DATA).exists():
        raise UserError(f"{out} has {store.DATA} but no {store.CONFIG}: it is not a generate run; choose another --out")
    if saved is not None:
        config = replace(config, window=saved.get("window"))  # the plan's lookahead is fixed when a run starts
    config = resolve(config)
    current = json.loads(json.dumps(to_json(config)))
    if saved is not None:
        check_resumable(saved, current, out)
    with hold(out, "apprentice generate"):  # one writer per OUT: a second process would append the same records
        return _generate_locked(config, saved, current, seeds, console)


def _generate_locked(config: GenerateConfig, saved: dict | None, current: dict, seeds: list[SeedTask],
                     console: Console) -> RunResult:
    out = config.out
    saved_path = out / store.CONFIG
    existing = store.read_log(out / store.DATA)
    rejected = store.read_log(out / store.REJECTED)
    segment = _Segment(**saved.get("segment", {})) if saved else _Segment()
    stats = RunStats(target=config.num, price_in=config.price_in, price_out=config.price_out,
                     discount=config.batch_discount if config.batch else 1.0,
                     kept=len(existing), rejected=Counter(r.get("reason", "?") for r in rejected))
    status, replayed = "done", True
    if len(existing) < config.num and saved is not None and saved.get("num") != config.num:
        # the plan looks at --num near its end, so a new target starts a new plan from the records there are
        console.print(f"--num changed from {saved.get('num')} to {config.num}: continuing from the "
                      f"{len(existing)} records with a new plan")
        segment, replayed = _Segment(len(existing), len(rejected)), False
    store.write_json_atomic(saved_path, {**current, "segment": asdict(segment)})
    try:
        if len(existing) < config.num:
            spec = parse_spec(config.teacher)
            model = load_model(spec, BackendOptions(concurrency=config.concurrency, batch_size=config.concurrency,
                                                    prompts_per_request=config.prompts_per_request,
                                                    timeout=config.timeout, max_retries=config.max_retries, rpm=config.rpm, tpm=config.tpm,
                                                    keep_going=True, batch=config.batch, engine=config.engine),
                               record=config.cache)
            try:
                try:
                    status = _run(model, config, seeds, stats, existing, len(rejected), segment, console)
                except _Diverged:
                    console.print(f"[yellow]the response cache does not replay the records in {store.DATA} (was "
                                  f"it deleted?); continuing from the {len(existing)} records with a new plan[/]")
                    segment, replayed = _Segment(len(existing), len(rejected)), False
                    store.write_json_atomic(saved_path, {**current, "segment": asdict(segment)})
                    status = _run(model, config, seeds, stats, existing, len(rejected), segment, console)
            finally:
                model.close()
    finally:  # also after Ctrl-C or a teacher that failed for good: the Alpaca list and counters match data.jsonl
        stats.stop()
        _finish(out, stats)
    paid = _paid(config) if config.max_cost is not None else 0.0
    return RunResult(status, stats, config, len(existing), replayed, paid)


def _paid(config: GenerateConfig) -> float:
    """USD the call record shows paid to this teacher (every invocation's requests), at today's prices: what the
    Batch API answered at the batch price."""
    backend = model_identity(parse_spec(config.teacher))
    paid = 0.0
    for batch, share in ((False, 1.0), (True, config.batch_discount)):
        _, prompt_tokens, completion_tokens = usage(config.cache, backend, batch=batch)
        paid += (prompt_tokens * config.price_in + completion_tokens * config.price_out) * share / 1e6
    return paid


def cancel_batches(out: Path) -> tuple[int, int]:
    """Cancel the Batch API batches that the generate run in `out` has in flight: (batches, requests). A rerun
    records what they answered before the cancellation and submits the rest."""
    from apprentice.models.batch import BatchModel

    saved_path = out / store.CONFIG
    if not saved_path.is_file():
        raise UserError(f"{out} holds no generate run (no {store.CONFIG}): give the --out of a batch run")
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    spec = parse_spec(saved["teacher"])
    if spec.kind != "openai" or not Path(saved["cache"]).is_file():
        return 0, 0
    model = BatchModel.from_spec(spec, BackendOptions(timeout=saved.get("timeout", BackendOptions.timeout),
                                                      max_retries=saved.get("max_retries", BackendOptions.max_retries),
                                                      batch=True), Path(saved["cache"]))
    try:
        return model.cancel_open()
    finally:
        model.close()


def _run(model: Model, config: GenerateConfig, seeds: list[SeedTask], stats: RunStats, existing: list[dict],
         rejected_count: int, segment: _Segment, console: Console) -> str:
    """Replay the segment's plan (skipping what the files hold) and go on until done or capped; returns which."""
    spec = parse_spec(config.teacher)
    base = existing[: segment.records]
    state = Generation(plan_of(config), seeds, config.filters, teacher=config.teacher,
                       preloaded=[r["instruction"] for r in base],
                       salt=f"segment-{segment.records}" if segment.records else "")
    sink = _Sink(config.out, existing[segment.records:], rejected_count - segment.rejections, stats)
    open_db(config.cache).close()  # create the schema once, before the feeders open it side by side
    # Local models batch (one feeder); HTTP refills slots one by one, and a slot may carry several prompts; the
    # Batch API takes each wave of planned requests whole (one feeder in waves).
    prompts_in_flight = config.concurrency * (1 if spec.is_local else config.prompts_per_request)
    dispatcher = Dispatcher(lambda: RecordedModel(model, config.cache, model_identity(spec)),
                            WAVE_LIMIT if config.batch else prompts_in_flight,
                            feeders=1 if spec.is_local or config.batch else prompts_in_flight, waves=config.batch)
    gate = _Gate(config, stats, dispatcher, model_identity(spec))
    columns = (TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    last_stats = time.monotonic()
    ended = cost_capped = False
    failures = 0  # requests in a row that failed after their retries
    try:
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("generate", total=config.num, completed=stats.kept,
                                    info=stats.progress_text() + model.status_text())
            gate.submit(state.new_jobs())
            while not state.finished and not (cost_capped := gate.stuck()):
                answer = dispatcher.get(timeout=1.0)
                if answer is not None:
                    gate.release(answer[0])
                    failures = failures + 1 if answer[1].finish_reason == FAILED else 0
                    if failures >= MAX_FAILURES_IN_A_ROW:
                        raise BackendError(f"the teacher failed {failures} requests in a row, each after its "
                                           f"retries (last: {answer[1].raw.get('error')}); the records kept so far "
                                           f"are in {config.out}: rerun when it answers again")
                    stats.add_answer(answer[1])
                    for outcome in state.receive(*answer):
                        sink.write(outcome)
                    gate.submit(state.new_jobs())
                progress.update(bar, completed=min(stats.kept, config.num),
                                info=stats.progress_text() + model.status_text())
                if time.monotonic() - last_stats > STATS_EVERY_S:
                    store.write_json_atomic(config.out / store.STATS, stats.to_json())
                    last_stats = time.monotonic()
        stats.stop()
        ended = True
    finally:
        dispatcher.close(wait_s=30.0 if ended else 2.0)  # on errors and Ctrl-C, do not wait for slow answers
        gate.close()
        sink.close()
    return "done" if state.done else "cost_capped" if cost_capped else "capped"


class _Gate:
    """Sends planned jobs in order, holding back the first that `--max-cost` does not admit until answers in flight
    have come back (and released their reservations); it is stuck when a job still does not fit with none in
    flight. Without a cap every job goes at once."""

    def __init__(self, config: GenerateConfig, stats: RunStats, dispatcher: Dispatcher, backend: str):
        self.stats = stats
        self.dispatcher = dispatcher
        self.held: deque = deque()
        self.budget: Budget | None = None
        self.db = None
        self.backend = backend
        if config.max_cost is not None:  # at this invocation's price: the batch price in a batch run
            self.budget = Budget(config.max_cost, config.price_in * stats.discount, config.price_out * stats.discount,
                                 paid_before=_paid(config))
            self.db = open_db(config.cache)

    def stuck(self) -> bool:
        """The cap binds: a job is held and nothing in flight can make room for it."""
        return bool(self.held) and not self.budget.reserved and not self._send_held()

    def submit(self, jobs) -> None:
        self.held.extend(jobs)
        self._send_held()

    def release(self, job_id: int) -> None:
        if self.budget is not None:
            self.budget.release(job_id)

    def _send_held(self) -> bool:
        """Send held jobs while they fit; whether any was sent."""
        sent = False
        while self.held and (self.budget is None or self.budget.admit(
                self.held[0].id, self.held[0].request, is_recorded(self.db, self.backend, self.held[0].request),
                self.stats.cost_usd)):
            job = self.held.popleft()
            self.dispatcher.submit([(job.id, job.request)])
            sent = True
        return sent

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def _finish(out: Path, stats: RunStats) -> None:
    store.write_json_atomic(out / store.ALPACA_DATA, store.alpaca_records(store.read_log(out / store.DATA)))
    store.write_json_atomic(out / store.STATS, stats.to_json())

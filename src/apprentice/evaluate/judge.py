"""The LLM judge: ask a model which of two outputs follows the instruction better, in both orders, and write
AlpacaEval-style annotations.

    from apprentice.evaluate.judge import judge_pairs, write_annotations
    annotations = judge_pairs(pairs, model)          # pairs from outputs.join_outputs, model from models.load_model
    write_annotations("judgments.json", annotations)

or `apprentice judge --a A.json --b B.json --judge SPEC --out judgments.json`.

Judges favour whichever output they read first, so by default each pair is judged twice, A shown first and then B
shown first. With `orders=1` each pair is judged once in a seeded random order (AlpacaEval's way). Either way the
swap is recorded and undone after reading. Identical outputs are a tie without a call. An answer with no readable
verdict is asked again once with a stricter prompt. With `controls` (`evaluate.controls`: a real answer against a
wrong one) the judge also judges those, and their annotations, marked `control`, follow the real ones: its accuracy
on them says whether its verdicts can be trusted (`apprentice tally` prints it beside the win rate).

How an order's answers become the pair's preference:
- **Probabilities**, when the judge returns first-token log-probabilities (local models do; HTTP servers when they
  support `top_logprobs`) and every order of the pair has some probability on the labels A and B: each order gives
  p = P(B) / (P(A) + P(B)) (`verdict.second_probability`), turned into the probability that the B file's output
  wins, and the preference is 1 + the mean p over the orders, a fraction in [1, 2] as AlpacaEval 2's weighted
  annotators write it. A judge that leans towards the first-shown output by the same amount in both orders thus
  lands at exactly 1.5, whatever the size of its lean; only a preference that follows the content moves it.
- **Hard verdicts** otherwise (FastChat's rule): two orders must agree to count, a disagreement is a tie with the
  disagreement recorded; one order counts as it is. An order with no verdict even after the strict retry fails the
  judgment: preference None, never a guess.

Annotations follow AlpacaEval: output_1 is A, output_2 is B, preference 1 = output_1 wins, 2 = output_2 wins,
1.5 = tie, a fraction between = a probability, None = failed; `preference_from` says which way it was made
("logprobs", "verdicts", "identical" or None for a failed one). Each also keeps, per order, the raw judge texts, the
hard verdict and the probability, and whether the two orders' hard verdicts agreed (`swap_agreement`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path

from rich.console import Console

from apprentice.evaluate.controls import Control, control_summary, make_controls
from apprentice.evaluate.outputs import Pair
from apprentice.evaluate.stats import TIE
from apprentice.evaluate.verdict import Verdict, parse_verdict, second_probability, verdict_from_logprobs
from apprentice.jsonfile import write_json_atomic
from apprentice.models import Completion, Model, Request
from apprentice.models.base import BackendOptions
from apprentice.models.engine import ENGINE_HELP, check_engine
from apprentice.models.ratelimit import check_limits
from apprentice.models.spec import SPEC_HELP
from apprentice.runlock import hold
from apprentice.settings import check_settings, setting

ProgressCallback = Callable[[int, int], None]  # (requests answered, requests planned so far)


@cache
def load_prompt(name: str) -> str:
    """A judge prompt shipped beside this module: "judge_prompt.txt" or "judge_prompt_strict.txt"."""
    return files("apprentice.evaluate").joinpath(name).read_text(encoding="utf-8")


@dataclass
class _View:
    """One showing of a pair to the judge: which output came first and what the judge said."""

    pair: int
    swapped: bool  # True when B was shown first
    texts: list[str] = field(default_factory=list)
    verdict: Verdict | None = None  # in the judge's labels: A = shown first
    source: str | None = None  # "text" or "logprobs"
    p_second: float | None = None  # P(B) / (P(A) + P(B)) of the first token, in the judge's labels

    def read(self, completion: Completion) -> None:
        """Take the verdict and the probability from one answer; a strict retry replaces both, so that the two
        always describe the same answer."""
        self.texts.append(completion.text)
        self.verdict, self.source = _read_verdict(completion)
        self.p_second = second_probability(completion.top_logprobs)

    @property
    def preference(self) -> float | None:
        """The verdict in file terms, swap undone: 1 = A file wins, 2 = B file wins, 1.5 = tie."""
        if self.verdict is None:
            return None
        if self.verdict == "tie":
            return TIE
        return 1.0 if (self.verdict == "A") != self.swapped else 2.0

    @property
    def p_output_2(self) -> float | None:
        """The probability that the B file's output wins, swap undone."""
        if self.p_second is None:
            return None
        return 1.0 - self.p_second if self.swapped else self.p_second

    def to_json(self) -> dict:
        return {"shown_first": 2 if self.swapped else 1, "texts": self.texts, "verdict": self.verdict,
                "verdict_from": self.source, "preference": self.preference, "p_output_2": self.p_output_2}


def seeded_swap(seed: int, instruction: str) -> bool:
    """Whether B is shown first, fixed by the seed and the instruction alone, so a subset or a reordered file
    keeps its sides."""
    return hashlib.sha256(f"{seed}\0{instruction}".encode()).digest()[0] & 1 == 1


def judge_request(pair: Pair, swapped: bool, strict: bool = False, max_tokens: int = 16) -> Request:
    """The chat request that shows `pair` to the judge; greedy, short, and asking for first-token log-probabilities
    so that servers which return them give the verdict's probabilities too."""
    first, second = (pair.output_b, pair.output_a) if swapped else (pair.output_a, pair.output_b)
    prompt = load_prompt("judge_prompt_strict.txt" if strict else "judge_prompt.txt").format(
        instruction=pair.instruction, first=first, second=second)
    return Request(messages=({"role": "user", "content": prompt},), max_tokens=max_tokens, temperature=0.0,
                   logprobs=5)


def _read_verdict(completion: Completion) -> tuple[Verdict | None, str | None]:
    verdict = parse_verdict(completion.text)
    if verdict is not None:
        return verdict, "text"
    verdict = verdict_from_logprobs(completion.top_logprobs)
    return verdict, "logprobs" if verdict is not None else None


def _ask(model: Model, pairs: Sequence[Pair], views: list[_View], strict: bool, max_tokens: int,
         on_answer: Callable[[], None]) -> None:
    requests = [judge_request(pairs[v.pair], v.swapped, strict, max_tokens) for v in views]
    for index, completion in model.stream(requests):
        views[index].read(completion)
        on_answer()


def _annotation(pair: Pair, views: list[_View], annotator: str) -> dict:
    preferences = [v.preference for v in views]
    probabilities = [v.p_output_2 for v in views]
    agreement = preferences[0] == preferences[1] if len(views) == 2 and None not in preferences else None
    failure: str | None = None
    preference: float | None
    made_from: str | None
    if not views:
        preference, made_from = TIE, "identical"
    elif None not in probabilities:
        # one order without label probabilities would leave the other's position lean uncancelled
        preference, made_from = 1.0 + sum(probabilities) / len(probabilities), "logprobs"
    elif None in preferences:
        preference, made_from = None, None
        failed = ", ".join("B first" if v.swapped else "A first" for v in views if v.preference is None)
        failure = f"no verdict after a strict retry ({failed})"
    elif len(views) == 1:
        preference, made_from = preferences[0], "verdicts"
    else:
        preference, made_from = preferences[0] if agreement else TIE, "verdicts"
    return {
        "instruction": pair.instruction,
        "output_1": pair.output_a, "generator_1": pair.generator_a,
        "output_2": pair.output_b, "generator_2": pair.generator_b,
        "annotator": annotator, "preference": preference, "preference_from": made_from, "dataset": pair.dataset,
        "swap_agreement": agreement, "failure": failure,
        "orders": [v.to_json() for v in views],
    }


def judge_pairs(pairs: Sequence[Pair], model: Model, *, orders: int = 2, seed: int = 0, max_tokens: int = 16,
                annotator: str | None = None, progress: ProgressCallback | None = None,
                controls: Sequence[Control] = ()) -> list[dict]:
    """Judge every pair with `model` and return one AlpacaEval-style annotation per pair, in the pairs' order, then
    one per control, marked with its kind and the preference a right verdict gives.

    orders: 2 judges A-first and B-first; 1 judges one order chosen by `seed`. max_tokens bounds each judge reply.
    progress(done, planned) is called after each answer; planned grows when answers need a strict retry."""
    if orders not in (1, 2):
        raise ValueError("orders must be 1 or 2")
    real = len(pairs)
    pairs = [*pairs, *(c.pair for c in controls)]
    views: list[list[_View]] = []
    for index, pair in enumerate(pairs):
        if pair.output_a.strip() == pair.output_b.strip():
            views.append([])
        elif orders == 2:
            views.append([_View(index, False), _View(index, True)])
        else:
            views.append([_View(index, seeded_swap(seed, pair.instruction))])
    pending = [v for pair_views in views for v in pair_views]
    done, planned = 0, len(pending)

    def answered() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, planned)

    if progress:
        progress(0, planned)
    _ask(model, pairs, pending, False, max_tokens, answered)
    # a probability without a verdict is retried too: its first token was no label ("The"), so the little mass
    # left on A and B measures little; the strict prompt asks for the label itself
    retry = [v for v in pending if v.verdict is None]
    if retry:
        planned += len(retry)
        _ask(model, pairs, retry, True, max_tokens, answered)
    annotator = annotator or model.spec
    annotations = [_annotation(pair, pair_views, annotator) for pair, pair_views in zip(pairs, views)]
    for annotation, control in zip(annotations[real:], controls, strict=True):
        annotation.update(control=control.kind, control_correct=1.0 if control.correct == "A" else 2.0)
    return annotations


def write_annotations(path: str | Path, annotations: list[dict]) -> None:
    """Write the annotations JSON atomically: a killed run leaves the old file or none, never half of one."""
    write_json_atomic(Path(path), annotations)


@dataclass
class JudgeConfig:
    """`apprentice judge`'s settings (its options); `run_judge` runs them."""

    a: Path = setting(help="Outputs of model A (AlpacaEval model_outputs.json); output_1 in the annotations.")
    b: Path = setting(help="Outputs of model B, same instructions; output_2 in the annotations, the model whose win "
                      "rate `tally` reports by default.")
    model: str = setting(help=f"The judge model ({SPEC_HELP}).", flag="--judge")
    out: Path | None = setting(None, "Where to write the annotations JSON (replaced atomically).", required=True,
                               output=False)
    orders: int = setting(2, "2: judge A-first and B-first, disagreement is a tie; 1: one seeded random order per "
                          "pair (half the calls, no position-bias check).", min=1, max=2)
    seed: int = setting(0, "Decides which output is shown first with --orders 1, and the controls.")
    controls: int = setting(0, "Control pairs to judge too (a real answer against another instruction's answer or "
                            "its own first sentence, sides balanced): the judge's accuracy on them is shown beside "
                            "its verdicts, never in the win rate.", min=0)
    cache: Path | None = setting(None, "SQLite record and cache of judge calls, so reruns and resumed runs cost "
                                 "nothing (default: OUT with the suffix .cache.sqlite).", output=False)
    limit: int | None = setting(None, "Judge only the first N instructions of A (a quick look).", min=1)
    max_tokens: int = setting(16, "Most tokens per judge reply; a verdict needs a few.", unit="tokens", min=1)
    concurrency: int = setting(8, "HTTP judges: requests in flight at once.", min=1, output=False)
    batch_size: int = setting(8, "Local judges: prompts generated together.", min=1, output=False)
    device: str | None = setting(None, "Local judges: torch device (default: cuda when available, else cpu).",
                                 output=False)
    timeout: float = setting(BackendOptions.timeout, "HTTP judges: seconds to wait for one answer before retrying.",
                             unit="seconds", output=False)
    max_retries: int = setting(BackendOptions.max_retries, "HTTP judges: retries after the first try on 429, 5xx, "
                               "timeouts and dropped connections.", min=0, output=False)
    batch: bool = setting(False, "openai: judges: ask each round of judge calls as one Batch API batch (OpenAI: "
                          "half price, answers within 24 hours), recorded in --cache; a rerun polls it instead of "
                          "paying again.", output=False)
    rpm: float | None = setting(None, "HTTP judges: requests per minute at most, spread evenly (the provider's "
                                "limit: no 429s).", output=False)
    tpm: float | None = setting(None, "HTTP judges: tokens per minute at most (each request's prompt tokens, "
                                "estimated, plus --max-tokens).", output=False)
    engine: str = setting("auto", ENGINE_HELP, output=False)


def run_judge(config: JudgeConfig, console: Console | None = None) -> list[dict]:
    """`judge_files` with a JudgeConfig's settings."""
    check_settings(config)
    check_limits(config.rpm, config.tpm)
    options = BackendOptions(concurrency=config.concurrency, batch_size=config.batch_size, device=config.device,
                             timeout=config.timeout, max_retries=config.max_retries, batch=config.batch,
                             rpm=config.rpm, tpm=config.tpm, engine=check_engine(config.engine))
    return judge_files(config.a, config.b, config.model, config.out, orders=config.orders, seed=config.seed,
                       max_tokens=config.max_tokens, cache=config.cache, limit=config.limit, options=options,
                       console=console, controls=config.controls)


def judge_files(a: Path, b: Path, judge: str, out: Path, *, orders: int = 2, seed: int = 0, max_tokens: int = 16,
                cache: Path | None = None, limit: int | None = None, options: BackendOptions | None = None,
                console: Console | None = None, controls: int = 0) -> list[dict]:
    """Judge two AlpacaEval output files with the judge model `judge` (a spec) and write the annotations to `out`;
    `controls` control pairs made from them (drawn with `seed`) are judged too.

    Every judge call goes through a SQLite record (`cache`, default OUT.cache.sqlite), so a rerun or a resumed run
    pays only for the calls not made yet. Shows a progress bar and a one-line summary on `console`."""
    from apprentice.evaluate.outputs import join_outputs, load_outputs
    from apprentice.models import parse_spec

    console = console or Console(stderr=True)
    spec = parse_spec(judge)
    pairs = join_outputs(load_outputs(a), load_outputs(b), str(a), str(b))[:limit]
    made = make_controls(pairs, controls, random.Random(seed))
    with hold(Path(out).parent, "apprentice judge", output=Path(out)):
        return _judge_locked(pairs, spec, out, orders, seed, max_tokens, cache, options, console, made)


def _judge_locked(pairs, spec, out: Path, orders: int, seed: int, max_tokens: int, cache: Path | None,
                  options: BackendOptions | None, console: Console, controls: Sequence[Control]) -> list[dict]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from apprentice.models import load_model
    from apprentice.progress import ModelStatus
    from apprentice.models.record import RecordedModel
    from apprentice.models.spec import model_identity

    cache = cache or out.with_suffix(".cache.sqlite")
    model = RecordedModel(load_model(spec, options, record=cache), cache, model_identity(spec))
    columns = (TextColumn("judging"), BarColumn(), MofNCompleteColumn(), TextColumn("calls"), TimeElapsedColumn(),
               TimeRemainingColumn(), ModelStatus(model))
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("judging", total=None)
            annotations = judge_pairs(pairs, model, orders=orders, seed=seed, max_tokens=max_tokens,
                                      annotator=str(spec), controls=controls,
                                      progress=lambda done, planned: progress.update(task, completed=done,
                                                                                     total=planned))
    finally:
        model.close()
    write_annotations(out, annotations)
    failed = sum(item["preference"] is None for item in annotations)
    stats = model.stats
    console.print(f"wrote {len(annotations)} judgments to {out} ({stats['paid_calls']} judge calls, "
                  f"{stats['cache_hits']} from the cache {cache}); see them with: apprentice tally {out}",
                  highlight=False)
    summary = control_summary(annotations)
    if summary and summary["n"]:
        console.print(f"on {summary['n']} control pairs the judge picked the real answer "
                      f"{100 * summary['accuracy']:.1f}% of the time (ties half; 50% is chance)",
                      highlight=False)
    if failed:
        console.print(f"[yellow]{failed} judgments failed[/]: no verdict even after a strict retry; they have "
                      f"preference null and tally leaves them out (see 'failure' and 'orders' in {out})")
    return annotations

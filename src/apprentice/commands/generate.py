"""`apprentice generate`: instruction data from a teacher model (self-instruct or Alpaca), filtered, deduplicated,
resumable. The work is done by `apprentice.generate.run.generate`; this module only maps options to its config.

    apprentice generate --teacher bundled:smollm2-135m-instruct --num 20 --out runs/x
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from apprentice.models.base import BackendOptions

from apprentice.models.spec import SPEC_HELP

console = Console()


def generate(
    teacher: str = typer.Option(..., "--teacher", "-t", help=f"The teacher model ({SPEC_HELP})."),
    num: int = typer.Option(..., "--num", "-n", help="Records to keep; a rerun with a larger number goes on."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory; rerunning the same command resumes it."),
    seeds: Path = typer.Option(None, "--seeds", help="Seed tasks, Self-Instruct JSONL (default: the shipped ones)."),
    strategy: str = typer.Option(
        None, "--strategy",
        help="self-instruct (new instructions, then one request per example; works with small teachers) or alpaca "
             "(one prompt lists 3 seed tasks, the teacher writes up to 16 more). Default: self-instruct for chat "
             "models (chat API, or a local model with a chat template), else alpaca."),
    api: str = typer.Option(
        None, "--api",
        help="Talk to the teacher through chat messages or plain prompts to continue (completion). Default: chat "
             "for openai: teachers, completion for local models (small chat models follow it better)."),
    outputs: str = typer.Option(
        None, "--outputs",
        help="teacher: each record's output is the teacher's answer to its instruction and input, asked as a user "
             "would (the way `apprentice answer` asks: a chat turn, or the Alpaca template for a model without a "
             "chat template), one request per record; what a clone must learn. inline: the output the generating "
             "prompt wrote (reproduces Alpaca). Default: teacher for chat teachers, else inline."),
    answer_max_tokens: int = typer.Option(
        512, "--answer-max-tokens", help="With --outputs teacher: most tokens per answer; a cut answer is rejected."),
    answer_temperature: float = typer.Option(
        0.0, "--answer-temperature", help="With --outputs teacher: sampling temperature of the answers (0 = greedy)."),
    concurrency: int = typer.Option(8, "--concurrency", "-c", help="Requests in flight (local teachers: batch size)."),
    prompts_per_request: int = typer.Option(
        1, "--prompts-per-request",
        help="With --api completion, send up to this many prompts in one request, as Alpaca did (5): fewer "
             "requests against a rate limit. Needs a server that takes a list of prompts (OpenAI, vLLM, apprentice "
             "serve)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the request plan; the same seed and answers give the same data."),
    max_requests: int = typer.Option(
        None, "--max-requests",
        help="Stop after this many requests even short of --num (default: max(50, 10 x num)); a teacher whose "
             "answers are all rejected cannot loop forever."),
    timeout: float = typer.Option(
        BackendOptions.timeout, "--timeout", help="HTTP teachers: seconds to wait for one answer before retrying."),
    max_retries: int = typer.Option(
        BackendOptions.max_retries, "--max-retries",
        help="HTTP teachers: retries after the first try on 429, 5xx, timeouts and dropped connections."),
    rpm: float = typer.Option(
        None, "--rpm",
        help="HTTP teachers: requests per minute at most, spread evenly (the provider's limit: no 429s). The "
             "server's x-ratelimit-* headers are followed with or without it."),
    tpm: float = typer.Option(
        None, "--tpm",
        help="HTTP teachers: tokens per minute at most, counting each request's prompt tokens (estimated) plus its "
             "max tokens, as OpenAI counts them."),
    price_in: float = typer.Option(0.0, "--price-in", help="USD per million prompt tokens, for the cost estimate."),
    price_out: float = typer.Option(0.0, "--price-out", help="USD per million completion tokens."),
    max_cost: float = typer.Option(
        None, "--max-cost",
        help="USD: never pay the teacher more than this in all (with --price-in/--price-out). A request is sent only "
             "if what was paid plus the worst case of every request in flight stays within it; when it binds, the "
             "run stops with what it kept, and a rerun with a higher cap goes on."),
    cache: Path = typer.Option(
        None, "--cache", help="Response cache, SQLite (default: OUT/requests.sqlite); answered requests are free."),
    threshold: float = typer.Option(
        0.7, "--threshold", help="Drop an instruction whose ROUGE-L F against a seed or kept one is above this."),
    min_words: int = typer.Option(4, "--min-words", help="Drop instructions with fewer words (Alpaca: 4)."),
    max_words: int = typer.Option(150, "--max-words", help="Drop instructions with more words (Alpaca: 150)."),
    loop_compression: float = typer.Option(
        0.15, "--loop-compression",
        help="Drop outputs (of 256+ characters) that zlib compresses below this ratio: repetition loops."),
    estimate: bool = typer.Option(
        False, "--estimate",
        help="Send nothing: print the requests, tokens and cost to expect for the records still missing (measured "
             "from OUT when it has records, else from the plan and stated assumptions), with a range."),
    echo_rouge: float = typer.Option(
        None, "--echo-rouge",
        help="Drop outputs whose ROUGE-L F with the input is above this (default off: editing tasks echo legitimately;"
             " an output equal to its input is always dropped)."),
    batch: bool = typer.Option(
        False, "--batch",
        help="openai: teachers: send each wave of planned requests as one Batch API batch (OpenAI: half price, "
             "answers within 24 hours) and plan the next wave from what it kept (a wave is all that the answers so "
             "far let the plan ask, up to 50,000 requests ahead). A killed run resumes by polling its batches, "
             "never submitting them twice. Choose it when a run starts: the lookahead stays."),
    batch_discount: float = typer.Option(
        0.5, "--batch-discount", help="With --batch: share of --price-in/--price-out a batch request costs."),
    cancel_batches: Path = typer.Option(
        None, "--cancel-batches", metavar="OUT", is_eager=True, callback=lambda value: _cancel_batches(value),
        help="Cancel the batches the run in OUT has in flight, and do nothing else; a rerun of the run records "
             "what they answered and submits the rest."),
) -> None:
    """Generate instruction data (instruction, input, output) from a teacher, with filters and near-duplicate
    removal, into OUT/data.jsonl (with metadata), OUT/alpaca_data.json, OUT/rejected.jsonl and OUT/stats.json."""
    from apprentice.generate.config import GenerateConfig
    from apprentice.generate.filters import FilterConfig
    from apprentice.generate.run import generate as run_generate
    from apprentice.generate.stats import summary_table

    config = GenerateConfig(
        teacher=teacher, out=out, num=num, seeds=seeds, strategy=strategy, api=api, seed=seed,
        concurrency=concurrency, prompts_per_request=prompts_per_request, max_requests=max_requests,
        timeout=timeout, max_retries=max_retries, rpm=rpm, tpm=tpm,
        price_in=price_in, price_out=price_out, max_cost=max_cost, cache=cache, outputs=outputs, answer_max_tokens=answer_max_tokens,
        answer_temperature=answer_temperature,
        threshold=threshold,
        filters=FilterConfig(min_words=min_words, max_words=max_words, loop_max_compression=loop_compression,
                             echo_rouge=echo_rouge),
        batch=batch, batch_discount=batch_discount,
    )
    if estimate:
        from apprentice.generate.config import resolve
        from apprentice.generate.estimate import estimate_run, estimate_table, measured_basis
        from apprentice.generate.seeds import load_seed_tasks
        from apprentice.models.spec import model_identity, parse_spec

        seeds_loaded = load_seed_tasks(seeds)
        resolved = resolve(config)
        console.print(estimate_table(estimate_run(resolved, seeds_loaded, measured_basis(
            resolved, model_identity(parse_spec(teacher))))))
        return
    result = run_generate(config, Console(stderr=True))
    console.print(summary_table(result.stats))
    if result.resumed_from:
        how = "replayed from the response cache" if result.replayed else "continued with a fresh plan"
        console.print(f"resumed: {result.resumed_from} records were already in {out / 'data.jsonl'} ({how})")
    if result.status == "cost_capped":
        console.print(
            f"[bold red]stopped:[/] the next request could pass --max-cost ${max_cost:g} (paid so far "
            f"${result.paid_usd:.4f}); kept {result.stats.kept} of {num} records. Rerun with a higher --max-cost to "
            "go on.")
        raise typer.Exit(1)
    if result.status == "capped":
        reasons = ", ".join(f"{reason} {count}" for reason, count in result.stats.rejected.most_common(3))
        console.print(
            f"[bold red]stopped:[/] {result.config.max_requests} requests (--max-requests) kept only "
            f"{result.stats.kept} of {num} records; most rejections: {reasons or 'none'}. See "
            f"{out / 'rejected.jsonl'}; raise --max-requests or try another teacher or strategy."
        )
        raise typer.Exit(1)
    console.print(f"wrote {out / 'alpaca_data.json'} ({result.stats.kept} records)")


def _cancel_batches(out: Path | None) -> None:
    """`--cancel-batches OUT`, an action of its own: it runs before the other options are checked."""
    if out is None:
        return
    from apprentice.generate.run import cancel_batches

    batches, requests = cancel_batches(out)
    console.print(f"cancelled {batches} {'batch' if batches == 1 else 'batches'} ({requests} requests) of {out}"
                  if batches else f"{out} has no batches in flight", soft_wrap=True, highlight=False)
    raise typer.Exit()


def register(app: typer.Typer) -> None:
    app.command("generate", no_args_is_help=True)(generate)

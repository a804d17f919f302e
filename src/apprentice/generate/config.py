"""The settings of `apprentice generate`, one field per command-line option, and how they are resolved and saved.

`resolve` fills the defaults that depend on the teacher (chat or completion API, strategy) and on `num` (the request
cap). The resolved settings are saved as `OUT/generate_config.json`; a rerun into the same OUT must agree on the
settings that decide the requests (`PLAN_KEYS`), or it could not resume the same run. `num`, `concurrency`, prices,
the request cap and batch mode may change between invocations (batch mode sends the same requests).

    config = resolve(GenerateConfig(teacher="bundled:smollm2-135m-instruct", out=Path("runs/x"), num=20))
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from apprentice.data import SEED_TASKS, shipped
from apprentice.errors import UserError
from apprentice.generate.filters import FilterConfig
from apprentice.generate.loop import ALPACA, INLINE_OUTPUTS, OUTPUT_SOURCES, SELF_INSTRUCT, STRATEGIES, \
    TEACHER_OUTPUTS, Plan
from apprentice.models.base import BackendOptions
from apprentice.models.engine import ENGINE_HELP, check_engine
from apprentice.models.ratelimit import check_limits
from apprentice.models.spec import SPEC_HELP, ModelSpec, local_model_dir, model_identity, parse_spec
from apprentice.settings import check_settings, output_names, setting

CHAT, COMPLETION = "chat", "completion"
# What a run saved before a plan key existed meant: runs made before teacher outputs wrote inline outputs.
_EARLIER_PLAN = {"outputs": INLINE_OUTPUTS}
# The default lookahead of a batch run: each wave of planned requests goes as one batch, and waiting a day per wave
# wants few, large waves (the plan still asks no more than --num needs). OpenAI takes 50,000 requests per batch.
BATCH_WINDOW = 50_000


@dataclass
class GenerateConfig:
    """`apprentice generate`'s settings. `output=False` marks what may change between invocations of one run (the
    rest decides its requests: `PLAN_KEYS`); in a run config the teacher and how it is reached are [teacher]'s
    (`TEACHER_KEYS`), and the paths are the run directory's."""

    teacher: str = setting(help=f"The teacher model ({SPEC_HELP}).", short="-t", toml=False)
    out: Path | None = setting(None, "Run directory; rerunning the same command resumes it.", short="-o",
                               required=True, toml=False, output=False)
    num: int = setting(100, "Records to keep; a rerun with a larger number goes on.", short="-n", min=1, required=True,
                       output=False)
    seeds: Path | None = setting(None, "Seed tasks, Self-Instruct JSONL (default: the shipped ones).")
    strategy: str | None = setting(
        None, "self-instruct (new instructions, then one request per example; works with small teachers) or alpaca "
        "(one prompt lists 3 seed tasks, the teacher writes up to 16 more). Default: self-instruct for chat models "
        "(chat API, or a local model with a chat template), else alpaca.")
    # local models get plain prompts by default, chat models too: measured with SmolLM2-135M-Instruct, a chat message
    # listing tasks is answered by copying the list, while the same list to continue gets new tasks
    api: str | None = setting(
        None, "Talk to the teacher through chat messages or plain prompts to continue (completion). Default: chat "
        "for openai: teachers, completion for local models (small chat models follow it better).")
    seed: int = setting(0, "Seed of the request plan, sent with every request; the same seed and answers give the "
                        "same data.")
    concurrency: int = setting(8, "Requests in flight (local teachers: batch size).", short="-c", min=1,
                               output=False, toml=False)
    prompts_per_request: int = setting(
        1, "With --api completion, send up to this many prompts in one request, as Alpaca did (5): fewer requests "
        "against a rate limit. Needs a server that takes a list of prompts (OpenAI, vLLM, apprentice serve).", min=1,
        output=False, toml=False)
    max_requests: int | None = setting(
        None, "Stop after this many requests even short of --num (default: max(50, 10 x num)); a teacher whose "
        "answers are all rejected cannot loop forever.", min=1, output=False)
    timeout: float = setting(BackendOptions.timeout, "HTTP teachers: seconds to wait for one answer before "
                             "retrying.", unit="seconds", output=False, toml=False)
    max_retries: int = setting(
        BackendOptions.max_retries, "HTTP teachers: retries after the first try on 429, 5xx, timeouts and dropped "
        "connections.", min=0, output=False, toml=False)
    rpm: float | None = setting(
        None, "HTTP teachers: requests per minute at most, spread evenly (the provider's limit: no 429s). The "
        "server's x-ratelimit-* headers are followed with or without it.", output=False, toml=False)
    tpm: float | None = setting(
        None, "HTTP teachers: tokens per minute at most, counting each request's prompt tokens (estimated) plus its "
        "max tokens, as OpenAI counts them.", output=False, toml=False)
    engine: str = setting("auto", ENGINE_HELP, output=False, toml=False)
    price_in: float = setting(0.0, "Price of prompt tokens, for the cost shown and --max-cost.",
                              unit="USD per million tokens", min=0, output=False)
    price_out: float = setting(0.0, "Price of completion tokens.", unit="USD per million tokens", min=0,
                               output=False)
    max_cost: float | None = setting(
        None, "Never pay the teacher more than this in all (with --price-in/--price-out). A request is sent only if "
        "what was paid plus the worst case of every request in flight stays within it; when it binds, the run stops "
        "with what it kept, and a rerun with a higher cap goes on.", unit="USD", min=0, output=False)
    cache: Path | None = setting(
        None, "Response cache, SQLite (default: OUT/requests.sqlite); answered requests are free.", toml=False,
        output=False)
    threshold: float = setting(
        0.7, "Drop an instruction whose ROUGE-L F against a seed or kept one is above this.", min=0, max=1)
    filters: FilterConfig = field(default_factory=FilterConfig)  # [generate.filters] in a run config
    # the plan's lookahead, fixed when a run starts; a run config leaves it to the default
    window: int | None = setting(
        None, "Requests planned ahead of the oldest unanswered one (default: 8 x prompts in flight; 50,000 with "
        "--batch).", min=1, toml=False)
    outputs: str | None = setting(
        None, "teacher: each record's output is the teacher's answer to its instruction and input, asked as a user "
        "would (the way `apprentice answer` asks: a chat turn, or the Alpaca template for a model without a chat "
        "template), one request per record; what a clone must learn. inline: the output the generating prompt "
        "wrote (reproduces Alpaca). Default: teacher for chat teachers, else inline.")
    answer_max_tokens: int = setting(
        512, "With --outputs teacher: most tokens per answer; a cut answer is rejected.", unit="tokens", min=1)
    answer_temperature: float = setting(
        0.0, "With --outputs teacher: sampling temperature of the answers (0 = greedy).", min=0)
    batch: bool = setting(
        False, "openai: teachers: send each wave of planned requests as one Batch API batch (OpenAI: half price, "
        "answers within 24 hours) and plan the next wave from what it kept (a wave is all that the answers so far "
        "let the plan ask, up to 50,000 requests ahead). A killed run resumes by polling its batches, never "
        "submitting them twice. Choose it when a run starts: the lookahead stays.", output=False)
    batch_discount: float = setting(
        0.5, "With --batch: share of --price-in/--price-out a batch request costs.", min=0, max=1, output=False)


# what a run config sets in [teacher] (the teacher's spec is its `model`) for generate, the teacher's evaluation
# answers and, by default, the judge
TEACHER_KEYS = ("concurrency", "prompts_per_request", "timeout", "max_retries", "rpm", "tpm", "engine")


def resolve(config: GenerateConfig) -> GenerateConfig:
    """Check the values and fill the automatic defaults (loads nothing but the teacher's tokenizer files)."""
    check_settings(config)
    if config.max_cost is not None and not (config.price_in or config.price_out):
        raise UserError("--max-cost needs the teacher's prices (--price-in, --price-out, USD per million tokens)")
    if config.strategy is not None and config.strategy not in STRATEGIES:
        raise UserError(f"unknown --strategy {config.strategy!r}: choose {' or '.join(STRATEGIES)}")
    if config.api is not None and config.api not in (CHAT, COMPLETION):
        raise UserError(f"unknown --api {config.api!r}: choose chat or completion")
    if config.outputs is not None and config.outputs not in OUTPUT_SOURCES:
        raise UserError(f"unknown --outputs {config.outputs!r}: choose {' or '.join(OUTPUT_SOURCES)}")
    if config.timeout <= 0:
        raise UserError(f"--timeout must be more than 0 seconds, got {config.timeout}")
    check_engine(config.engine)
    check_limits(config.rpm, config.tpm)
    spec = parse_spec(config.teacher)
    if config.batch and spec.kind != "openai":
        raise UserError(f"--batch needs an openai: teacher (the Batch API); {spec} is a local model, which batches "
                        "by --concurrency already")
    if config.batch and config.prompts_per_request > 1:
        raise UserError("--prompts-per-request has no use with --batch: each request is a line of the batch")
    # Local models get plain prompts to continue, chat models too: measured with SmolLM2-135M-Instruct, a chat
    # message listing tasks is answered by copying the list, while the same list to continue gets new tasks.
    api = config.api or (CHAT if spec.kind == "openai" else COMPLETION)
    if config.prompts_per_request > 1 and (spec.kind != "openai" or api != COMPLETION):
        raise UserError("several prompts per request (--prompts-per-request, [teacher] prompts_per_request) need an "
                        "openai: teacher and the completion API (--api completion); local teachers batch by "
                        "--concurrency already")
    chat_teacher = is_chat_model(spec, api)
    return replace(
        config,
        api=api,
        strategy=config.strategy or (SELF_INSTRUCT if chat_teacher else ALPACA),
        outputs=config.outputs or (TEACHER_OUTPUTS if chat_teacher else INLINE_OUTPUTS),
        max_requests=config.max_requests or max(50, 10 * config.num),
        cache=config.cache or config.out / "requests.sqlite",
        window=config.window or (BATCH_WINDOW if config.batch else
                                 max(16, 8 * config.concurrency * config.prompts_per_request)),
    )


def is_chat_model(spec: ModelSpec, api: str) -> bool:
    """Whether the teacher is a chat model: a server is when it is talked to through chat; a local model when its
    tokenizer has a chat template (a hub id not downloaded yet is assumed to have one)."""
    if spec.kind == "openai":
        return api == CHAT
    path = Path(local_model_dir(spec))
    if not path.is_dir():
        return True
    if (path / "chat_template.jinja").exists() or (path / "chat_template.json").exists():
        return True
    tokenizer_config = path / "tokenizer_config.json"
    if tokenizer_config.exists():
        return bool(json.loads(tokenizer_config.read_text(encoding="utf-8")).get("chat_template"))
    return False


def seeds_sha256(path: Path | None) -> str:
    return hashlib.sha256((shipped(SEED_TASKS) if path is None else path).read_bytes()).hexdigest()


def answers_in_chat(spec: ModelSpec) -> bool:
    """Whether the teacher's answers are asked as a chat turn, as `apprentice answer` asks them: always for served
    models, for local ones when their tokenizer has a chat template (else the Alpaca template)."""
    return spec.kind == "openai" or is_chat_model(spec, CHAT)


def plan_of(config: GenerateConfig) -> Plan:
    return Plan(strategy=config.strategy, chat=config.api == CHAT, seed=config.seed, num=config.num,
                max_requests=config.max_requests, window=config.window, threshold=config.threshold,
                outputs=config.outputs, answer_chat=answers_in_chat(parse_spec(config.teacher)),
                answer_max_tokens=config.answer_max_tokens, answer_temperature=config.answer_temperature)


def to_json(config: GenerateConfig) -> dict[str, Any]:
    """The resolved settings as saved in generate_config.json (with the teacher's identity and the seeds' hash)."""
    data = asdict(config)
    for key in ("out", "seeds", "cache"):
        data[key] = str(data[key]) if data[key] is not None else None
    data["teacher_model"] = model_identity(parse_spec(config.teacher))
    data["seeds_sha256"] = seeds_sha256(config.seeds)
    return data


# Settings that decide which requests a run sends (a resumed run must keep them): the settings that change the
# output, the teacher by its identity and the seed tasks by their content.
PLAN_KEYS = tuple({"teacher": "teacher_model", "seeds": "seeds_sha256"}.get(name, name)
                  for name in output_names(GenerateConfig))


def plan_identity(settings: dict[str, Any]) -> dict[str, Any]:
    """The request-deciding settings (`PLAN_KEYS`) of saved or current settings (`to_json`), as a resumed run must
    keep them."""
    plan = {key: settings.get(key, _EARLIER_PLAN.get(key)) for key in PLAN_KEYS}
    if plan["outputs"] == INLINE_OUTPUTS:  # inline runs ask for no answers: those settings change nothing
        plan["answer_max_tokens"] = plan["answer_temperature"] = None
    return plan


def check_resumable(saved: dict[str, Any], current: dict[str, Any], out: Path) -> None:
    """Refuse to continue a run whose request-deciding settings differ from this invocation's."""
    saved_plan, current_plan = plan_identity(saved), plan_identity(current)
    for key in PLAN_KEYS:
        if saved_plan[key] != current_plan[key]:
            option = {"teacher_model": "teacher", "seeds_sha256": "seeds file content"}.get(key, key)
            raise UserError(
                f"{out} holds a run made with a different {option} ({saved_plan[key]!r}, now {current_plan[key]!r}): "
                "rerun with the same settings to resume it, or choose another --out"
            )

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
from apprentice.models.ratelimit import check_limits
from apprentice.models.spec import ModelSpec, local_model_dir, model_identity, parse_spec

CHAT, COMPLETION = "chat", "completion"
# Settings that decide which requests a run sends: a resumed run must keep them.
PLAN_KEYS = ("teacher_model", "seeds_sha256", "strategy", "api", "seed", "window", "threshold", "filters", "outputs",
             "answer_max_tokens", "answer_temperature")
# What a run saved before a plan key existed meant: runs made before teacher outputs wrote inline outputs.
_EARLIER_PLAN = {"outputs": INLINE_OUTPUTS}
# The default lookahead of a batch run: each wave of planned requests goes as one batch, and waiting a day per wave
# wants few, large waves (the plan still asks no more than --num needs). OpenAI takes 50,000 requests per batch.
BATCH_WINDOW = 50_000


@dataclass
class GenerateConfig:
    teacher: str  # model spec of the teacher
    out: Path  # run directory
    num: int = 100  # records to keep
    seeds: Path | None = None  # seed tasks (Self-Instruct JSONL); None: the seed tasks shipped with apprentice
    strategy: str | None = None  # alpaca | self-instruct; None: self-instruct for chat models, else alpaca
    api: str | None = None  # chat | completion; None: chat for openai: specs, completion (plain prompts) for local ones
    seed: int = 0  # seeds every choice of the request plan, and is sent with every request
    concurrency: int = 8  # requests in flight (HTTP) or generated together (local)
    prompts_per_request: int = 1  # HTTP completion API: prompts sent together in one request (Alpaca sent 5)
    max_requests: int | None = None  # stop after this many requests; None: max(50, 10 * num)
    timeout: float = BackendOptions.timeout  # HTTP teachers: seconds per request before it is retried
    max_retries: int = BackendOptions.max_retries  # HTTP teachers: tries after the first on 429/5xx/timeouts
    price_in: float = 0.0  # USD per million prompt tokens, for the cost estimate
    price_out: float = 0.0  # USD per million completion tokens
    max_cost: float | None = None  # USD: never pay the teacher more than this in all (worst case counted; needs prices)
    cache: Path | None = None  # response cache (SQLite); None: OUT/requests.sqlite
    threshold: float = 0.7  # ROUGE-L F above this against a seed or kept instruction: near duplicate
    filters: FilterConfig = field(default_factory=FilterConfig)
    window: int | None = None  # requests planned ahead of the oldest unanswered one; None: 8 x prompts in flight
    # teacher: each record's output is the teacher's answer to its instruction, asked as `apprentice answer` asks;
    # inline: the output the generating prompt wrote (Alpaca's way). None: teacher for chat teachers, else inline
    outputs: str | None = None
    answer_max_tokens: int = 512  # most tokens of a teacher answer; an answer cut there is rejected (truncated)
    answer_temperature: float = 0.0  # 0 = greedy, as the evaluation prompts are answered
    # openai: teachers: send each wave of planned requests as one Batch API batch (half price, within 24 hours)
    batch: bool = False
    batch_discount: float = 0.5  # batch requests cost this share of --price-in/--price-out (OpenAI: half)
    # HTTP teachers: requests and tokens (prompt plus max_tokens) per minute, so a provider's limit is met without
    # 429s; None: no limit of our own (the server's x-ratelimit-* headers are followed all the same)
    rpm: float | None = None
    tpm: float | None = None


def resolve(config: GenerateConfig) -> GenerateConfig:
    """Check the values and fill the automatic defaults (loads nothing but the teacher's tokenizer files)."""
    if config.num < 1:
        raise UserError(f"--num must be at least 1, got {config.num}")
    if config.concurrency < 1:
        raise UserError(f"--concurrency must be at least 1, got {config.concurrency}")
    if not 0.0 <= config.threshold <= 1.0:
        raise UserError(f"--threshold must be between 0 and 1, got {config.threshold}")
    if config.price_in < 0 or config.price_out < 0:
        raise UserError("--price-in and --price-out must not be negative")
    if config.max_cost is not None and (config.max_cost < 0 or not (config.price_in or config.price_out)):
        raise UserError("--max-cost needs the teacher's prices (--price-in, --price-out, USD per million tokens) and "
                        "must not be negative")
    if config.strategy is not None and config.strategy not in STRATEGIES:
        raise UserError(f"unknown --strategy {config.strategy!r}: choose {' or '.join(STRATEGIES)}")
    if config.api is not None and config.api not in (CHAT, COMPLETION):
        raise UserError(f"unknown --api {config.api!r}: choose chat or completion")
    if config.prompts_per_request < 1:
        raise UserError(f"--prompts-per-request must be at least 1, got {config.prompts_per_request}")
    if config.outputs is not None and config.outputs not in OUTPUT_SOURCES:
        raise UserError(f"unknown --outputs {config.outputs!r}: choose {' or '.join(OUTPUT_SOURCES)}")
    if config.answer_max_tokens < 1:
        raise UserError(f"--answer-max-tokens must be at least 1, got {config.answer_max_tokens}")
    if config.answer_temperature < 0:
        raise UserError(f"--answer-temperature must not be negative, got {config.answer_temperature}")
    if config.timeout <= 0:
        raise UserError(f"--timeout must be more than 0 seconds, got {config.timeout}")
    if config.max_retries < 0:
        raise UserError(f"--max-retries must be 0 or more, got {config.max_retries}")
    if config.max_requests is not None and config.max_requests < 1:
        raise UserError(f"--max-requests must be at least 1, got {config.max_requests}")
    check_limits(config.rpm, config.tpm)
    if not 0.0 <= config.batch_discount <= 1.0:
        raise UserError(f"--batch-discount must be between 0 and 1, got {config.batch_discount}")
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

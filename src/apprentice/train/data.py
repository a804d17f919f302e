"""Training data: load Alpaca JSON/JSONL strictly, then render each example into token ids with the prompt masked.

    examples = load_examples("runs/x/alpaca_data.json")            # UserError naming file and example on bad input
    ids, labels = render(examples[0], ALPACA_TEMPLATE, tokenizer, max_len=512)  # labels are -100 on the prompt
    data = tokenize(examples, ALPACA_TEMPLATE, tokenizer, max_len=512)      # drops examples whose response is cut away

The target is output + EOS. An example whose prompt fills `max_len` has no response token left to learn from: it is
dropped and counted, never trained on silently (Stanford's script kept such examples with every label masked).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apprentice.errors import UserError
from apprentice.jsonfile import Where, get_str, read_records, require_object
from apprentice.train.templates import Template

IGNORE = -100  # the label PyTorch's cross-entropy skips
# Metadata written next to the Alpaca fields by `apprentice generate` (data.jsonl: teacher, strategy, seed_ids,
# example_ids, job, parent_job, request_id, most_similar, most_similar_score) and by Stanford's generator
# (most_similar_instructions, avg_similarity_score). A field is accepted when its name starts with one of these stems;
# any other field is taken for a typo or another format and rejected, so a misspelt "ouput" never trains on nothing.
METADATA_STEMS = (
    "id", "teacher", "strategy", "seed", "example_id", "job", "parent_job", "request", "most_similar",
    "similarity", "avg_similarity", "is_classification", "source", "meta",
)


@dataclass(frozen=True)
class Example:
    instruction: str
    input: str
    output: str


def is_known_field(name: str) -> bool:
    return name in ("instruction", "input", "output") or name.startswith(METADATA_STEMS)


def parse_example(value: object, where: Where) -> Example:
    """Check one record: the Alpaca fields as strings, a non-empty instruction, no unknown fields."""
    record = require_object(value, where)
    for name in record:
        if not is_known_field(name):
            raise where.error(f"unknown field {name!r} (expected instruction, input, output)")
    return Example(
        instruction=get_str(record, "instruction", where, non_empty=True),
        input=get_str(record, "input", where, ""),
        output=get_str(record, "output", where),
    )


def load_examples(path: str | Path) -> list[Example]:
    """Every example of an Alpaca JSON list or JSONL file, in file order; the first problem is a UserError."""
    examples = [parse_example(value, where) for where, value in read_records(Path(path))]
    if not examples:
        raise UserError(f"{path}: no examples (expected Alpaca JSON or JSONL with instruction, input, output)")
    return examples


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble(prompt_ids: Sequence[int], response_ids: Sequence[int], max_len: int) -> tuple[list[int], list[int]]:
    """Join prompt and response (already ending in EOS), cut to `max_len`, and mask the prompt in the labels."""
    ids = [*prompt_ids, *response_ids][:max_len]
    labels = ([IGNORE] * len(prompt_ids) + list(response_ids))[:max_len]
    return ids, labels


@dataclass(frozen=True)
class TokenCounts:
    examples: int  # read from the file
    kept: int  # trained on
    dropped: int  # prompt alone filled max_len: no response token left
    truncated: int  # kept, but the response (or its EOS) was cut at max_len
    prompt_tokens: int  # in kept examples
    response_tokens: int  # in kept examples, after truncation: what the loss is averaged over

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Tokenized:
    sequences: list[tuple[list[int], list[int]]]  # (input_ids, labels) of the kept examples
    counts: TokenCounts


def _eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token, so the model could never learn where an answer ends")
    return tokenizer.eos_token_id


def _encode(examples: Sequence[Example], template: Template, tokenizer: Any) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids + EOS) per example, tokenised in batches; prompt and response apart so the boundary
    is exact and the prompt's ids are the ones the model sees when it answers."""
    eos = _eos_id(tokenizer)
    prompts = [template.render_prompt(e.instruction, e.input) for e in examples]
    prompt_ids = tokenizer(prompts, add_special_tokens=template.adds_special_tokens).input_ids
    response_ids = tokenizer([e.output for e in examples], add_special_tokens=False).input_ids
    return [(list(p), [*r, eos]) for p, r in zip(prompt_ids, response_ids)]


def render(example: Example, template: Template, tokenizer: Any, max_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one example; labels are all -100 when the prompt fills `max_len`."""
    [(prompt, response)] = _encode([example], template, tokenizer)
    return assemble(prompt, response, max_len)


def tokenize(examples: Sequence[Example], template: Template, tokenizer: Any, max_len: int) -> Tokenized:
    sequences = []
    dropped = truncated = prompt_tokens = response_tokens = 0
    for prompt, response in _encode(examples, template, tokenizer):
        ids, labels = assemble(prompt, response, max_len)
        kept_response = len(ids) - len(prompt)
        if kept_response <= 0:
            dropped += 1
            continue
        truncated += kept_response < len(response)
        prompt_tokens += len(prompt)
        response_tokens += kept_response
        sequences.append((ids, labels))
    counts = TokenCounts(len(examples), len(sequences), dropped, truncated, prompt_tokens, response_tokens)
    return Tokenized(sequences, counts)

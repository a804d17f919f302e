"""Prompt templates for training and answering: the Alpaca templates (default), the tokenizer's chat template, or a
custom template from a TOML/JSON file. The template a model was trained with is saved in its `apprentice.json` and
used again by `apprentice answer`, so a student is always asked questions the way it was taught.

    template = resolve_template("alpaca", tokenizer)       # or "chat", or "path/to/template.toml"
    prompt = template.render_prompt("Name a colour.", "")   # the text the model continues
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from apprentice.errors import UserError

ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
TEMPLATE_HELP = "'alpaca' (default), 'chat' (the tokenizer's chat template) or a TOML/JSON file"
# alpaca-lora's template files carry these two as well; accepting them lets those files load unchanged
_IGNORED_FILE_FIELDS = ("description", "response_split")
_FIELD = re.compile(r"\{(instruction|input)\}")


def user_message(instruction: str, input: str) -> str:
    """Instruction and input as one message, joined by a blank line (AlpacaEval's convention)."""
    return f"{instruction}\n\n{input}" if input else instruction


class Template(Protocol):
    kind: str

    def render_prompt(self, instruction: str, input: str) -> str:
        """The exact text the model continues with its answer."""

    @property
    def adds_special_tokens(self) -> bool:
        """Whether the tokenizer should add its own special tokens (BOS) when encoding the rendered prompt.

        Chat templates write BOS themselves; plain text prompts rely on the tokenizer. The local backend encodes
        completion and chat prompts the same way, so training and answering see identical token ids."""

    def to_json(self) -> dict[str, Any]:
        """What `apprentice.json` stores to rebuild this template."""


@dataclass(frozen=True)
class TextTemplate:
    """A pair of format strings, chosen by whether the example has an input."""

    prompt_input: str
    prompt_no_input: str
    kind: str = "alpaca"  # "alpaca" or "custom"

    def render_prompt(self, instruction: str, input: str) -> str:
        values = {"instruction": instruction, "input": input}
        text = self.prompt_input if input else self.prompt_no_input
        # one pass, so braces inside the user's text are never substituted again
        return _FIELD.sub(lambda m: values[m.group(1)], text)

    @property
    def adds_special_tokens(self) -> bool:
        return True

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "prompt_input": self.prompt_input, "prompt_no_input": self.prompt_no_input}


@dataclass(frozen=True)
class ChatTemplate:
    """The tokenizer's own chat template with one user turn (instruction + blank line + input)."""

    tokenizer: Any
    kind: str = "chat"

    def render_prompt(self, instruction: str, input: str) -> str:
        messages = [{"role": "user", "content": user_message(instruction, input)}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @property
    def adds_special_tokens(self) -> bool:
        return False

    def to_json(self) -> dict[str, Any]:
        return {"kind": "chat"}  # the template text itself is saved with the tokenizer


ALPACA_TEMPLATE = TextTemplate(ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT)


def check_text_template(prompt_input: object, prompt_no_input: object, source: str) -> TextTemplate:
    for name, text in (("prompt_input", prompt_input), ("prompt_no_input", prompt_no_input)):
        if not isinstance(text, str):
            raise UserError(f"{source}: {name!r} must be a string, found {type(text).__name__}")
        if "{instruction}" not in text:
            raise UserError(f"{source}: {name!r} has no {{instruction}} placeholder")
    if "{input}" not in prompt_input:  # type: ignore[operator]
        raise UserError(f"{source}: 'prompt_input' has no {{input}} placeholder")
    return TextTemplate(prompt_input, prompt_no_input, kind="custom")  # type: ignore[arg-type]


def load_template_file(path: str | Path) -> TextTemplate:
    """Read a custom template: TOML or JSON with `prompt_input` and `prompt_no_input`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"template {path}: no such file ({TEMPLATE_HELP})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"template {path}: cannot parse ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"template {path}: expected a table with prompt_input and prompt_no_input")
    unknown = sorted(set(data) - {"prompt_input", "prompt_no_input", *_IGNORED_FILE_FIELDS})
    if unknown:
        raise UserError(f"template {path}: unknown field {unknown[0]!r} (expected prompt_input, prompt_no_input)")
    for name in ("prompt_input", "prompt_no_input"):
        if name not in data:
            raise UserError(f"template {path}: missing {name!r}")
    return check_text_template(data["prompt_input"], data["prompt_no_input"], f"template {path}")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_template(choice: str, tokenizer: Any) -> Template:
    """Turn the `--template` option into a template; the tokenizer serves the chat mode."""
    if choice == "alpaca":
        return ALPACA_TEMPLATE
    if choice == "chat":
        if not has_chat_template(tokenizer):
            raise UserError("--template chat: this tokenizer has no chat template; use 'alpaca' or a template file")
        return ChatTemplate(tokenizer)
    return load_template_file(choice)


def template_from_json(data: dict[str, Any], tokenizer: Any, source: str) -> Template:
    """Rebuild the template stored in a model's `apprentice.json`."""
    kind = data.get("kind")
    if kind == "chat":
        if not has_chat_template(tokenizer):
            raise UserError(f"{source}: the model was trained with a chat template but its tokenizer has none")
        return ChatTemplate(tokenizer)
    if kind == "alpaca":
        return ALPACA_TEMPLATE
    if kind == "custom":
        return check_text_template(data.get("prompt_input"), data.get("prompt_no_input"), source)
    raise UserError(f"{source}: unknown template kind {kind!r}")


MANIFEST = "apprentice.json"  # written next to every trained model: template, base model, data hash, settings


def saved_template(model_dir: str | Path, tokenizer: Any) -> Template | None:
    """The template a model directory was trained with, or None when it was not trained by apprentice."""
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not JSON ({exc.msg})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("template"), dict):
        raise UserError(f"{path}: no 'template' table")
    return template_from_json(manifest["template"], tokenizer, str(path))

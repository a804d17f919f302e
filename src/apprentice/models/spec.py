"""Model specs, parsed in one place: `openai:MODEL[@URL[,URL...]]`, `hf:PATH_OR_ID`, `gguf:FILE`, `bundled:NAME`.

`parse_spec` checks the syntax (and that local files exist) without loading anything, so a command can reject a bad
spec before it starts work. `apprentice.models.load_model` turns a spec into a ready `Model` (there, so that this
module, the backends and the loader import in one direction: loader -> backends -> specs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from apprentice.errors import UserError

SPEC_HELP = (
    "model specs: openai:MODEL[@BASE_URL[,BASE_URL...]], hf:PATH_OR_ID, gguf:FILE, "
    "bundled:smollm2-135m-instruct, bundled:gemma-3-270m"
)
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "openai" | "hf" | "gguf" | "bundled"
    target: str  # model name, path/hub id, file, or bundled name
    base_urls: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        if self.kind == "openai" and self.base_urls:
            return f"openai:{self.target}@{','.join(self.base_urls)}"
        return f"{self.kind}:{self.target}"

    @property
    def is_local(self) -> bool:
        return self.kind != "openai"


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or os.sep in text and text.count("/") != 1


def parse_spec(text: str) -> ModelSpec:
    """Parse and check a spec string; raises UserError naming what is wrong."""
    from apprentice.models.bundled import BUNDLED

    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise UserError(f"bad model spec {text!r}: expected KIND:VALUE ({SPEC_HELP})")
    if kind == "openai":
        name, _, urls = rest.partition("@")
        if not name:
            raise UserError(f"bad model spec {text!r}: the model name is missing before '@'")
        base_urls = tuple(u.strip().rstrip("/") for u in urls.split(",") if u.strip()) if urls else ()
        for url in base_urls:
            if not url.startswith(("http://", "https://")):
                raise UserError(f"bad model spec {text!r}: base URL {url!r} must start with http:// or https://")
        return ModelSpec("openai", name, base_urls)
    if kind == "hf":
        path = Path(rest).expanduser()
        if path.exists():
            if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
                raise UserError(f"bad model spec {text!r}: {path} has no config.json, so it is not a model directory")
            return ModelSpec("hf", str(path))
        if _looks_like_path(rest):
            raise UserError(f"bad model spec {text!r}: no such directory {path}")
        return ModelSpec("hf", rest)  # a hub id, fetched by transformers when used
    if kind == "gguf":
        path = Path(rest).expanduser()
        if not path.is_file():
            raise UserError(f"bad model spec {text!r}: no such file {path}")
        return ModelSpec("gguf", str(path))
    if kind == "bundled":
        if rest not in BUNDLED:
            raise UserError(f"unknown bundled model {rest!r}: choose one of {', '.join(sorted(BUNDLED))}")
        return ModelSpec("bundled", rest)
    raise UserError(f"bad model spec {text!r}: unknown kind {kind!r} ({SPEC_HELP})")


def model_identity(spec: ModelSpec) -> str:
    """The model behind a spec for call records and caches: an `openai:` model without the URL it is served at (a
    server restarted on another port, or another replica, answers as the same model), a local spec as written."""
    return f"openai:{spec.target}" if spec.kind == "openai" else str(spec)


def local_model_dir(spec: ModelSpec | str) -> str:
    """A directory or hub id that `from_pretrained` loads: GGUF and bundled models are converted once into the cache."""
    from apprentice.models.bundled import bundled_gguf_path
    from apprentice.models.convert import converted_dir

    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.kind == "hf":
        return spec.target
    if spec.kind == "gguf":
        return str(converted_dir(Path(spec.target)))
    if spec.kind == "bundled":
        return str(converted_dir(bundled_gguf_path(spec.target)))
    raise UserError(f"{spec} is served over HTTP, not a local model")

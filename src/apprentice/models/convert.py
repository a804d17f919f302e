"""Convert a GGUF file once into a safetensors model directory in the cache.

transformers dequantises GGUF on every load (20-60 s); the converted directory loads in seconds. The key is the
file's path, size and modification time, so replacing the file converts it again.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from apprentice.errors import UserError
from apprentice.models.cache_dir import cache_root


def conversion_target(gguf_file: Path) -> Path:
    stat = gguf_file.stat()
    key = hashlib.sha256(f"{gguf_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "converted" / f"{gguf_file.stem}-{key}"


def converted_dir(gguf_file: Path) -> Path:
    target = conversion_target(gguf_file)
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
        )
    except Exception as exc:  # transformers raises many types for unreadable or unsupported files
        raise UserError(f"cannot load GGUF file {gguf_file}: {exc}") from exc
    model.hf_quantizer = None  # save_pretrained refuses while the GGUF quantizer marker is set
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    staging.rename(target)
    return target

"""Convert a transformers model directory once into a CTranslate2 model in the cache, and check it computes the same.

    path = ct2_model_dir("/path/to/model", "hf:/path/to/model")   # converts on first use, then returns at once

The cache key is the directory's path and the size and modification time of its files (and those of a LoRA
adapter's base), plus the ctranslate2 version, so retraining a model in place or upgrading ctranslate2 converts again.
A LoRA adapter is merged before it is converted. The conversion is written to a temporary folder, checked, and
renamed into place with a marker file written last; a folder without a valid marker, or whose files do not have the
sizes the marker lists, is converted again.

ctranslate2's converter knows many architectures but not every setting of each (Gemma 3's `query_pre_attn_scalar`,
say, is taken to be the head size), so a conversion counts only if its float32 logits on a probe text match
transformers'. A model that fails is remembered as unsupported (with the reason) so the check is not repeated.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from apprentice.models.cache_dir import cache_root

MARKER = "apprentice-ct2.json"
FORMAT = 1  # bump when what a conversion writes changes
PROBE = ("Below is an instruction that describes a task. Write a response that appropriately completes the request. "
         "The quick brown fox jumps over the lazy dog; 0 1 2 3 4 5 6 7 8 9 10 11 12. ")
PROBE_TOKENS = 48  # a prompt past a tiny test model's sliding window, with positions enough for a wrong rotary base
PROBE_STEPS = 16  # greedy steps compared after it: the decoding loop and its cache are checked too


class Unsupported(Exception):
    """The model cannot run on ctranslate2 (the message says why): use transformers."""


def _fingerprint(directory: Path) -> list[tuple[str, int, int]]:
    return sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in directory.iterdir() if f.is_file())


def _base_dir(source: Path) -> Path | None:
    """A LoRA adapter's base model directory, when it is a local one (a hub id is keyed by its name alone)."""
    adapter = source / "adapter_config.json"
    if not adapter.exists():
        return None
    base = json.loads(adapter.read_text()).get("base_model_name_or_path") or ""
    return Path(base) if base and Path(base).is_dir() else None


def cache_target(source: Path) -> Path:
    import ctranslate2

    parts = [str(source.resolve()), ctranslate2.__version__, FORMAT, _fingerprint(source)]
    base = _base_dir(source)
    if base is not None:
        parts += [str(base.resolve()), _fingerprint(base)]
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
    return cache_root() / "ctranslate2" / f"{source.resolve().name}-{key}"


def read_marker(target: Path) -> dict | None:
    """The marker of a complete conversion (or of a model found unsupported); None when the folder is missing,
    half-written or damaged."""
    try:
        marker = json.loads((target / MARKER).read_text())
        files = marker["files"]
        if all((target / name).stat().st_size == size for name, size in files.items()):
            return marker
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def ct2_model_dir(source: str, spec: str) -> tuple[Path, dict]:
    """The converted model of a local model directory and its marker (eos_token_ids, prefill_limit); raises
    Unsupported when ctranslate2 cannot run it the way transformers does."""
    path = _local_dir(source)
    if path is None:
        raise Unsupported("it is not downloaded yet (it is converted for ctranslate2 on a later run)")
    target = cache_target(path)
    marker = read_marker(target)
    if marker is None:
        if target.exists():
            print(f"the ctranslate2 conversion of {spec} in {target} is incomplete or damaged: converting it again",
                  file=sys.stderr, flush=True)
        print(f"converting {spec} for ctranslate2 (once; cached in {target.parent}) ...", file=sys.stderr, flush=True)
        marker = _convert(path, spec, target)
    if "unsupported" in marker:
        raise Unsupported(marker["unsupported"])
    return target, marker


def _local_dir(source: str) -> Path | None:
    """The model's directory: `source` itself, or a hub id's snapshot in the local hub cache (None when the hub
    model is not downloaded yet)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except (OSError, ValueError):  # not in the cache, or not a hub id at all
        return None


def _prune_orphans(folder: Path) -> None:
    """Remove the conversions of models whose directory is gone (a deleted run's student, a test's tiny model),
    so the cache does not grow with every model ever converted."""
    for entry in folder.iterdir():
        marker = read_marker(entry) if entry.is_dir() else None
        if marker and marker.get("source") and not Path(marker["source"]).exists():
            shutil.rmtree(entry, ignore_errors=True)


def _convert(source: Path, spec: str, target: Path) -> dict:
    target.parent.mkdir(parents=True, exist_ok=True)
    _prune_orphans(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
    try:
        try:
            marker = _convert_into(source, spec, staging)
        except Unsupported as exc:
            for item in staging.iterdir():  # a failed conversion keeps only its verdict
                shutil.rmtree(item) if item.is_dir() else item.unlink()
            marker = {"source": str(source.resolve()), "unsupported": str(exc), "files": {}}
        (staging / MARKER).write_text(json.dumps(marker, indent=1))
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:  # another process finished the same conversion first: theirs is as good
            pass
        return read_marker(target) or marker
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _convert_into(source: Path, spec: str, out: Path) -> dict:
    """Convert `source` into the empty folder `out`, check it, and return its marker (Unsupported if it fails)."""
    import numpy as np

    from apprentice.models.base import BackendOptions
    from apprentice.models.local import LocalModel

    local = LocalModel.from_dir(str(source), spec, BackendOptions(device="cpu"))
    model, tokenizer, eos_ids = local.model, local.tokenizer, local.eos_ids
    model.config.__dict__.pop("quantization_config", None)
    window = _sliding_window(model.config)
    # ctranslate2 prefills a prompt longer than the sliding window (plus the token it starts decoding from)
    # differently from transformers, although it decodes past the window the same: such prompts go to transformers
    prefill_limit = window + 1 if window else None
    prompt = tokenizer(PROBE * 8, add_special_tokens=False).input_ids[: min(PROBE_TOKENS, prefill_limit or 1 << 30)]
    expected_tokens, expected = _reference_steps(model, prompt)
    with tempfile.TemporaryDirectory() as config_dir:
        model.config.save_pretrained(config_dir)  # the converter picks its loader from the config alone
        try:
            _loaded_converter(config_dir, model, tokenizer).convert(str(out), force=True)
        except Exception as exc:  # noqa: BLE001 - the converter raises many types for what it does not handle
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise Unsupported(f"ctranslate2 cannot convert it ({reason})") from exc
    del model, local
    _complete_config(out / "config.json", tokenizer)
    got_tokens, got = _ct2_steps(out, tokenizer.convert_ids_to_tokens(prompt))
    if got.shape[1:] != expected.shape[1:]:
        raise Unsupported(f"ctranslate2's conversion has {got.shape[1]} logits per step, not {expected.shape[1]}")
    # compared while both chose the same tokens (float32 near-ties may part them, and a real mismatch shows first)
    same = next((k for k, (a, b) in enumerate(zip(expected_tokens, got_tokens)) if a != b), len(expected_tokens))
    compared = min(same + 1, len(got))
    diff = float(np.abs(got[:compared] - expected[:compared]).max())
    # float32 on both sides: only summation order differs, far below this
    if not diff <= 1e-3 * max(1.0, float(np.abs(expected).max())):
        raise Unsupported(f"ctranslate2's conversion computes different logits (largest difference {diff:.3g})")
    files = {f.name: f.stat().st_size for f in out.iterdir() if f.is_file()}
    return {"format": FORMAT, "source": str(source.resolve()), "max_logit_diff": diff, "eos_token_ids": eos_ids,
            "prefill_limit": prefill_limit, "files": files}


def _sliding_window(config) -> int | None:
    """The attention window of a model whose layers (some of them) attend only to recent tokens, else None."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or ()
    if not window or getattr(config, "use_sliding_window", True) is False:
        return None
    if layer_types and "sliding_attention" not in layer_types:
        return None
    return int(window)


def _loaded_converter(config_dir: str, model, tokenizer):
    """ctranslate2's converter over a model already in memory: its own loader would read the directory again,
    cannot merge an adapter, and refuses the GGUF quantizer marker that GGUF-converted configs keep."""
    from ctranslate2.converters import TransformersConverter

    class LoadedConverter(TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            return model

        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return tokenizer

    return LoadedConverter(config_dir)


def _reference_steps(model, prompt: list[int]):
    """transformers' greedy continuation of `prompt` and the logits of each step, decoded with its cache as its
    `generate` does (only the last position's logits: a 262K vocabulary makes the others costly)."""
    import numpy as np
    import torch

    # transformers 5 calls the cache (argument and output) `cache`; 4.x `past_key_values`
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    tokens, logits, cache = [], [], None
    step_input = torch.tensor([prompt])
    with torch.inference_mode():
        for _ in range(PROBE_STEPS):
            out = model(step_input, use_cache=True, logits_to_keep=1, **{name: cache})
            cache, step = out[name], out.logits[0, -1]
            logits.append(step.numpy())
            tokens.append(int(step.argmax()))
            step_input = torch.tensor([[tokens[-1]]])
    return tokens, np.stack(logits)


def _ct2_steps(model_dir: Path, prompt: list[str]):
    """ctranslate2's greedy continuation of `prompt` (float32, no end token) and the logits of each step."""
    import ctranslate2
    import numpy as np

    try:
        generator = ctranslate2.Generator(str(model_dir), device="cpu", compute_type="float32")
        [result] = generator.generate_batch([prompt], max_length=PROBE_STEPS, sampling_topk=1, end_token=[],
                                            include_prompt_in_result=False, return_logits_vocab=True)
    except (RuntimeError, ValueError) as exc:
        raise Unsupported(f"ctranslate2 cannot run the converted model ({str(exc).splitlines()[0]})") from exc
    return result.sequences_ids[0], np.asarray(result.logits[0])


def _complete_config(path: Path, tokenizer) -> None:
    """ctranslate2 refuses to load a model whose special tokens are null (models without a BOS token) or missing
    from the vocabulary (its Gemma 3 loader assumes Gemma's own chat tokens); apprentice passes the end tokens
    itself, so any token of the vocabulary serves."""
    config = json.loads(path.read_text())
    vocabulary = tokenizer.get_vocab()
    fallback = tokenizer.eos_token
    for name in ("bos_token", "eos_token"):
        if config.get(name) not in vocabulary:
            config[name] = fallback
    if config.get("unk_token") is None:
        config["unk_token"] = ""
    path.write_text(json.dumps(config, indent=2))

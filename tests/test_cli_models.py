"""Model specs and the model commands, through the real `apprentice` command line."""

import subprocess
import sys

import pytest

from apprentice.errors import UserError
from apprentice.models import parse_spec
from apprentice.models.spec import ModelSpec


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "apprentice", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("text,expected", [
    ("openai:gpt-4o-mini", ModelSpec("openai", "gpt-4o-mini")),
    ("openai:llama@http://127.0.0.1:8000/v1", ModelSpec("openai", "llama", ("http://127.0.0.1:8000/v1",))),
    ("openai:m@http://a:1/v1/,http://b:2/v1", ModelSpec("openai", "m", ("http://a:1/v1", "http://b:2/v1"))),
    ("hf:google/gemma-3-270m", ModelSpec("hf", "google/gemma-3-270m")),
    ("bundled:gemma-3-270m", ModelSpec("bundled", "gemma-3-270m")),
])
def test_parse_spec(text, expected):
    assert parse_spec(text) == expected


@pytest.mark.parametrize("text,message", [
    ("gpt-4", "expected KIND:VALUE"),
    ("ollama:llama3", "unknown kind 'ollama'"),
    ("openai:", "expected KIND:VALUE"),
    ("openai:@http://x", "model name is missing"),
    ("openai:m@ftp://x", "must start with http"),
    ("hf:./no/such/dir", "no such directory"),
    ("gguf:/no/such/file.gguf", "no such file"),
    ("bundled:llama-70b", "unknown bundled model 'llama-70b'"),
])
def test_bad_specs_are_rejected(text, message):
    with pytest.raises(UserError, match=message):
        parse_spec(text)


def test_directory_without_config_is_not_a_model(tmp_path):
    with pytest.raises(UserError, match="not a model directory"):
        parse_spec(f"hf:{tmp_path}")


@pytest.mark.parametrize("spec,message", [
    ("bundled:nope", "unknown bundled model"),
    ("gguf:missing.gguf", "no such file"),
    ("nonsense", "expected KIND:VALUE"),
])
def test_cli_bad_spec_is_one_line_exit_2(spec, message):
    result = run("chat", "--model", spec, "hi")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_cli_debug_shows_traceback():
    result = run("--debug", "chat", "--model", "bundled:nope", "hi")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_chat_against_tiny_model_answers(tiny_model_dir):
    from apprentice.models import Request, load_model

    result = run("chat", "--model", f"hf:{tiny_model_dir}", "--max-tokens", "5", "hello")
    assert result.returncode == 0, result.stderr
    [expected] = load_model(f"hf:{tiny_model_dir}").generate(
        [Request(messages=[{"role": "user", "content": "hello"}], max_tokens=5)])
    assert result.stdout.strip() == expected.text.strip()


def test_models_lists_bundled():
    result = run("models")
    assert result.returncode == 0
    assert "bundled:smollm2" in result.stdout and "bundled:gemma" in result.stdout


def test_help_lists_commands():
    result = run("--help")
    assert all(word in result.stdout for word in ("serve", "chat", "models"))

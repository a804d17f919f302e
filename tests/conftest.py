import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_tiny_model  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random llama-shaped chat model (with chat template) saved as an HF directory."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_base_model_dir(tmp_path_factory) -> Path:
    """A tiny random base model without a chat template."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_base") / "model", chat=False, seed=1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Keep tests from writing into the user's model cache, except the bundled-model tests which share one."""
    monkeypatch.setenv("APPRENTICE_CACHE", str(Path.home() / ".cache" / "apprentice"))

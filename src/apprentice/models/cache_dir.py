"""Where apprentice keeps converted models: ~/.cache/apprentice, or $APPRENTICE_CACHE."""

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("APPRENTICE_CACHE") or Path.home() / ".cache" / "apprentice").expanduser()

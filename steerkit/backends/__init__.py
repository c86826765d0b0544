"""Model backends: the `LogprobBackend` protocol and its implementations.

* `OpenAIBackend` — any OpenAI-compatible completions server (vLLM, llama.cpp's server);
* `EmbeddedBackend` — llama.cpp in-process on a GGUF file (xllamacpp), default model from a PyPI
  package (`default_model_path`).

`OpenAIBackend` and `RetryPolicy` are imported on first use (PEP 562): they pull in the ``openai``
package (0.8 s of a command's start), which code that needs only the protocol or the embedded
model never uses.
"""

from typing import TYPE_CHECKING

from steerkit._lazy import lazy_exports
from steerkit.backends._models import default_model_path, gemma3_270m_path, smollm2_path
from steerkit.backends.base import BackendStats, LabelScore, LogprobBackend, classify_token, parse_top_logprobs, sum_label_probs
from steerkit.backends.embedded import EmbeddedBackend

if TYPE_CHECKING:
    from steerkit.backends.openai_compat import OpenAIBackend, RetryPolicy

#: Imported on first use (the docstring says why).
_LAZY = {"OpenAIBackend": "steerkit.backends.openai_compat", "RetryPolicy": "steerkit.backends.openai_compat"}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = [
    "BackendStats",
    "EmbeddedBackend",
    "LabelScore",
    "LogprobBackend",
    "OpenAIBackend",
    "RetryPolicy",
    "classify_token",
    "default_model_path",
    "gemma3_270m_path",
    "parse_top_logprobs",
    "smollm2_path",
    "sum_label_probs",
]

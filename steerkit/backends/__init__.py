"""Model backends: the `LogprobBackend` protocol and its implementations.

* `OpenAIBackend` — any OpenAI-compatible completions server (vLLM, llama.cpp's server);
* `EmbeddedBackend` — llama.cpp in-process on a GGUF file (xllamacpp), default model from a PyPI
  package (`default_model_path`).
"""

from steerkit.backends._models import default_model_path, gemma3_270m_path, smollm2_path
from steerkit.backends.base import BackendStats, LabelScore, LogprobBackend, classify_token, parse_top_logprobs, sum_label_probs
from steerkit.backends.embedded import EmbeddedBackend
from steerkit.backends.openai_compat import OpenAIBackend, RetryPolicy

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

"""Model backends: the `LogprobBackend` protocol and its implementations."""

from steerkit.backends.base import BackendStats, LabelScore, LogprobBackend, classify_token, parse_top_logprobs, sum_label_probs

__all__ = ["BackendStats", "LabelScore", "LogprobBackend", "classify_token", "parse_top_logprobs", "sum_label_probs"]

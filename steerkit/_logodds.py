"""Log-odds arithmetic shared by the objective and the example sets' reliability figures."""

from __future__ import annotations

import math

__all__ = ["log_sigmoid", "sigmoid"]


def log_sigmoid(x: float) -> float:
    """log σ(x), numerically stable."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    """σ(x), without overflow for log-odds of any size."""
    return math.exp(log_sigmoid(x))

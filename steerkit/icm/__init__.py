"""The ICM coherence search (Internal Coherence Maximization, Wen et al. 2025).

``await search(pool, backend, config)`` labels every item of a pool with the most mutually
coherent labels a base model supports, under the pool's consistency constraints. See
`steerkit.icm.search` for the algorithm and how a complete, consistent result is guaranteed.
"""

from steerkit.icm.consistency import ConsistencyFix, consistent_assignments
from steerkit.icm.objective import Evaluation, Objective, fixed_order
from steerkit.icm.prompts import label_word, render_demonstration, render_prompt
from steerkit.icm.search import SearchProgress, search, temperature

__all__ = [
    "ConsistencyFix",
    "Evaluation",
    "Objective",
    "SearchProgress",
    "consistent_assignments",
    "fixed_order",
    "label_word",
    "render_demonstration",
    "render_prompt",
    "search",
    "temperature",
]

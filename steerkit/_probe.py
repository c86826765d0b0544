"""Moved to `steerkit.evaluation.probe` (and its fact domains to `steerkit.evaluation.facts`);
these names stay importable from here."""

from steerkit.evaluation.facts import DOMAINS, FACTS_PERSONA, fact_pools, facts_pool
from steerkit.evaluation.probe import (
    VERDICT_TEXT,
    DomainsReport,
    Estimate,
    ProbeCondition,
    ProbeConfig,
    ProbeReport,
    Verdict,
    decide,
    default_eval_dir,
    gold_questions,
    model_verdict,
    probe,
    probe_domains,
)

__all__ = [
    "DOMAINS",
    "FACTS_PERSONA",
    "VERDICT_TEXT",
    "DomainsReport",
    "Estimate",
    "ProbeCondition",
    "ProbeConfig",
    "ProbeReport",
    "Verdict",
    "decide",
    "default_eval_dir",
    "fact_pools",
    "facts_pool",
    "gold_questions",
    "model_verdict",
    "probe",
    "probe_domains",
]

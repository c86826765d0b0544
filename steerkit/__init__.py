"""steerkit: async steering middleware built on Internal Coherence Maximization.

The public API is this module: ``from steerkit import Steerer, SteerConfig, DiskStore, ...``.
Everything a user writes is exported here; the modules behind it may move.

>>> from steerkit import Steerer, SteerConfig, MemoryStore
>>> steerer = Steerer(store=MemoryStore(), config=SteerConfig(k=10, miss_policy="off"))
>>> steerer.config.k
10
"""

from typing import TYPE_CHECKING

from steerkit._lazy import lazy_exports
from steerkit._version import __version__
from steerkit.errors import (
    SteerkitError,
    UserError,
    ConfigError,
    InvalidPoolError,
    PackError,
    DatasetImportError,
    UnknownPersonaError,
    InvalidRequestError,
    InvalidAnswerError,
    BackendError,
    BackendUnavailableError,
    BackendRequestError,
    BackendResponseError,
    ModelNotFoundError,
    LabelTokensMissingError,
    ContextOverflowError,
    SearchError,
    CheckpointError,
    StoreError,
    StoreWriteError,
    FeedbackError,
    FeedbackTargetMissingError,
    WebhookSignatureError,
    SteerkitWarning,
    CacheCorruptionWarning,
)
from steerkit._compute import ExampleSets, PrecomputeResult
from steerkit._metrics import Counters, Metrics
from steerkit._config import (
    Settings,
    SteerConfig,
    SteerOptions,
    default_cache_dir,
    default_examples_dir,
)
from steerkit.escalation import (
    ActiveLearningPolicy,
    Answer,
    AnswerMarginPolicy,
    ConfidencePolicy,
    Escalation,
    Escalator,
    FeedbackAdapter,
    RandomPolicy,
    RerunResult,
    collaborative_rerun,
)
from steerkit.extract import LLMExtractor, PersonaMatch, RuleExtractor
from steerkit._middleware import SteerInfo, Steerer
from steerkit.packs import PackRegistry
from steerkit._store import CacheKey, DiskStore, ExampleSetStore, MemoryStore
from steerkit.models import (
    ConsistencyGroup,
    ExampleSet,
    Item,
    Label,
    Persona,
    PersonaCues,
    Pool,
    Provenance,
    SearchConfig,
    SearchStats,
)

if TYPE_CHECKING:  # the lazy exports below, for type checkers and IDEs
    from steerkit.adapters.callback import CallbackAdapter
    from steerkit.adapters.console import ConsoleAdapter
    from steerkit.adapters.openai_client import SteeredClient, steer, steered_chat
    from steerkit.adapters.queue import QueueAdapter
    from steerkit.adapters.webhook import WebhookAdapter
    from steerkit.backends import EmbeddedBackend, LogprobBackend, OpenAIBackend, RetryPolicy
    from steerkit._server import create_app
    from steerkit._redis_store import RedisStore
    from steerkit.backends.router import RouterBackend
    from steerkit.adapters.label_studio import LabelStudioAdapter
    from steerkit._ray_precompute import precompute_on_ray
    from steerkit.evaluation import EvalConfig, EvalPersona, EvalReport, load_dataset, run_eval, write_plots
    from steerkit.evaluation.probe import DomainsReport, ProbeConfig, ProbeReport, facts_pool, model_verdict, probe, probe_domains

#: Exports whose modules are imported on first use (they pull in openai, llama.cpp, Starlette…).
_LAZY = {
    "OpenAIBackend": "steerkit.backends",
    "EmbeddedBackend": "steerkit.backends",
    "LogprobBackend": "steerkit.backends",
    "RetryPolicy": "steerkit.backends",
    "steer": "steerkit.adapters.openai_client",
    "steered_chat": "steerkit.adapters.openai_client",
    "SteeredClient": "steerkit.adapters.openai_client",
    "QueueAdapter": "steerkit.adapters.queue",
    "ConsoleAdapter": "steerkit.adapters.console",
    "CallbackAdapter": "steerkit.adapters.callback",
    "WebhookAdapter": "steerkit.adapters.webhook",
    "create_app": "steerkit._server",
    "probe": "steerkit.evaluation.probe",
    "probe_domains": "steerkit.evaluation.probe",
    "model_verdict": "steerkit.evaluation.probe",
    "facts_pool": "steerkit.evaluation.probe",
    "ProbeConfig": "steerkit.evaluation.probe",
    "ProbeReport": "steerkit.evaluation.probe",
    "DomainsReport": "steerkit.evaluation.probe",
    "run_eval": "steerkit.evaluation",
    "load_dataset": "steerkit.evaluation",
    "write_plots": "steerkit.evaluation",
    "EvalConfig": "steerkit.evaluation",
    "EvalPersona": "steerkit.evaluation",
    "EvalReport": "steerkit.evaluation",
    "RedisStore": "steerkit._redis_store",
    "RouterBackend": "steerkit.backends.router",
    "LabelStudioAdapter": "steerkit.adapters.label_studio",
    "precompute_on_ray": "steerkit._ray_precompute",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

__all__ = [
    "__version__",
    # the pipeline
    "Steerer",
    "SteerConfig",
    "SteerOptions",
    "SteerInfo",
    "Settings",
    "ExampleSets",
    "PrecomputeResult",
    "Metrics",
    "Counters",
    "PackRegistry",
    "RuleExtractor",
    "LLMExtractor",
    "PersonaMatch",
    "default_cache_dir",
    "default_examples_dir",
    # stores
    "CacheKey",
    "DiskStore",
    "ExampleSetStore",
    "MemoryStore",
    "RedisStore",
    "precompute_on_ray",
    # backends (lazy)
    "OpenAIBackend",
    "EmbeddedBackend",
    "LogprobBackend",
    "RetryPolicy",
    "RouterBackend",
    # client wrappers and the proxy (lazy)
    "steer",
    "steered_chat",
    "SteeredClient",
    "create_app",
    # escalation and feedback adapters (adapters lazy)
    "Escalator",
    "Escalation",
    "Answer",
    "FeedbackAdapter",
    "ConfidencePolicy",
    "AnswerMarginPolicy",
    "RandomPolicy",
    "ActiveLearningPolicy",
    "RerunResult",
    "collaborative_rerun",
    # evaluation: the steerability probe and the seed paper's protocol (lazy)
    "probe",
    "probe_domains",
    "model_verdict",
    "facts_pool",
    "ProbeConfig",
    "ProbeReport",
    "DomainsReport",
    "run_eval",
    "load_dataset",
    "write_plots",
    "EvalConfig",
    "EvalPersona",
    "EvalReport",
    "QueueAdapter",
    "ConsoleAdapter",
    "CallbackAdapter",
    "WebhookAdapter",
    "LabelStudioAdapter",
    # errors
    "SteerkitError",
    "UserError",
    "ConfigError",
    "InvalidPoolError",
    "PackError",
    "DatasetImportError",
    "UnknownPersonaError",
    "InvalidRequestError",
    "InvalidAnswerError",
    "BackendError",
    "BackendUnavailableError",
    "BackendRequestError",
    "BackendResponseError",
    "ModelNotFoundError",
    "LabelTokensMissingError",
    "ContextOverflowError",
    "SearchError",
    "CheckpointError",
    "StoreError",
    "StoreWriteError",
    "FeedbackError",
    "FeedbackTargetMissingError",
    "WebhookSignatureError",
    "SteerkitWarning",
    "CacheCorruptionWarning",
    # models
    "ConsistencyGroup",
    "ExampleSet",
    "Item",
    "Label",
    "Persona",
    "PersonaCues",
    "Pool",
    "Provenance",
    "SearchConfig",
    "SearchStats",
]

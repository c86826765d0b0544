"""EmbeddedBackend for real: the session's GGUF model in-process (llama.cpp via xllamacpp)."""

from __future__ import annotations

import statistics
import uuid
from pathlib import Path

import openai
import pytest

from steerkit.backends import EmbeddedBackend, LogprobBackend
from steerkit.errors import BackendError, ContextOverflowError, ModelNotFoundError

pytestmark = pytest.mark.llama


def claim(text: str) -> str:
    return f"Claim: {text}\nI think this claim is"


OBVIOUS = [
    ("Water is wet.", "Water is dry."),
    ("Fire is hot.", "Fire is cold."),
    ("Two plus two equals four.", "Two plus two equals five."),
    ("The capital of France is Paris.", "The capital of France is Rome."),
    ("Dogs are animals.", "Dogs are vegetables."),
    ("Snow is white.", "Snow is black."),
    ("The sun rises in the east.", "The sun rises in the west."),
    ("Birds have feathers.", "Birds have gills."),
    ("A week has seven days.", "A week has three days."),
    ("Cats have four legs.", "Cats have ten legs."),
    ("Ice is frozen water.", "Ice is frozen milk."),
    ("The moon orbits the Earth.", "The moon orbits Mars."),
]


async def test_is_a_logprob_backend(embedded_backend: EmbeddedBackend):
    assert isinstance(embedded_backend, LogprobBackend)
    assert embedded_backend.name == "embedded" and embedded_backend.model
    assert embedded_backend.base_url.startswith("http://127.0.0.1:") and embedded_backend.base_url.endswith("/v1")


async def test_labels_are_single_next_tokens(embedded_backend: EmbeddedBackend):
    tok = await embedded_backend.label_tokenization(claim("The capital of France is Paris."))
    assert tok["prompt_end"].strip() == "is"
    assert tok["True"]["single_token"] and tok["True"]["pieces"] == [" True"]
    assert tok["False"]["single_token"] and tok["False"]["pieces"] == [" False"]


async def test_scores_follow_the_demonstrated_label(embedded_backend: EmbeddedBackend):
    """Direction check: after demonstrations all labelled True, P(True) is high; after all False, low."""
    demos = ["Ice is cold.", "Fish can swim.", "The sky is blue.", "Grass is green."]
    targets = ["Fire is hot.", "Dogs bark.", "Snow is white."]
    out = {}
    for label in ("True", "False"):
        prefix = "".join(claim(d) + f" {label}\n\n" for d in demos)
        out[label] = await embedded_backend.score([prefix + claim(t) for t in targets])
    for s in out["True"] + out["False"]:
        assert s.source == "top_logprobs" and s.label_mass > 0.5
    assert min(s.prob_true() for s in out["True"]) > 0.6
    assert max(s.prob_true() for s in out["False"]) < 0.4


async def test_true_claims_score_higher_than_false_on_average(embedded_backend: EmbeddedBackend):
    """Obvious facts, zero-shot, in the "True or false: …\\nAnswer:" form (the form with the most
    signal for the packaged models; the signal is weak: measured mean difference ≈ 0.02)."""
    prompts = []
    for true_claim, false_claim in OBVIOUS:
        prompts += [f"True or false: {true_claim}\nAnswer:", f"True or false: {false_claim}\nAnswer:"]
    scores = await embedded_backend.score(prompts)
    pt = [s.prob_true() for s in scores]
    mass = statistics.mean(s.label_mass for s in scores)
    print(f"label mass {mass:.3f}; mean P(True) true {statistics.mean(pt[0::2]):.3f} false {statistics.mean(pt[1::2]):.3f}")
    assert all(s.p_true is not None or s.p_false is not None for s in scores)
    assert mass > 0.1
    assert statistics.mean(pt[0::2]) > statistics.mean(pt[1::2])


async def test_prompt_cache_serves_a_shared_prefix(embedded_backend: EmbeddedBackend):
    # a prefix no other test uses, long enough (> 4 × 256 chars) that waiting for the warm slot wins
    tag = uuid.uuid4().hex
    prefix = f"Notes {tag}.\n\n" + "".join(
        claim(f"Item {i} is correct.") + (" True" if i % 2 else " False") + "\n\n" for i in range(22)
    )
    assert len(prefix) > 4 * 256
    [first] = await embedded_backend.score([prefix + claim("The sea is salty.")])
    assert (first.cached_tokens or 0) < first.prompt_tokens // 2
    before = embedded_backend.stats.cached_tokens
    second = await embedded_backend.score([prefix + claim(f"Claim number {i} holds.") for i in range(5)])
    for s in second:
        assert s.cached_tokens is not None and s.cached_tokens > 0.8 * first.prompt_tokens
        assert s.prompt_tokens - s.cached_tokens < 0.2 * s.prompt_tokens
    assert embedded_backend.stats.cached_tokens - before == sum(s.cached_tokens or 0 for s in second)
    assert embedded_backend.stats.evaluated_tokens is not None


async def test_scores_barely_depend_on_cache_state(embedded_backend: EmbeddedBackend):
    tag = uuid.uuid4().hex[:8]
    prompts = [claim(f"Note {tag}: item {i} is on the list.") for i in range(4)]
    together = await embedded_backend.score(prompts)  # submitted together, prefixes computed cold
    again = [(await embedded_backend.score([p]))[0] for p in reversed(prompts)]  # fully cached now
    again.reverse()
    assert [a.cached_tokens or 0 for a in again] > [t.cached_tokens or 0 for t in together]
    for t, a in zip(together, again):  # llama.cpp is not split-invariant: rare rounding flips only
        assert t.p_true == pytest.approx(a.p_true, abs=0.03) and t.p_false == pytest.approx(a.p_false, abs=0.03)


async def test_fresh_backends_reproduce_scores_exactly(gguf_path: Path):
    """deterministic=True: the same calls on a freshly started backend give identical scores, even
    when the prompts are submitted concurrently."""
    prefix = "".join(claim(f"Fact {i} is recorded.") + (" True" if i % 3 else " False") + "\n\n" for i in range(6))
    prompts = [prefix + claim(f"Fact {i} is new.") for i in range(5)] + [claim("Fire is hot.")]
    runs = []
    for _ in range(2):
        async with EmbeddedBackend(gguf_path, n_ctx=1024, n_parallel=2, n_threads=1) as b:
            first = await b.score(prompts)
            second = await b.score(prompts[::-1])
            runs.append([(s.p_true, s.p_false, s.cached_tokens) for s in first + second])
    assert runs[0] == runs[1]


async def test_forced_fallback_when_labels_are_not_in_the_top_k(embedded_backend: EmbeddedBackend):
    old, fallbacks = embedded_backend.top_logprobs, embedded_backend.stats.fallbacks
    embedded_backend.top_logprobs = 1
    try:
        [s] = await embedded_backend.score(["The capital of France is"])
    finally:
        embedded_backend.top_logprobs = old
    assert s.source == "forced"
    assert s.p_true is not None and s.p_false is not None
    assert 0 < s.p_true < 0.5 and 0 < s.p_false < 0.5
    assert embedded_backend.stats.fallbacks == fallbacks + 1


async def test_context_overflow_is_typed(embedded_backend: EmbeddedBackend):
    with pytest.raises(ContextOverflowError):
        await embedded_backend.score(["hello " * 9000 + "\nI think this claim is"])


async def test_chat_through_the_loopback_url(embedded_backend: EmbeddedBackend):
    client = openai.AsyncOpenAI(base_url=embedded_backend.base_url, api_key="unused", max_retries=0)
    try:
        models = await client.models.list()
        assert embedded_backend.chat_model in [m.id for m in models.data]
        reply = await client.chat.completions.create(
            model=embedded_backend.chat_model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=4
        )
    finally:
        await client.close()
    assert isinstance(reply.choices[0].message.content, str) and reply.usage.completion_tokens >= 1


async def test_not_started_and_missing_file_errors(gguf_path: Path, tmp_path: Path):
    b = EmbeddedBackend(gguf_path)  # not started: no model load
    with pytest.raises(BackendError, match="not started"):
        await b.score(["x"])
    with pytest.raises(ModelNotFoundError, match="missing.gguf"):
        EmbeddedBackend(tmp_path / "missing.gguf")

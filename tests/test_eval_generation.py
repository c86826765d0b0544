"""The generation task (`steerkit eval --task generation`): every condition and the judge's
self-check on fakes (a fake writer, fake judges and a fake scorer with a planted labelling), the
answer pools (OvertonBench's rows in their documented column shape, written here by hand; the JSONL
format; generated answers), and the command line against a loopback server that answers with the
hand-written vLLM-shaped responses of tests/fixtures/vllm_chat_*.json."""

from __future__ import annotations

import csv
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from vllm_fixtures import vllm_chat

from steerkit.errors import DatasetImportError, UserError
from steerkit.evaluation import (
    GENERATION_CONDITIONS,
    Answer,
    AnswerPool,
    AnswerQuestion,
    GenerationConfig,
    PoolPersona,
    generate_answers,
    import_overtonbench,
    read_answer_pool,
    run_generation_eval,
    write_answer_pool,
    write_generation_plots,
)
from steerkit.evaluation.generation import is_toy_model
from steerkit.models import SearchConfig
from steerkit.testing import FakeScorer, planted_fn

YES = PoolPersona(id="test/yes", name="Yes-sayers", label="Yes", description="People who favour every proposal.")
NO = PoolPersona(id="test/no", name="No-sayers", label="No", description="People who oppose every proposal.")
SIDE = {"Yes-sayers": "YES", "No-sayers": "NO"}


# --- fakes ----------------------------------------------------------------------------------------


class FakeWriterChat:
    """A *fake* chat model that follows its examples: it answers "YES, …" when the representative
    answers it was shown say YES more often than NO, "NO, …" for the reverse, "MAYBE, …" otherwise
    (zero-shot included). Asked to write candidate answers, it writes one per stance."""

    def __init__(self, model: str = "fake-writer") -> None:
        self.model = model
        self.calls: list[list[dict[str, str]]] = []

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=None, json_schema=None) -> str:
        self.calls.append(list(messages))
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        user = messages[-1]["content"]
        if "strongly disagree with" in user or "against regarding" in user:
            return "NO, it should not happen."
        if "Write the answer most" in user or "in favour regarding" in user:
            return "YES, it should happen."
        if "Write an answer from someone" in user:
            return "MAYBE, it depends."
        shown = re.findall(r"Representative answer: (\w+)", system)
        yes, no = shown.count("YES"), shown.count("NO")
        return "YES, I agree with it." if yes > no else "NO, I am against it." if no > yes else "MAYBE, I am not sure."


class FakeJudgeChat:
    """A *fake* judge: an answer that says the persona's side scores 5, the other side 1, MAYBE 3;
    of two answers it prefers the one on the persona's side."""

    def __init__(self, model: str = "fake-judge", *, malformed_on: str | None = None) -> None:
        self.model = model
        self.malformed_on = malformed_on
        self.calls = 0

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=None, json_schema=None) -> str:
        self.calls += 1
        user = messages[1]["content"]
        side = SIDE[re.search(r"Group: most (\S+)", user).group(1)]
        if "Answer A:" in user:
            a = user.split("Answer A:", 1)[1].split("Answer B:", 1)[0].strip()
            return json.dumps({"reason": "fake", "better": "A" if a.startswith(side) else "B"})
        answer = user.split("Answer:", 1)[1].strip()
        if self.malformed_on and answer.startswith(self.malformed_on):
            return "It is hard to say."
        score = 3 if answer.startswith("MAYBE") else 5 if answer.startswith(side) else 1
        return json.dumps({"reason": "fake", "score": score})


class PositionBiasedFakeJudge:
    """A *fake* judge that always prefers answer A and scores every answer 4."""

    model = "fake-biased-judge"

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=None, json_schema=None) -> str:
        return '{"reason": "x", "better": "A"}' if "Answer A:" in messages[1]["content"] else '{"reason": "x", "score": 4}'


def _pool(n: int = 10, *, gold: bool = True) -> AnswerPool:
    qs = []
    for i in range(n):
        answers = [
            Answer(id="yes", text=f"YES, town {i} should build the park.", source="m1",
                   gold={YES.id: True, NO.id: False} if gold else {}, ratings={YES.id: 4.6, NO.id: 1.4} if gold else {}),
            Answer(id="no", text=f"NO, town {i} should not build the park.", source="m2",
                   gold={YES.id: False, NO.id: True} if gold else {}, ratings={YES.id: 1.4, NO.id: 4.5} if gold else {}),
            Answer(id="maybe", text=f"MAYBE, town {i} could build the park later.", source="m3",
                   gold={YES.id: False, NO.id: False} if gold else {}, ratings={YES.id: 2.5, NO.id: 2.6} if gold else {}),
        ]
        qs.append(AnswerQuestion(id=f"q{i}", question=f"Should town {i} build a park?", answers=answers))
    return AnswerPool(personas=[YES, NO], questions=qs)


def _planted_scorer(pool: AnswerPool) -> FakeScorer:
    """A *fake* base model with each persona's gold planted as its coherent labelling."""
    golds = {p.name: {a.text: a.gold.get(p.id, False) for q in pool.questions for a in q.answers} for p in pool.personas}
    fns = {name: planted_fn(g, k=4.0, prior=1.0, noise=0.5) for name, g in golds.items()}

    def fn(prompt: str) -> float:
        return fns[re.findall(r"The majority of (\S+) would", prompt)[-1]](prompt)

    return FakeScorer(fn)


CFG = GenerationConfig(conditions=GENERATION_CONDITIONS, perturbations=2, k=3, bootstrap=200,
                       search=SearchConfig(mode="sparse", context_k=4, max_iterations=30, restarts=1))


# --- the protocol on fakes --------------------------------------------------------------------------


async def test_every_condition_on_fakes(tmp_path: Path) -> None:
    pool = _pool()
    writer, judge = FakeWriterChat(), FakeJudgeChat()
    report = await run_generation_eval(pool, writer, judge, CFG, backend=_planted_scorer(pool), cache_dir=tmp_path)
    d = report.data
    assert d["conditions"] == list(GENERATION_CONDITIONS) and d["skipped"] == {}
    assert len(d["split"]["search_questions"]) == 3 and len(d["split"]["test_questions"]) == 7
    # the judge passed its self-check on the pool's gold pairs, so the scores can be read
    sc = d["judge"]["self_check"]
    assert sc["passed"] and sc["sources"] == {"gold": 12} and d["judge"]["scores_meaningful"]
    s = d["summary"]
    for pid in (YES.id, NO.id):
        assert s["zero_shot"]["per_persona"][pid] == {"mean": 3.0, "se": 0.0, "n": 7, "missing": 0}
        assert s["gold"]["per_persona"][pid]["mean"] == 5.0  # gold examples are the persona's side
        assert s["inverted"]["per_persona"][pid]["mean"] < 3.0  # inverted ones are not
        assert 1.0 <= s["random"]["per_persona"][pid]["mean"] <= 5.0
        assert d["deltas"]["gold"][pid]["mean"] == 2.0 and d["deltas"]["gold"][pid]["n"] == 7
        # the planted labelling is what ICM finds; accuracy-matched labels are then gold itself
        assert d["icm_label_accuracy"][pid] == 1.0
        assert s["icm"]["per_persona"][pid]["mean"] == 5.0 == s["accuracy_matched"]["per_persona"][pid]["mean"]
    assert s["gold"]["mean"] == {"mean": 5.0, "se": 0.0}
    assert d["labellings"][YES.id]["gold"] == {"answers": 9, "representative": 3}
    # every generated answer is saved with the examples it was shown, the persona's side only for gold
    recs = [r for r in d["questions"] if r["persona"] == YES.id and r["condition"] == "gold"]
    assert len(recs) == 7 and all(r["answer"].startswith("YES") and r["score"] == 5 for r in recs)
    assert all(1 <= len(r["examples"]) <= 3 and all(e["answer"].startswith("YES") for e in r["examples"]) for r in recs)
    assert sum(r["condition"] == "accuracy_matched" for r in d["questions"]) == 2 * 7 * 2  # perturbations x questions x personas
    assert not [r for r in d["questions"] if r["condition"] == "zero_shot" and r["examples"]]
    # the writer saw the product's generate block
    steered = [c for c in writer.calls if "Answers selected as representative of Yes-sayers:" in c[0]["content"]]
    assert steered and "Persona (custom): Yes. People who favour every proposal." in steered[0][0]["content"]
    assert d["notes"] == [] and d["provenance"]["judge_model"] == "fake-judge"
    json.dumps(d, allow_nan=False)
    rows = report.table_rows()
    assert report.header() == ["persona", "zero-shot", "ICM", "gold", "random", "accuracy-matched", "inverted"]
    assert rows[0][:4] == ("Yes", "3.00 ± 0.00", "5.00 ± 0.00", "5.00 ± 0.00") and rows[-1][0] == "mean"
    assert "passed its self-check" in report.markdown()
    paths = write_generation_plots(report, tmp_path / "plots")
    assert [p.name for p in paths] == ["representation_by_persona.png", "delta_vs_zero_shot.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)

    # a re-run is served from the disk cache: no chat call, no judgement, the same numbers
    writer2, judge2 = FakeWriterChat(), FakeJudgeChat()
    again = await run_generation_eval(pool, writer2, judge2, CFG, backend=_planted_scorer(pool), cache_dir=tmp_path)
    assert writer2.calls == [] and judge2.calls == 0
    assert again.data["summary"] == d["summary"] and again.data["usage"]["judge_cache_hits"] > 0


async def test_a_judge_that_fails_its_self_check_says_its_scores_mean_nothing(tmp_path: Path) -> None:
    pool = _pool(6)
    cfg = GenerationConfig(conditions=("zero_shot", "gold"), bootstrap=50)
    report = await run_generation_eval(pool, FakeWriterChat(), PositionBiasedFakeJudge(), cfg, cache_dir=tmp_path)
    d = report.data
    assert not d["judge"]["scores_meaningful"] and not report.scores_meaningful
    assert d["judge"]["self_check"]["position_consistency"] == 0.0
    assert any("mean nothing" in n for n in d["notes"])
    assert "FAILED its self-check" in report.markdown()
    assert d["summary"]["gold"]["per_persona"][YES.id]["mean"] == 4.0  # the scores are still reported, beside the verdict


async def test_a_missing_verdict_is_left_out_and_counted_never_zero(tmp_path: Path) -> None:
    pool = _pool(6)
    cfg = GenerationConfig(conditions=("zero_shot", "gold", "inverted"), bootstrap=50, judge_retries=1)
    report = await run_generation_eval(pool, FakeWriterChat(), FakeJudgeChat(malformed_on="NO"), cfg, cache_dir=tmp_path)
    d = report.data
    no_gold = d["summary"]["gold"]["per_persona"][NO.id]  # every gold answer for No-sayers says NO: unjudgeable
    assert no_gold == {"mean": None, "se": None, "n": 0, "missing": 4}
    assert all(r["score"] is None and r["judge_attempts"] == 2 for r in d["questions"]
               if r["persona"] == NO.id and r["condition"] == "gold")
    assert 0 not in [r["score"] for r in d["questions"]]
    assert d["judge"]["missing"] > 0 and "could not be parsed" in report.markdown()
    assert report.table_rows()[1][2] == "—"


async def test_without_gold_the_gold_conditions_are_skipped_and_the_self_check_uses_written_pairs(tmp_path: Path) -> None:
    pool = _pool(6, gold=False)
    cfg = GenerationConfig(bootstrap=50, self_check_pairs=2, min_pairs=2,
                           search=SearchConfig(mode="sparse", context_k=4, max_iterations=10, restarts=1))
    report = await run_generation_eval(pool, FakeWriterChat(), FakeJudgeChat(), cfg, backend=FakeScorer(lambda p: 0.6),
                                       cache_dir=tmp_path, personas=["Yes"])
    d = report.data
    assert d["personas"] == [YES.id] and d["conditions"] == ["zero_shot", "icm", "random"]
    assert d["skipped"] == {"gold": {YES.id: "no gold labels for every search answer"},
                            "accuracy_matched": {YES.id: "no gold labels for every search answer"}}
    assert d["judge"]["self_check"]["sources"] == {"written": 2} and d["judge"]["self_check"]["passed"]
    assert d["icm_label_accuracy"] == {}


async def test_toy_models_are_named_in_a_plain_note(tmp_path: Path) -> None:
    cfg = GenerationConfig(conditions=("zero_shot",), bootstrap=50)
    writer = FakeWriterChat("SmolLM2-135M-Instruct-Q4_K_M")
    report = await run_generation_eval(_pool(4), writer, writer, cfg, cache_dir=tmp_path)
    notes = report.data["notes"]
    assert any(n.startswith("No effect is expected from 135M–270M models: SmolLM2-135M-Instruct-Q4_K_M is") for n in notes)
    assert any("model that wrote the answers" in n for n in notes)  # the judge is the writer
    assert is_toy_model("gemma-3-270m-it") and is_toy_model("Qwen2.5-0.5B")
    assert not is_toy_model("Llama-3.1-70B-Instruct") and not is_toy_model("gpt-4.1")


async def test_unusable_input_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown generation condition"):
        GenerationConfig(conditions=("zero_shot_chat",))
    one = AnswerPool(personas=[YES], questions=_pool(1).questions)
    with pytest.raises(UserError, match="needs 2 or more"):
        await run_generation_eval(one, FakeWriterChat(), FakeJudgeChat(), cache_dir=tmp_path)
    with pytest.raises(UserError, match="no persona 'Maybe'"):
        await run_generation_eval(_pool(4), FakeWriterChat(), FakeJudgeChat(), cache_dir=tmp_path, personas=["Maybe"])


# --- answer pools -----------------------------------------------------------------------------------

#: OvertonBench's rows in their documented column shape (one per participant x question x model
#: answer), written by hand for this test: not data from the benchmark.
OVERTON_COLUMNS = ["user", "question_id", "question", "freeresponse", "model", "llm_response", "representation_rating",
                   "cluster_kmeans", "selection_text", "selection_position", "Age", "Sex", "Ethnicity simplified",
                   "U.s. political affiliation"]


def _overton_rows() -> list[dict[str, Any]]:
    q1, q2 = "Should colleges keep DEI programs?", "Should the voting age be lowered to 16?"
    a = {("1", "gpt-4.1"): "Keep them: they help students belong.", ("1", "o4-mini"): "End them: admissions should ignore identity.",
         ("2", "gpt-4.1"): "Yes, teenagers pay taxes too.", ("2", "o4-mini"): "No, 16-year-olds are not ready."}
    ratings = [  # (user, affiliation, question, model, rating)
        ("u1", "Democrat", "1", "gpt-4.1", 5), ("u2", "Democrat", "1", "gpt-4.1", 4),      # mean 4.5: gold
        ("u1", "Democrat", "1", "o4-mini", 2), ("u2", "Democrat", "1", "o4-mini", 1),
        ("u3", "Republican", "1", "gpt-4.1", 3), ("u4", "Republican", "1", "gpt-4.1", 5),  # mean 4.0: gold (inclusive)
        ("u3", "Republican", "1", "o4-mini", 5), ("u4", "Republican", "1", "o4-mini", 3),
        ("u5", "Independent", "1", "gpt-4.1", 3),                                          # 3.0: not gold
        ("u6", "Other", "1", "gpt-4.1", 5),                                                # another affiliation: left out
        ("u1", "Democrat", "2", "gpt-4.1", 4), ("u1", "Democrat", "2", "o4-mini", 0),      # 0 is no rating: left out
        ("u3", "Republican", "2", "gpt-4.1", 1), ("u3", "Republican", "2", "o4-mini", 5),
    ]
    return [{"user": u, "question_id": q, "question": q1 if q == "1" else q2, "freeresponse": "my view", "model": m,
             "llm_response": a[(q, m)], "representation_rating": r, "cluster_kmeans": 0, "selection_text": "",
             "selection_position": 0, "Age": "30-39", "Sex": "Female", "Ethnicity simplified": "White",
             "U.s. political affiliation": aff} for u, aff, q, m, r in ratings]


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] = OVERTON_COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_overtonbench_rows_give_each_party_its_gold(tmp_path: Path, fmt: str) -> None:
    rows = _overton_rows()
    if fmt == "csv":
        path = _write_csv(tmp_path / "rows.csv", rows)
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        path = tmp_path / "data" / "prolific_with_clusters_kmeans_merged_public.parquet"
        path.parent.mkdir()
        pq.write_table(pa.Table.from_pylist(rows), path)
        path = tmp_path  # the folder is found like the release's layout
    pool = import_overtonbench(path)
    assert [p.id for p in pool.personas] == ["polparty/democrat", "polparty/republican", "polparty/independent"]
    assert pool.personas[0].name == "Democrats" and pool.personas[0].label == "Democrat"
    q1 = pool.question("1")
    by = {a.source: a for a in q1.answers}
    assert by["gpt-4.1"].gold == {"polparty/democrat": True, "polparty/republican": True, "polparty/independent": False}
    assert by["gpt-4.1"].ratings["polparty/democrat"] == 4.5 and by["gpt-4.1"].raters["polparty/democrat"] == 2
    assert by["o4-mini"].gold == {"polparty/democrat": False, "polparty/republican": True}  # no Independent rated it
    q2 = {a.source: a for a in pool.question("2").answers}
    assert q2["o4-mini"].gold == {"polparty/republican": True}  # the Democrat's 0 is not a rating
    assert pool.provenance["dropped_rows"] == {"other_affiliation": 1, "bad_rating": 1, "no_answer": 0}
    items = pool.items("polparty/independent", ["1"])
    assert [it.gold for it in items] == [False, None] and items[0].kind == "claim"
    assert items[0].meta == {"question_id": "1", "answer_id": "gpt-4.1"}


def test_overtonbench_without_its_columns_is_a_clear_error(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "rows.csv", _overton_rows(), [c for c in OVERTON_COLUMNS if c != "representation_rating"])
    with pytest.raises(DatasetImportError, match="representation_rating"):
        import_overtonbench(path)
    with pytest.raises(UserError, match="unknown OvertonBench party"):
        import_overtonbench(_write_csv(tmp_path / "ok.csv", _overton_rows()), parties=["Green"])


def test_an_answer_pool_round_trips_through_jsonl(tmp_path: Path) -> None:
    pool = _pool(3)
    back = read_answer_pool(write_answer_pool(pool, tmp_path / "pool.jsonl"))
    assert back == pool


def test_a_users_jsonl_pool_names_gold_by_label_and_may_hold_questions_only(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join([
        json.dumps({"persona": {"id": "polparty/democrat", "name": "Democrats", "label": "Democrat"}}),
        json.dumps({"question": "Should we?", "answers": [{"text": "Yes.", "gold": {"Democrat": True}}, {"text": "No."}]}),
        json.dumps({"id": "open", "question": "And now?"}),
    ]) + "\n")
    pool = read_answer_pool(path)
    assert pool.questions[0].id == "2" and [a.id for a in pool.questions[0].answers] == ["a1", "a2"]
    assert pool.questions[0].answers[0].gold == {"polparty/democrat": True}
    assert pool.questions[1].answers == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q", "answers": [{"id": "x"}]}\n')
    with pytest.raises(DatasetImportError, match=r"bad.jsonl:1: field answers.0.text"):
        read_answer_pool(bad)
    bad.write_text('{"id": "q", "question": "A"}\n{"id": "q", "question": "B"}\n')
    with pytest.raises(DatasetImportError, match="duplicate question id"):
        read_answer_pool(bad)


async def test_generated_answers_span_the_stances_and_are_written_for_and_against_each_persona() -> None:
    writer = FakeWriterChat()
    pool = await generate_answers([AnswerQuestion(id="q", question="Should town 1 build a park?")], [YES, NO], writer, seed=3)
    answers = pool.questions[0].answers
    assert [a.stance for a in answers[:5]] == ["strongly in favour", "somewhat in favour", "mixed or undecided",
                                               "somewhat against", "strongly against"]
    assert [(a.written_for, a.written_against) for a in answers[5:]] == [
        (YES.id, None), (None, YES.id), (NO.id, None), (None, NO.id)]
    assert answers[5].text.startswith("YES") and answers[6].text.startswith("NO")
    assert pool.provenance["prompt_version"] == "answer-generate/1" and pool.personas == [YES, NO]
    assert len({json.dumps(c) for c in writer.calls}) == 9


# --- the command line against vLLM-shaped responses -----------------------------------------------


@contextmanager
def vllm_shaped_server(reject_json_schema: bool = False) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback server that answers /v1/chat/completions with the hand-written vLLM-shaped
    fixtures: the judge's rubric gets the verdict, its pairwise question the preference, anything
    else the answer (or, with ``reject_json_schema``, a request with a JSON schema gets HTTP 400)."""
    requests: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append(body)
            user = body["messages"][-1]["content"] if body["messages"] else ""
            if reject_json_schema and "response_format" in body:
                fx = vllm_chat("error_400")
            elif "Answer A:" in user:
                fx = vllm_chat("preference")
            elif "How well does this answer represent" in user:
                fx = vllm_chat("verdict")
            else:
                fx = vllm_chat("answer")
            data = json.dumps(fx["response"]).encode()
            self.send_response(fx["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()
        t.join(10)


def test_the_generation_command_on_overtonbench_rows_against_a_vllm_shaped_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_helpers import cli_env

    from steerkit.cli import main

    cli_env(tmp_path, monkeypatch)
    data = _write_csv(tmp_path / "rows.csv", _overton_rows())
    out = tmp_path / "out"
    with vllm_shaped_server(reject_json_schema=True) as (url, requests):
        rc = main(["eval", "--task", "generation", "--dataset", "overtonbench", "--data", str(data),
                   "--persona", "Democrat", "--persona", "Republican", "--chat-base-url", url,
                   "--chat-model", "Qwen/Qwen2.5-7B-Instruct", "--judge-base-url", url, "--judge-model", "judge-model",
                   "--search-fraction", "0.5", "--max-iterations", "4", "--perturbations", "1", "--out", str(out),
                   "--no-progress"])
    assert rc == 0
    d = json.loads((out / "report.json").read_text())
    assert d["task"] == "generation" and d["personas"] == ["polparty/democrat", "polparty/republican"]
    assert d["conditions"] == ["zero_shot", "icm", "gold", "random", "accuracy_matched"]
    assert d["provenance"]["chat_model"] == "Qwen/Qwen2.5-7B-Instruct" and d["provenance"]["judge_model"] == "judge-model"
    # the fixtures' judge says 4 to everything and "A" to every pair: its self-check fails, and the report says so
    assert d["judge"]["self_check"]["passed"] is False and d["judge"]["scores_meaningful"] is False
    assert any("mean nothing" in n for n in d["notes"])
    assert d["summary"]["zero_shot"]["per_persona"]["polparty/democrat"]["mean"] == 4.0
    # a server that rejects JSON-schema output got one such request, then plain ones
    judged = [r for r in requests if r["model"] == "judge-model"]
    assert judged and [("response_format" in r) for r in judged].count(True) == 1
    assert all(r["temperature"] == 0.0 for r in judged)
    answered = [r for r in requests if r["model"] == "Qwen/Qwen2.5-7B-Instruct"]
    assert any("Persona (U.S. political affiliation): Democrat." in r["messages"][0]["content"] for r in answered)
    lines = (out / "answers.jsonl").read_text().splitlines()
    assert len(lines) == len(d["questions"]) and json.loads(lines[0])["answer"].startswith("Colleges should keep")
    assert (out / "representation_by_persona.png").read_bytes()[:4] == b"\x89PNG"
    assert "FAILED its self-check" in (out / "report.md").read_text()


def test_the_generation_command_writes_candidate_answers_for_a_questions_only_pool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import cli_env

    from steerkit.cli import main

    cli_env(tmp_path, monkeypatch)
    data = tmp_path / "questions.jsonl"
    data.write_text("\n".join(json.dumps({"id": f"q{i}", "question": f"Should town {i} build a park?"}) for i in range(3)) + "\n")
    out = tmp_path / "out"
    with vllm_shaped_server() as (url, requests):
        rc = main(["eval", "--task", "generation", "--dataset", "answers", "--data", str(data), "--persona-name", "Park lovers",
                   "--chat-base-url", url, "--chat-model", "Qwen/Qwen2.5-7B-Instruct", "--conditions", "zero_shot,random",
                   "--out", str(out), "--no-progress", "--no-plots", "--markdown"])
    assert rc == 0
    pool = read_answer_pool(out / "answer_pool.jsonl")
    assert [p.name for p in pool.personas] == ["Park lovers"] and all(len(q.answers) == 7 for q in pool.questions)
    md = capsys.readouterr().out
    assert md.startswith("| persona | zero-shot | random |") and "| Park lovers | 4.00" in md
    assert "model that wrote the answers" in md  # no judge given: the chat model judged, and that is said
    assert any(r.get("response_format") for r in requests)  # the judge asked for JSON-schema output

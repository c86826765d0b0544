"""The generation report a person reads (issue 19 item 4): one self-contained HTML file, rendered
in a real browser (Debian's ``chromium``, headless) and checked for what a reader sees: the table
values, both answers side by side, the judge's scores, the examples, and the plain warnings.
Results come from the generation protocol run on *fake* chat models and judges."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from steerkit.evaluation import (
    Answer,
    AnswerPool,
    AnswerQuestion,
    GenerationConfig,
    PoolPersona,
    run_generation_eval,
)
from steerkit.evaluation.report import render_html, write_html_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium: the HTML report is not checked in a browser "
                                                             "(apt-get install chromium)")

GREEN = PoolPersona(id="test/green", name="Greens", label="Green", description="People who want more parks.")


class FakeWriter:
    """A *fake* chat model that repeats the first example it was shown, or says it is unsure;
    the answers carry markup, which the page must show as text."""

    def __init__(self, model: str = "fake-writer") -> None:
        self.model = model

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=None, json_schema=None) -> str:
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        shown = re.findall(r"Representative answer: (.*)", system)
        question = messages[-1]["content"].split("\n\n")[0]
        return f"STEERED <b>{shown[0]}</b> ({question})" if shown else f"UNSTEERED: I am not sure ({question})."


class FakeJudge:
    """A *fake* judge: 5 for a steered answer that says YES, 2 for an unsure one; prefers YES."""

    def __init__(self, model: str = "fake-judge") -> None:
        self.model = model

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=None, json_schema=None) -> str:
        user = messages[1]["content"]
        if "Answer A:" in user:
            a = user.split("Answer A:", 1)[1].split("Answer B:", 1)[0]
            return json.dumps({"reason": "fake", "better": "A" if "YES" in a else "B"})
        answer = user.split("Answer:", 1)[1]
        return json.dumps({"reason": "it says YES" if "YES" in answer else "it hedges", "score": 5 if "YES" in answer else 2})


class BiasedFakeJudge:
    """A *fake* judge that always prefers A and scores 3: it fails its self-check."""

    model = "fake-biased-judge"

    async def complete(self, messages, *, max_tokens, temperature=0.0, seed=None, json_schema=None) -> str:
        return '{"reason": "x", "better": "A"}' if "Answer A:" in messages[1]["content"] else '{"reason": "x", "score": 3}'


def _pool(n: int = 8) -> AnswerPool:
    qs = [AnswerQuestion(id=f"q{i}", question=f"Should town {i} build a park?", answers=[
        Answer(id="yes", text=f"YES, town {i} needs the park.", gold={GREEN.id: True}, ratings={GREEN.id: 4.7}),
        Answer(id="no", text=f"NO, town {i} has enough parks.", gold={GREEN.id: False}, ratings={GREEN.id: 1.3}),
    ]) for i in range(n)]
    return AnswerPool(personas=[GREEN], questions=qs)


CFG = GenerationConfig(conditions=("zero_shot", "gold", "inverted"), k=2, bootstrap=100, self_check_pairs=4)


async def _results(tmp_path: Path, judge: Any, writer: Any = None) -> dict[str, Any]:
    report = await run_generation_eval(_pool(), writer or FakeWriter(), judge, CFG, cache_dir=tmp_path / "cache")
    return json.loads(json.dumps(report.data))  # as report.json holds it


class _Resources(HTMLParser):
    """Every src/href attribute and every <script>/<link> of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.refs += [v or "" for k, v in attrs if k in ("src", "href")]


# --- the page's content, without a browser ----------------------------------------------------------


async def test_the_page_is_self_contained(tmp_path: Path) -> None:
    page = render_html(await _results(tmp_path, FakeJudge()))
    res = _Resources()
    res.feed(page)
    assert res.refs and all(r.startswith("data:image/png;base64,") for r in res.refs)  # the plots, inline
    assert "script" not in res.tags and "link" not in res.tags and "<style>" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)


async def test_model_text_is_escaped(tmp_path: Path) -> None:
    page = render_html(await _results(tmp_path, FakeJudge()))
    assert "STEERED &lt;b&gt;YES" in page and "<b>YES" not in page


async def test_results_that_are_not_generation_results_are_refused(tmp_path: Path) -> None:
    from steerkit.errors import UserError

    with pytest.raises(UserError, match="--task generation"):
        render_html({"task": "classification"})


async def test_without_matplotlib_the_page_says_why_it_has_no_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import steerkit.evaluation.generation as gen
    from steerkit.errors import UserError

    def no_matplotlib(*a: Any, **kw: Any) -> None:
        raise UserError("plots need matplotlib", hint="pip install 'steerkit[eval]' or pass --no-plots")

    monkeypatch.setattr(gen, "write_generation_plots", no_matplotlib)
    page = render_html(await _results(tmp_path, FakeJudge()))
    assert "No plots: plots need matplotlib" in page and "data:image/png" not in page


# --- in a real browser --------------------------------------------------------------------------------

#: Appended to a copy of the page (the report itself has no script): once loaded, what a reader
#: sees (``innerText`` leaves out what CSS hides), where the first question's cards are, whether the
#: plots decoded, and every resource the page fetched, written into the DOM for --dump-dom.
_PROBE = """<script>
window.addEventListener("load", () => {
  const cards = [...document.querySelectorAll("#q-1 .card")].map(c => {
    const r = c.getBoundingClientRect();
    return {condition: c.dataset.condition, left: r.left, top: r.top, width: r.width};
  });
  const out = {text: document.body.innerText, cards,
               images: [...document.images].map(i => i.naturalWidth),
               fetched: performance.getEntriesByType("resource").map(e => e.name)};
  const pre = document.createElement("pre");
  pre.id = "seen";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _seen(page: Path, tmp_path: Path) -> dict[str, Any]:
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", "--virtual-time-budget=10000",
         "--dump-dom", probe.as_uri()],
        check=False, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'<pre id="seen">(.*?)</pre>', proc.stdout, re.DOTALL)
    assert m is not None, "the page did not finish loading: " + proc.stdout[-500:]
    import html

    return json.loads(html.unescape(m.group(1)))


@needs_chromium
async def test_a_reader_sees_the_table_both_answers_the_scores_and_the_examples(tmp_path: Path) -> None:
    data = await _results(tmp_path, FakeJudge())
    page = write_html_report(data, tmp_path / "report.html")
    seen = _seen(page, tmp_path)
    text = " ".join(seen["text"].split())
    # the table's values, as the results hold them
    for c, title in (("zero_shot", "zero-shot"), ("gold", "gold"), ("inverted", "inverted")):
        cell = data["summary"][c]["per_persona"][GREEN.id]
        assert title in text and f"{cell['mean']:.2f} ± {cell['se']:.2f}" in text
    assert data["summary"]["gold"]["per_persona"][GREEN.id]["mean"] == 5.0
    delta = data["deltas"]["gold"][GREEN.id]
    assert f"{delta['mean']:+.2f} ± {delta['se']:.2f}" in text
    # the first question: the unsteered and the steered answers side by side, scores, examples
    first = data["questions"][0]["question_id"]
    rec = {r["condition"]: r for r in data["questions"] if r["question_id"] == first}
    for r in rec.values():
        assert " ".join(r["answer"].split()) in text  # both answers, as text (markup shown, not applied)
    assert "<b>YES" in text
    assert "unsteered (zero-shot)" in text and "steered: gold" in text and "steered: inverted" in text
    assert "judge: 2 / 5" in text and "judge: 5 / 5" in text
    assert all(ex["answer"] in text for ex in rec["gold"]["examples"]) and rec["gold"]["examples"]
    assert f"{len(rec['gold']['examples'])} examples injected" in text
    cards = {c["condition"]: c for c in seen["cards"]}
    assert set(cards) == {"zero_shot", "gold", "inverted"}
    assert cards["zero_shot"]["top"] == cards["gold"]["top"] == cards["inverted"]["top"]  # one row
    assert cards["zero_shot"]["left"] < cards["gold"]["left"] < cards["inverted"]["left"]  # side by side
    # the plots decoded, nothing was fetched, and the self-check passed and says so
    assert len(seen["images"]) == 2 and all(w > 0 for w in seen["images"])
    assert [u for u in seen["fetched"] if not u.startswith("data:")] == []
    assert "The judge passed its self-check" in text and "FAILED" not in text


@needs_chromium
async def test_a_reader_is_told_when_the_judge_failed_and_the_models_are_too_small(tmp_path: Path) -> None:
    data = await _results(tmp_path, BiasedFakeJudge(), FakeWriter(model="SmolLM2-135M-Instruct"))
    assert data["judge"]["scores_meaningful"] is False
    seen = _seen(write_html_report(data, tmp_path / "report.html"), tmp_path)
    text = " ".join(seen["text"].split())
    assert "The judge FAILED its self-check" in text and "its representation scores mean nothing" in text
    assert "No effect is expected from 135M–270M models: SmolLM2-135M-Instruct is far too small" in text
    assert text.index("FAILED its self-check") < text.index("Representation score")  # said first
    assert "passed NO" in text


@needs_chromium
async def test_an_old_report_without_notes_still_warns(tmp_path: Path) -> None:
    data = await _results(tmp_path, BiasedFakeJudge(), FakeWriter(model="gemma-3-270m-it"))
    data["notes"] = []  # results written before the notes existed
    text = " ".join(_seen(write_html_report(data, tmp_path / "r.html"), tmp_path)["text"].split())
    assert "The judge FAILED its self-check" in text and "gemma-3-270m-it is far too small" in text


# --- the command ------------------------------------------------------------------------------------------


def test_eval_writes_the_report_with_the_report_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``steerkit eval --task generation --report``: the chat model and the judge behind one *fake*
    OpenAI-compatible server (httpx.MockTransport), the pool from a JSONL file."""
    import httpx
    import openai
    from cli_helpers import cli_env

    from steerkit._runtime import Runtime
    from steerkit.cli import main
    from steerkit.evaluation import write_answer_pool

    cli_env(tmp_path, monkeypatch)
    writer, judge = FakeWriter(), FakeJudge()

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        msgs = body["messages"]
        who = judge if msgs[0]["content"].startswith("You judge") else writer
        text = await who.complete(msgs, max_tokens=body["max_tokens"])
        return httpx.Response(200, json={"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                                         "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": text}}]})

    def chat_client(self: Runtime) -> openai.AsyncOpenAI:
        base_url, _ = self.require_chat()
        return openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0,
                                  http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))

    monkeypatch.setattr(Runtime, "chat_client", chat_client)
    write_answer_pool(_pool(), tmp_path / "pool.jsonl")
    page = tmp_path / "out" / "report.html"
    argv = ["eval", "--task", "generation", "--dataset", "answers", "--data", str(tmp_path / "pool.jsonl"),
            "--conditions", "zero_shot,gold,inverted", "--k", "2", "--self-check-pairs", "4", "--no-progress",
            "--chat-base-url", "http://fake-chat.local/v1", "--chat-model", "fake-chat", "--out", str(tmp_path / "out"),
            "--report", str(page), "--no-plots"]
    assert main(argv) == 0, capsys.readouterr().err
    assert f"HTML report: {page}" in capsys.readouterr().err
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    html_text = page.read_text(encoding="utf-8")
    assert html_text.count("data:image/png;base64,") == 2  # --no-plots writes no files; the page still has its plots
    assert not list((tmp_path / "out").glob("*.png"))
    gold = data["summary"]["gold"]["per_persona"][GREEN.id]
    assert f"{gold['mean']:.2f} ± {gold['se']:.2f}" in html_text
    assert html_text.count('class="card unsteered"') == len(data["split"]["test_questions"])
    assert "The judge is the model that wrote the answers (fake-chat)" in html_text
    # the classification task has no HTML report
    assert main(["eval", "--dataset", "jsonl", "--data", str(tmp_path / "pool.jsonl"), "--report", str(page)]) == 2
    assert "--report renders --task generation results" in capsys.readouterr().err

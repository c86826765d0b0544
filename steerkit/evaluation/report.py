"""The generation results as one HTML page a person reads (``steerkit eval --task generation
--report report.html``).

One self-contained file: inline CSS, the plots as base64 PNGs, no script and no external URL, so
it can be mailed or attached to an issue. From the top: what can be read from it (a judge that
failed its self-check, toy-sized models: said first, in words), the representation table (the
paper's Table 8 shape) and each condition's change against zero-shot, the judge's self-check, the
plots, then per test question the unsteered (zero-shot) and the steered answers side by side, each
with the judge's score and reason and the examples that were injected. Rendered from the results
JSON alone (`steerkit.evaluation.generation.GenerationReport.data`), so an old ``report.json``
can be rendered again. Templates by Jinja2 with autoescaping: every answer is model-written text.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from steerkit.errors import UserError

__all__ = ["render_html", "write_html_report"]


def _jinja() -> Any:
    try:
        import jinja2
    except ImportError:
        raise UserError("the HTML report needs Jinja2", hint="pip install 'steerkit[eval]'") from None
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, digits=2: "—" if v is None else f"{v:.{digits}f}"
    env.filters["pct"] = lambda v: "—" if v is None else f"{v:.0%}"
    return env


def _plots(data: Mapping[str, Any], plots: Sequence[str | Path] | None) -> tuple[list[dict[str, str]], str | None]:
    """(embedded plots, why there are none): the given PNG files, else drawn from ``data``."""
    from steerkit.evaluation.generation import GenerationReport, write_generation_plots

    if plots:
        files = [Path(p) for p in plots]
        return [_embed(f) for f in files], None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return [_embed(f) for f in write_generation_plots(GenerationReport(dict(data)), tmp)], None
    except UserError as e:  # no matplotlib: the report without plots, saying so
        return [], f"{e} ({e.hint})" if getattr(e, "hint", None) else str(e)


def _embed(path: Path) -> dict[str, str]:
    return {"name": path.stem.replace("_", " "), "src": "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()}


def _warnings(data: Mapping[str, Any]) -> list[str]:
    """What a reader must see first: the run's own notes, and (for results written without them)
    a failed judge and toy-sized models, said in words."""
    from steerkit.evaluation.generation import TOY_MODEL_NOTE, is_toy_model

    notes = [str(n) for n in data.get("notes", [])]
    check = data["judge"]["self_check"]
    if not check.get("passed") and check.get("summary") and check["summary"] not in notes:
        notes.insert(0, check["summary"])
    prov = data.get("provenance", {})
    toy = sorted({m for m in (prov.get("chat_model"), prov.get("judge_model"), prov.get("model")) if m and is_toy_model(m)})
    if toy and not any("No effect is expected" in n for n in notes):
        notes.append(TOY_MODEL_NOTE.format(models=", ".join(toy), are="is" if len(toy) == 1 else "are"))
    return notes


def _questions(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per persona and test question: one card per condition (zero-shot, the unsteered answer,
    first), the first perturbation's answer and the mean score over all of them."""
    order = {c: k for k, c in enumerate(data["conditions"])}
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    questions: dict[tuple[str, str], str] = {}
    for r in data["questions"]:
        key = (r["persona"], r["question_id"])
        questions[key] = r["question"]
        groups.setdefault(key, {}).setdefault(r["condition"], []).append(r)
    out = []
    for (pid, qid), by_cond in groups.items():
        cards = []
        for cond in sorted(by_cond, key=lambda c: order.get(c, len(order))):
            runs = sorted(by_cond[cond], key=lambda r: r.get("perturbation", 0))
            scores = [r["score"] for r in runs if r["score"] is not None]
            cards.append({"condition": cond, "steered": cond != "zero_shot", "record": runs[0], "runs": len(runs),
                          "mean": sum(scores) / len(scores) if scores else None})
        out.append({"persona": pid, "label": data["persona_labels"].get(pid, pid), "question_id": qid,
                    "question": questions[(pid, qid)], "cards": cards})
    return out


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px; padding: 1.5em; color: #1d1d1f; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.meta { color: #555; font-size: .9em; }
.warning { border: 2px solid #b00020; background: #fdecee; color: #5f0010; padding: .8em 1em; margin: 1em 0; border-radius: 6px; font-weight: 600; }
.ok { border: 2px solid #1b7f3b; background: #e9f7ee; padding: .8em 1em; margin: 1em 0; border-radius: 6px; }
table { border-collapse: collapse; margin: .8em 0; } th, td { border: 1px solid #ccc; padding: .35em .7em; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f4f4f6; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
.question { margin: 1.4em 0 2em; } .question h3 { font-size: 1.05em; margin: .2em 0 .6em; }
.side-by-side { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: .8em; align-items: start; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: .7em .9em; background: #fff; }
.card.unsteered { border-color: #3a6fb0; } .card.steered { border-color: #1b7f3b; }
.card h4 { margin: 0 0 .4em; font-size: .95em; } .answer { white-space: pre-wrap; margin: .4em 0; }
.score { display: inline-block; font-weight: 700; padding: .1em .5em; border-radius: 4px; background: #eef; }
.score.missing { background: #fde2c4; } .reason { color: #555; font-size: .88em; }
.examples { font-size: .88em; color: #333; margin-top: .5em; } .examples ol { padding-left: 1.4em; margin: .3em 0; }
.examples li { margin-bottom: .3em; } .muted { color: #777; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">chat model <b>{{ prov.chat_model }}</b> · judge <b>{{ prov.judge_model }}</b>{% if prov.model %} · search model <b>{{ prov.model }}</b>{% endif %}
 · rubric {{ data.scale.rubric_version }} · steerkit {{ prov.library_version }} · {{ prov.finished_at }}</p>

{% for w in warnings %}
<div class="warning" role="alert">{{ w }}</div>
{% endfor %}
{% if check.passed %}
<div class="ok">{{ check.summary }}</div>
{% endif %}

<h2>Representation score</h2>
<p>How well each condition's answers represent the persona, {{ data.scale.min }}–{{ data.scale.max }} (the judge's rating:
{% for k, v in data.scale.levels.items() %}{{ k }} = {{ v }}{% if not loop.last %}; {% endif %}{% endfor %}),
mean ± bootstrap standard error over {{ n_test }} test questions. {{ data.scale.missing|capitalize }}.</p>
<table id="scores">
<thead><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody>
</table>
{% if deltas %}
<p>Change against zero-shot, paired by question (mean ± bootstrap SE):</p>
<table id="deltas">
<thead><tr><th>persona</th>{% for c in deltas %}<th>{{ titles.get(c, c) }} − zero-shot</th>{% endfor %}</tr></thead>
<tbody>{% for pid in data.personas %}<tr><td>{{ data.persona_labels[pid] }}</td>
{% for c, per in deltas.items() %}<td>{% if pid in per %}{{ "%+.2f"|format(per[pid].mean) }}{% if per[pid].se is not none %} ± {{ per[pid].se|num }}{% endif %}{% else %}—{% endif %}</td>{% endfor %}
</tr>{% endfor %}</tbody>
</table>
{% endif %}
{% if data.icm_label_accuracy %}
<p>ICM label accuracy (the search answers' labels against gold): {% for pid, v in data.icm_label_accuracy.items() %}{{ data.persona_labels[pid] }} {{ v|num }}{% if not loop.last %}, {% endif %}{% endfor %}.</p>
{% endif %}
{% for c, per in data.skipped.items() %}{% for pid, why in per.items() %}
<p class="muted">{{ titles.get(c, c) }} not run for {{ data.persona_labels.get(pid, pid) }}: {{ why }}.</p>
{% endfor %}{% endfor %}

<h2>The judge's self-check</h2>
<p>Run before any answer was scored, on {{ check.pairs }} answer pairs whose ranking for the persona is known.</p>
<table id="self-check">
<thead><tr><th>measure</th><th>value</th><th>needed</th></tr></thead>
<tbody>
<tr><td>score agreement (the better answer scored higher)</td><td>{{ check.score_agreement|pct }}</td><td>{{ check.thresholds.min_agreement|pct }}</td></tr>
<tr><td>position-swap consistency</td><td>{{ check.position_consistency|pct }}</td><td>{{ check.thresholds.min_consistency|pct }}</td></tr>
<tr><td>pairwise agreement (picks the better answer in both orders)</td><td>{{ check.pairwise_agreement|pct }}</td><td>{{ check.thresholds.min_agreement|pct }}</td></tr>
<tr><td>verdicts that could not be parsed</td><td>{{ check.missing_share|pct }}</td><td>at most {{ check.thresholds.max_missing|pct }}</td></tr>
<tr><td>passed</td><td>{{ "yes" if check.passed else "NO" }}</td><td></td></tr>
</tbody>
</table>
<p class="meta">judge {{ data.judge.model }}: {{ data.judge.judgements }} judgements, {{ data.judge.malformed_replies }} malformed replies, {{ data.judge.missing }} missing verdicts.</p>

<h2>Plots</h2>
{% for p in plots %}
<figure><img alt="{{ p.name }}" src="{{ p.src }}"><figcaption>{{ p.name }}</figcaption></figure>
{% else %}
<p class="muted">No plots: {{ no_plots or "none were drawn" }}.</p>
{% endfor %}

<h2>The answers, question by question</h2>
<p>Per test question, the unsteered answer (zero-shot: the persona, no examples) beside each steered one, with the
judge's score and the examples injected into its prompt.{% if not check.passed %} <b>The judge failed its self-check:
these scores mean nothing.</b>{% endif %}</p>
{% for q in questions %}
<section class="question" id="q-{{ loop.index }}">
<h3>{{ q.label }} · {{ q.question }}</h3>
<div class="side-by-side">
{% for card in q.cards %}
<div class="card {{ 'steered' if card.steered else 'unsteered' }}" data-condition="{{ card.condition }}">
<h4>{{ "steered: " ~ titles.get(card.condition, card.condition) if card.steered else "unsteered (zero-shot)" }}</h4>
{% if card.record.score is not none %}<span class="score">judge: {{ card.record.score }} / {{ data.scale.max }}</span>
{% else %}<span class="score missing">judge: no verdict (left out, not scored 0)</span>{% endif %}
{% if card.runs > 1 %}<span class="muted"> first of {{ card.runs }} perturbations; mean over them {{ card.mean|num }}</span>{% endif %}
<div class="answer">{{ card.record.answer or "(no answer)" }}</div>
{% if card.record.judge_reason %}<div class="reason">judge's reason: {{ card.record.judge_reason }}</div>{% endif %}
{% if card.steered %}
<details class="examples" open><summary>{{ card.record.examples|length }} example{{ "" if card.record.examples|length == 1 else "s" }} injected</summary>
{% if card.record.examples %}<ol>{% for ex in card.record.examples %}<li><i>{{ ex.question }}</i> — {{ ex.answer }}</li>{% endfor %}</ol>
{% else %}<p class="muted">none: this labelling marked no search answer representative.</p>{% endif %}
</details>
{% endif %}
</div>
{% endfor %}
</div>
</section>
{% endfor %}

<h2>Provenance</h2>
<table id="provenance"><tbody>
{% for k in ["library_version", "chat_model", "judge_model", "model", "backend", "rubric_version", "answer_prompt_version", "pool_hash", "started_at", "finished_at", "python"] %}
{% if prov.get(k) is not none %}<tr><td>{{ k }}</td><td>{{ prov[k] }}</td></tr>{% endif %}
{% endfor %}
<tr><td>test questions</td><td>{{ n_test }}</td></tr>
<tr><td>time</td><td>{{ data.usage.wall_seconds }} s ({{ data.usage.seconds_per_question }} s per question)</td></tr>
</tbody></table>
</body>
</html>
"""


def render_html(data: Mapping[str, Any], *, plots: Sequence[str | Path] | None = None, title: str | None = None) -> str:
    """The report page for one generation run's results (``report.json``'s content). ``plots``:
    PNG files to embed (default: drawn from ``data``; without matplotlib the page says so)."""
    from steerkit.evaluation.generation import _TITLES, GenerationReport

    if data.get("task") != "generation":
        raise UserError("the HTML report renders `steerkit eval --task generation` results",
                        hint="pass the report.json that --task generation wrote")
    rep = GenerationReport(dict(data))
    embedded, no_plots = _plots(data, plots)
    prov = data.get("provenance", {})
    return _jinja().from_string(_TEMPLATE).render(
        title=title or f"Does it steer answers? {', '.join(data['persona_labels'].values())}",
        data=data, prov=prov, check=data["judge"]["self_check"], warnings=_warnings(data), header=rep.header(),
        rows=rep.table_rows(), deltas=data.get("deltas", {}), titles=_TITLES, plots=embedded, no_plots=no_plots,
        questions=_questions(data), n_test=len(data["split"]["test_questions"]),
    )


def write_html_report(report: Any, path: str | Path, *, plots: Sequence[str | Path] | None = None,
                      title: str | None = None) -> Path:
    """Write `render_html` of ``report`` (a `GenerationReport` or its ``data``) to ``path``."""
    data = getattr(report, "data", report)
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data, plots=plots, title=title), encoding="utf-8")
    return out

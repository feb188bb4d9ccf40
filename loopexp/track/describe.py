"""What a run says in words and numbers: its name, summary, description, params and metrics.

Marketers read MLflow's runs table without clicking, so a run carries a name that says what
happened (``#2 SHIP personal +16%``), a one-line summary in words, and headline metrics named the
same in every iteration (``decision.rel_lift``, ``control.<metric>``, ``best.<metric>``) so charts
compare iterations. Plain functions of the results and the spec: no MLflow here.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from loopexp.analysis.results import ExperimentResults, Status
from loopexp.design.spec import ExperimentSpec
from loopexp.report.plain import how_sure

_STATUS_WORDS = {
    Status.SHIP: "SHIP",
    Status.KEEP_TESTING: "KEEP TESTING",
    Status.NO_DIFFERENCE: "NO DIFF",
    Status.GUARDRAIL_VETO: "VETO",
    Status.INVALID_SRM: "BAD SPLIT",
}

_SUMMARY_WORDS = {
    Status.SHIP: "SHIP",
    Status.KEEP_TESTING: "KEEP TESTING",
    Status.NO_DIFFERENCE: "NO DIFFERENCE",
    Status.GUARDRAIL_VETO: "GUARDRAIL VETO",
    Status.INVALID_SRM: "INVALID SPLIT (sample-ratio mismatch)",
}

#: Short words for metrics in run names (the default name column shows ~40 characters).
_METRIC_WORDS = {
    "click_rate": "clicks",
    "click_to_open_rate": "CTOR",
    "open_rate": "opens",
    "open_rate_raw": "raw opens",
    "conversion_rate": "conversions",
    "unsubscribe_rate": "unsubscribes",
    "complaint_rate": "complaints",
    "delivery_rate": "deliveries",
    "revenue_per_delivered": "revenue",
}


def spec_params(spec: ExperimentSpec) -> dict[str, str]:
    """Flat, readable run params from a spec."""
    params = {
        "name": spec.name,
        "campaign": spec.campaign,
        "iteration": str(spec.iteration),
        "test_type": spec.test_type.value,
        "salt": spec.salt,
        "control": spec.control,
        "variants": ",".join(v.id for v in spec.variants),
        "primary_metric": spec.primary_metric,
        "guardrails": ",".join(
            f"{g.metric}<=+{g.max_relative_increase:g}" for g in spec.guardrails
        ),
        "alpha": f"{spec.decision.alpha:g}",
        "correction": spec.decision.correction,
        "mde_relative": f"{spec.decision.mde_relative:g}",
        "holdout": f"{spec.audience.holdout:g}",
        "segments": ",".join(s.value for s in spec.audience.segments),
        "parent_run_id": spec.parent_run_id or "",
    }
    for v in spec.variants:
        params[f"variant.{v.id}.weight"] = f"{v.weight:g}"
        for field in ("subject", "content", "send_time"):
            value = getattr(v, field)
            if value:
                params[f"variant.{v.id}.{field}"] = value[:500]
    return params


#: Names of the headline metrics, the same in every iteration (charts compare iterations).
HEADLINE_PREFIXES = ("decision.", "control.", "best.")


def headline_metrics(results: ExperimentResults) -> dict[str, float]:
    """Metrics named the same in every iteration: the decision's figures, control and best.

    ``best`` is the winner when there is one, else the most promising challenger.
    """
    d = results.decision
    out: dict[str, float] = {"decision.shipped": float(d.status == Status.SHIP)}
    for field in ("rel_lift", "rel_ci_low", "rel_ci_high", "p_value_adjusted", "prob_beat_control"):
        value = getattr(d, field)
        if value is not None and math.isfinite(value):
            out[f"decision.{field}"] = value
    # What all mailed arms added over the no-mail holdout, named the same in every iteration.
    for r in results.incrementality:
        if r.arm == "all_mailed" and r.metric == "revenue_per_assigned":
            for field, name in (
                ("incremental_total", "holdout.revenue_added"),
                ("incremental_ci_low", "holdout.revenue_added_low"),
                ("incremental_ci_high", "holdout.revenue_added_high"),
            ):
                value = getattr(r, field)
                if value is not None and math.isfinite(value):
                    out[name] = value
    by_id = {v.id: v for v in results.variants}
    control = next((v for v in results.variants if v.is_control), None)
    for label, variant in (("control", control), ("best", by_id.get(d.best_challenger or ""))):
        if variant is None:
            continue
        out[f"{label}.n"] = variant.n
        for name, mv in variant.metrics.items():
            if mv.value is not None and math.isfinite(mv.value):
                out[f"{label}.{name}"] = mv.value
    return out


#: Fields of the pooled "all mailed vs no-mail holdout" comparison kept as metrics, per metric.
_HOLDOUT_FIELDS = (
    "estimate",
    "rel_lift",
    "p_value_adjusted",
    "incremental_total",
    "incremental_ci_low",
    "incremental_ci_high",
)


def results_metrics(results: ExperimentResults) -> dict[str, float]:
    """Numeric run metrics, every name meaningful across iterations (a few dozen at most).

    Only role names are metrics: the decision's figures, ``control.*``, ``best.*``, the pooled
    holdout comparison (``holdout.<metric>.all_mailed.*``), the split check and the data counts.
    Names that change with the variants (``personal.click_rate``, one per comparison or segment)
    would leave most cells empty when iterations are compared and made hundreds of metrics: that
    detail is logged as tables (``tables/*.json``, see :func:`detail_tables`) instead.
    """
    out: dict[str, float] = {
        "srm_p_value": results.srm.p_value,
        "recipients": results.data.recipients,
        "events": results.data.events,
        "quarantined": results.data.quarantined,
    }
    for r in results.incrementality:
        if r.arm != "all_mailed":
            continue
        for field in _HOLDOUT_FIELDS:
            value = getattr(r, field)
            if value is not None and math.isfinite(value):
                out[f"holdout.{r.metric}.all_mailed.{field}"] = value
    out.update(headline_metrics(results))
    return out


def detail_tables(results: ExperimentResults) -> dict[str, pd.DataFrame]:
    """Per-variant, per-comparison, per-segment and per-arm figures as tables (non-empty only).

    Logged as ``tables/<name>.json`` artifacts: MLflow shows them on the run page and
    ``mlflow.load_table`` reads them back across runs, without a metric per variant.
    """
    tables = {
        "variants": results.variants_frame().reset_index(names="variant"),
        "comparisons": results.comparisons_frame(),
        "holdout": results.incrementality_frame(),
        "segment_variants": pd.DataFrame(
            [
                {"segment": s.segment, "variant": v.id, "n": v.n}
                | {m: mv.value for m, mv in v.metrics.items()}
                for s in results.segments
                for v in s.variants
            ]
        ),
        "segment_comparisons": pd.DataFrame(
            [
                {"segment": s.segment, **c.model_dump()}
                for s in results.segments
                for c in s.comparisons
            ]
        ),
    }
    return {name: frame for name, frame in tables.items() if not frame.empty}


def lift_text(results: ExperimentResults) -> str:
    """The decision's lift with its interval in words, for a runs-table column.

    ``+16.2% (95% CI +8.1% to +24.0%)``; ``n/a`` when no challenger could be compared.
    """
    d = results.decision
    if d.rel_lift is None or not math.isfinite(d.rel_lift):
        return "n/a"
    text = f"{d.rel_lift:+.1%}"
    if d.rel_ci_low is not None and d.rel_ci_high is not None:
        level = f"{100 * (d.ci_level or 0.95):.4g}%"
        text += f" ({level} CI {d.rel_ci_low:+.1%} to {d.rel_ci_high:+.1%})"
    return text


def markdown_text(text: str) -> str:
    """``text`` as literal Markdown: one line, every markup character escaped.

    Names and reasons come from specs and data: a newline could forge a "Decision: ship" line, and
    ``<script>``, links or emphasis would be rendered by the MLflow UI.
    """
    one_line = re.sub(r"[\x00-\x1f\x7f]+", " ", str(text))
    escaped = re.sub(r"([\\`*_{}\[\]()#+\-.!|~])", r"\\\1", one_line)
    # HTML's own characters as entities: every Markdown renderer leaves those as text.
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str, limit: int = 120) -> str:
    """One line of text from a spec or data (whitespace collapsed), cut at ``limit`` characters.

    Plain text, for tags and names; Markdown output passes it through :func:`markdown_text`.
    """
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _words(spec: ExperimentSpec, variant_id: str | None) -> str:
    """What a variant is, in words: its subject line, content or send time."""
    variant = next((v for v in spec.variants if v.id == variant_id), None)
    if variant is None:
        return ""
    field = {"subject_line": "subject", "content": "content", "send_time": "send_time"}.get(
        spec.test_type.value, "subject"
    )
    value = getattr(variant, field, None) or variant.subject or variant.content or variant.send_time
    return str(value) if value else ""


def _metric_word(metric: str) -> str:
    return _METRIC_WORDS.get(metric, metric.removesuffix("_rate").replace("_", " "))


def run_name(results: ExperimentResults) -> str:
    """``#2 SHIP personal +16%``: what happened, decision first, short enough for the name column.

    MLflow 3's runs table shows about 23 characters of a name (146 px): the iteration and the
    decision always fit; the variant is cut to 10 characters; the metric is in the summary.
    """
    d = results.decision
    parts = [f"#{results.experiment.iteration}", _STATUS_WORDS.get(d.status, d.status.value)]
    who = d.winner or d.best_challenger
    if who:
        parts.append(who if len(who) <= 10 else who[:9] + "…")
        if d.rel_lift is not None and math.isfinite(d.rel_lift):
            parts.append(f"{d.rel_lift:+.0%}" if abs(d.rel_lift) >= 0.1 else f"{d.rel_lift:+.1%}")
    return " ".join(parts)


def summary_line(results: ExperimentResults, spec: ExperimentSpec) -> str:
    """One line in words for a marketer.

    It names the decision, the winning variant's subject line (or content / send time), the lift
    with its interval and certainty, and the guardrails.
    """
    d = results.decision
    status = _SUMMARY_WORDS.get(d.status, d.status.value)
    who = d.winner or d.best_challenger
    metric = _metric_word(d.primary_metric)
    if who:
        words = _words(spec, who)
        role = "" if d.winner else "best so far: "
        text = f"{status}: {role}{_plain(who, 40)}" + (f" “{_plain(words)}”" if words else "")
        if d.rel_lift is not None and math.isfinite(d.rel_lift):
            text += f" {d.rel_lift:+.1%} {metric}"
            if d.rel_ci_low is not None and d.rel_ci_high is not None:
                level = f"{100 * (d.ci_level or 0.95):.4g}%"  # the level the decision's test used
                text += f" ({level} CI {d.rel_ci_low:+.1%} to {d.rel_ci_high:+.1%}"
                if d.prob_beat_control is not None:
                    text += f"; {how_sure(d.prob_beat_control)}"
                text += ")"
    elif d.before_final_read:
        text = f"{status}: outcomes still arriving, final read at {d.final_read_at}"
    else:
        text = f"{status}: no challenger could be compared on {metric}"
    failed = sorted(
        {f"{g.metric} ({g.variant})" for g in d.guardrails if not g.passed and not g.no_data}
    )
    no_data = sorted({g.metric for g in d.guardrails if g.no_data})
    if no_data:
        text += f"; no data on guardrails {', '.join(no_data)}"
    if failed:
        text += f"; guardrails broken: {', '.join(failed)}"
    elif any(g.passed for g in d.guardrails):
        text += (
            f"; guardrails ok ({', '.join(sorted({g.metric for g in d.guardrails if g.passed}))})"
        )
    return text + "."


def run_description(results: ExperimentResults, spec: ExperimentSpec | None = None) -> str:
    """Markdown for the run page (``mlflow.note.content``): the summary first, then the reasons."""
    d = results.decision
    winner = f", winner **{markdown_text(d.winner)}**" if d.winner else ""
    lines = [
        f"**{markdown_text(summary_line(results, spec))}**" if spec else "",
        "",
        f"## {markdown_text(results.experiment.name)}, iteration {results.experiment.iteration}",
        f"**Decision: {d.status.value}**" + winner,
        "",
        *[f"- {markdown_text(r)}" for r in d.reasons],
        "",
        f"Recipients {results.data.recipients:,}; events {results.data.events:,}; "
        f"quarantined {results.data.quarantined:,}; SRM p = {results.srm.p_value:.3g}.",
    ]
    return "\n".join(lines).lstrip()

"""The words a marketer reads: metrics, decisions and certainty without statistical terms.

``report.html`` (:func:`plain_report_html`), the closed-loop report and MLflow's one-line
summary say "clicks", not ``click_rate``; "no clear difference", not ``no_difference``;
percentages, not ``0.3951``; the subject line beside the variant id; and how sure we are as a
sentence ("better than the control in 97 of 100 plausible worlds"), never a certain "100 %".
Statistical terms (adjusted p-values, interval levels, sample-ratio checks) go to an appendix.
Every text from a spec or data is escaped.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

from loopexp.analysis.formatting import fmt_value
from loopexp.analysis.results import Status

if TYPE_CHECKING:
    from loopexp.analysis.results import Comparison, ExperimentResults
    from loopexp.design.spec import ExperimentSpec

#: Metrics in a marketer's words (a metric not listed: its name with spaces).
METRIC_WORDS = {
    "click_rate": "clicks",
    "click_to_open_rate": "clicks per open",
    "open_rate": "opens",
    "open_rate_raw": "opens (machine opens included)",
    "conversion_rate": "conversions",
    "unsubscribe_rate": "unsubscribes",
    "complaint_rate": "spam complaints",
    "delivery_rate": "deliveries",
    "revenue_per_delivered": "revenue per delivered email",
}

#: What the decision says to do, in words.
DECISION_WORDS = {
    Status.SHIP: "Send the winner",
    Status.KEEP_TESTING: "Keep testing: not clear yet",
    Status.NO_DIFFERENCE: "No clear difference",
    Status.GUARDRAIL_VETO: "Keep the current email: the challenger drove people away",
    Status.INVALID_SRM: "Don't use these numbers: the split of recipients went wrong",
}


def metric_words(metric: str) -> str:
    """``click_rate`` → "clicks"."""
    return METRIC_WORDS.get(metric, metric.replace("_", " "))


def decision_words(status: Status | str) -> str:
    """``no_difference`` → "No clear difference"."""
    try:
        return DECISION_WORDS[Status(status)]
    except ValueError:
        return str(status).replace("_", " ")


def how_sure(prob_better: float | None) -> str:
    """How sure, as a sentence: "better than the control in 97 of 100 plausible worlds".

    ``prob_better`` is the posterior probability that the challenger beats the control. It is an
    estimate: never "100 of 100" nor "0 of 100".
    """
    if prob_better is None or not math.isfinite(prob_better):
        return "how sure: not known"
    better = prob_better >= 0.5
    share = prob_better if better else 1 - prob_better
    count = "more than 99" if share > 0.99 else f"{min(round(100 * share), 99)}"
    side = "better" if better else "worse"
    return f"{side} than the control in {count} of 100 plausible worlds"


def subject_of(spec: ExperimentSpec | None, variant_id: str | None) -> str:
    """What a variant is, in words: its subject line (or content, send time); "" when unknown."""
    if spec is None or variant_id is None:
        return ""
    variant = next((v for v in spec.variants if v.id == variant_id), None)
    if variant is None:
        return ""
    field = {"content": "content", "send_time": "send_time"}.get(spec.test_type.value, "subject")
    value = getattr(variant, field, None) or variant.subject or variant.content or variant.send_time
    return " ".join(str(value).split()) if value else ""


def named(spec: ExperimentSpec | None, variant_id: str) -> str:
    """``personal (“{first_name}, we picked these…”)``: the id with its subject line."""
    words = subject_of(spec, variant_id)
    return f"{variant_id} (“{words}”)" if words else variant_id


def _range(low: float | None, high: float | None) -> str:
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "range not known"
    return f"likely between {low:+.1%} and {high:+.1%}"


def verdict(c: Comparison, alpha: float) -> str:
    """The verdict in words: better, worse or no clear difference (adjusted test, ``alpha``)."""
    if c.p_value_adjusted >= alpha or c.rel_lift is None:
        return "no clear difference"
    return "better" if c.rel_lift > 0 else "worse"


def headline(results: ExperimentResults, spec: ExperimentSpec | None = None) -> str:
    """The decision and its evidence in one or two plain sentences (not escaped)."""
    d = results.decision
    text = decision_words(d.status)
    who = d.winner or d.best_challenger
    if d.winner:
        text += f": {named(spec, d.winner)}"
    text += "."
    if who and d.rel_lift is not None and math.isfinite(d.rel_lift):
        role = "The winner" if d.winner else "The best challenger"
        if not d.winner:
            role += f", {named(spec, who)},"
        change = "more" if d.rel_lift >= 0 else "fewer"
        text += (
            f" {role} got {abs(d.rel_lift):.1%} {change} {metric_words(d.primary_metric)} than "
            f"the control ({_range(d.rel_ci_low, d.rel_ci_high)}); "
            f"{how_sure(d.prob_beat_control)}."
        )
    return text


def next_step(results: ExperimentResults, spec: ExperimentSpec | None = None) -> str:
    """What a marketer does next, in words (not escaped)."""
    d = results.decision
    vetoed = sorted({g.variant for g in d.guardrails if not g.passed})
    harmed = sorted({metric_words(g.metric) for g in d.guardrails if not g.passed})
    steps = {
        Status.SHIP: f"Use {named(spec, d.winner or '')} for everyone from now on: it becomes the "
        "email to beat in the next test. Think of one or two new ideas to test against it.",
        Status.KEEP_TESTING: "Change nothing yet: the difference is not clear. Send the test "
        "again (or to more people) before deciding.",
        Status.NO_DIFFERENCE: "Keep the current email: the challengers made no clear difference. "
        "Try a bolder idea next time (another offer, a different tone).",
        Status.GUARDRAIL_VETO: "Keep the current email. Don't reuse the approach of "
        f"{', '.join(vetoed) or 'the vetoed challenger'}: it raised {', '.join(harmed) or 'harm'}.",
        Status.INVALID_SRM: "Don't act on these numbers. Ask whoever sends the emails to check "
        "that each group was sent as planned, then run the test again.",
    }
    text = steps[d.status]
    if d.status != Status.GUARDRAIL_VETO and vetoed:
        text += f" Don't reuse the approach of {', '.join(vetoed)}: it raised {', '.join(harmed)}."
    return text


def value_words(metric: str, value: float | None) -> str:
    """A metric's value for people: a rate as a percentage, money or a count to 2 decimals."""
    text = fmt_value(metric, value)
    return text if value is None or text.endswith("%") else f"{value:,.2f}"


def versions_html(results: ExperimentResults, spec: ExperimentSpec | None = None) -> str:
    """How each version did: subject line, recipients and each metric as a percentage."""
    e = html.escape
    metrics = list(results.variants[0].metrics) if results.variants else []
    head = "".join(f"<th>{e(metric_words(m))}</th>" for m in metrics)
    rows = []
    for v in results.variants:
        role = " (control)" if v.is_control and v.id != "control" else ""
        cells = "".join(f"<td>{e(value_words(m, v.metrics[m].value))}</td>" for m in metrics)
        rows.append(
            f"<tr><td>{e(v.id)}{role}</td><td>{e(subject_of(spec, v.id))}</td>"
            f"<td>{v.n:,}</td>{cells}</tr>"
        )
    return (
        "<h4>How each version did</h4><table><tr><th>version</th><th>subject line</th>"
        f"<th>recipients</th>{head}</tr>{''.join(rows)}</table>"
    )


def challengers_html(results: ExperimentResults, alpha: float = 0.05) -> str:
    """Each challenger against the control, metric by metric, in words."""
    e = html.escape
    rows = [
        f"<tr><td>{e(c.variant)}</td><td>{e(metric_words(c.metric))}</td>"
        f"<td>{e('–' if c.rel_lift is None else f'{c.rel_lift:+.1%}')}</td>"
        f"<td>{e(_range(c.rel_ci_low, c.rel_ci_high))}</td>"
        f"<td>{e(how_sure(c.prob_beat_control))}</td><td>{e(verdict(c, alpha))}</td></tr>"
        for c in results.comparisons
    ]
    return (
        "<h4>Each challenger against the control</h4><table><tr><th>version</th><th>what</th>"
        "<th>change</th><th>range</th><th>how sure</th><th>verdict</th></tr>"
        f"{''.join(rows)}</table>"
    )


#: The appendix's glossary: what the statistical terms in it mean.
GLOSSARY = (
    ("likely range", "the interval of the change at the level its test used (e.g. 97.5 % when "
     "two challengers share the 5 % error budget)"),
    ("p adj.", "the p-value adjusted for testing several challengers and metrics: below alpha "
     "(0.05) is a clear difference"),
    ("plausible worlds", "draws from the Bayesian posterior of each version's rate: the share of "
     "them in which the challenger beats the control"),
    ("SRM", "sample-ratio mismatch: the recipients were not split as planned, so no result can "
     "be trusted"),
)  # fmt: skip


def plain_report_html(
    results: ExperimentResults, spec: ExperimentSpec | None = None, alpha: float | None = None
) -> str:
    """The top of ``report.html``: decision, next step, versions and challengers in words."""
    e = html.escape
    alpha = alpha if alpha is not None else (spec.decision.alpha if spec else 0.05)
    return (
        f"<h3>{e(results.experiment.name)} · test {results.experiment.iteration}</h3>"
        f"<p style='font-size:1.2em'><b>{e(headline(results, spec))}</b></p>"
        f"<h4>What to do next</h4><p>{e(next_step(results, spec))}</p>"
        + versions_html(results, spec)
        + challengers_html(results, alpha)
    )


def appendix_html(results: ExperimentResults) -> str:
    """The statistical detail, folded under the plain words.

    The decision's reasons, every figure with its p-value, the guardrail tests, the split check,
    and what those terms mean.
    """
    e = html.escape
    glossary = "".join(f"<dt>{e(term)}</dt><dd>{e(text)}</dd>" for term, text in GLOSSARY)
    return (
        "<details><summary>Appendix: statistical details</summary>"
        + results.summary_html()
        + f"<dl>{glossary}</dl></details>"
    )

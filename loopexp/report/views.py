"""Views of results for people: a rich table for the terminal, HTML for Jupyter, a lift plot."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from loopexp.analysis.formatting import (
    fmt_interval,
    fmt_p,
    fmt_pct,
    fmt_value,
    metric_label,
)
from loopexp.analysis.results import Status

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from loopexp.analysis.results import ExperimentResults
    from loopexp.design.plan import ExperimentPlan

#: The decision statuses in plain words, for people who don't read enum values.
STATUS_WORDS: dict[Status, str] = {
    Status.SHIP: "Ship the winner",
    Status.KEEP_TESTING: "Keep testing",
    Status.NO_DIFFERENCE: "No difference worth acting on",
    Status.GUARDRAIL_VETO: "Vetoed by a guardrail",
    Status.INVALID_SRM: "Invalid: the split of recipients is broken (sample ratio mismatch)",
}


def incrementality_html(results: ExperimentResults) -> str:
    """What the mailing added over the no-mail holdout, per arm (nothing without a holdout)."""
    if not results.incrementality:
        return ""
    rows = []
    for r in results.incrementality:
        money = r.metric.startswith("revenue")
        total = f"{r.incremental_total:+,.2f}" if money else f"{r.incremental_total:+,.0f}"
        if r.incremental_ci_low is None or r.incremental_ci_high is None:
            interval = "–"
        elif money:
            interval = f"{r.incremental_ci_low:+,.2f} to {r.incremental_ci_high:+,.2f}"
        else:
            interval = f"{r.incremental_ci_low:+,.0f} to {r.incremental_ci_high:+,.0f}"
        rows.append(
            {
                "metric": metric_label(r.metric),
                "arm": "all mailed" if r.arm == "all_mailed" else r.arm,
                "added over not mailing": total,
                "interval": f"{interval} ({r.ci_level:.0%})" if interval != "–" else interval,
                "lift": fmt_pct(r.rel_lift),
                "p adj.": fmt_p(r.p_value_adjusted),
            }
        )
    return (
        "<h4>What the mailing added over the no-mail holdout (per assigned recipient, "
        "intent to treat)</h4>" + pd.DataFrame(rows).to_html(index=False)
    )


def share_table(shares: dict[str, dict[str, float]], control: str | None) -> pd.DataFrame:
    """Links × variants from ``{variant: {link: share}}``: control first, hardly-clicked last.

    Links are ordered by the control's share (the first variant's without one), most-clicked
    first, ties by link; a link a variant never drew is 0. Empty for no shares.
    """
    if not shares:
        return pd.DataFrame()
    variants = sorted(shares, key=lambda v: (v != control, v))
    table = pd.DataFrame(shares).reindex(columns=variants).fillna(0.0).sort_index()
    table = table.sort_values(variants[0], ascending=False, kind="stable")
    table.index.name = "link"
    return table


def links_table(results: ExperimentResults) -> pd.DataFrame:
    """Links × variants: each link's share of the variant's human clicks (see share_table).

    Empty when the events carried no clicked URL.
    """
    shares: dict[str, dict[str, float]] = {}
    for row in results.links:
        shares.setdefault(row.variant_id, {})[row.link] = row.share
    control = next((v.id for v in results.variants if v.is_control), None)
    return share_table(shares, control)


def links_html(results: ExperimentResults) -> str:
    """The per-link click distribution as an HTML table (nothing when there are no links)."""
    table = links_table(results)
    if table.empty:
        return ""
    return "<h4>Which links drew the human clicks (share of each variant's)</h4>" + table.to_html(
        float_format=lambda x: f"{x:.1%}"
    )


def lift_plot(results: ExperimentResults, metric: str | None = None) -> Figure:
    """Relative lift of each challenger with its CI (at its adjusted level) on one metric."""
    from matplotlib.figure import Figure  # noqa: PLC0415 (import matplotlib only when plotting)

    metric = metric or results.decision.primary_metric
    rows = [c for c in results.comparisons if c.metric == metric]
    fig = Figure(figsize=(6, 0.6 + 0.5 * max(len(rows), 1)))
    ax = fig.add_subplot()
    for i, c in enumerate(rows):
        lo, hi = c.rel_ci_low or 0.0, c.rel_ci_high or 0.0
        colour = "tab:green" if c.variant == results.decision.winner else "tab:blue"
        ax.plot([lo, hi], [i, i], color=colour, lw=3)
        ax.plot([c.rel_lift or 0.0], [i], "o", color=colour)
        if c.rel_lift is not None:
            ax.annotate(
                f"{c.rel_lift:+.1%}",
                (c.rel_lift, i),
                xytext=(0, 6),
                ha="center",
                textcoords="offset points",
                color=colour,
            )
    ax.axvline(0, color="grey", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [c.variant for c in rows])
    ax.set_ylim(-0.5, len(rows) - 0.3)
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:+.0%}")
    ax.set_xlabel(
        f"change in {metric_label(metric)} against the control "
        "(interval at each comparison's level)"
    )
    fig.tight_layout()
    return fig


def _leveled(low: float | None, high: float | None, level: float | None) -> str:
    """An interval with its level, e.g. "+3.6% to +28.9% (97.5%)": adjusted ones are wider."""
    text = fmt_interval(low, high)
    return text if level is None or text == "–" else f"{text} ({100 * level:.3g}%)"


def _chance(p: float | None) -> str:
    # Rounded to whole percents, but never to a certain 0% or 100%: it is an estimate.
    if p is None:
        return "–"
    return ">99%" if p > 0.99 else "<1%" if p < 0.01 else f"{p:.0%}"


def readable_variants(results: ExperimentResults, metrics: list[str] | None = None) -> pd.DataFrame:
    """Per-variant recipients and metric values, formatted for people (rates as percentages)."""
    names = metrics or (list(results.variants[0].metrics) if results.variants else [])
    rows = {}
    for v in results.variants:
        row = {"role": "control" if v.is_control else "challenger", "recipients": f"{v.n:,}"}
        row.update({metric_label(m): fmt_value(m, v.metrics[m].value) for m in names})
        rows[v.id] = row
    frame = pd.DataFrame(rows).T
    frame.index.name = "variant"
    return frame


def readable_comparisons(
    results: ExperimentResults, metrics: list[str] | None = None, alpha: float = 0.05
) -> pd.DataFrame:
    """Challengers against control in plain words: rates, lift, interval, chance to beat control.

    "significant" compares the multiplicity-adjusted p-value with ``alpha`` (the spec's).
    """
    values = {v.id: v.metrics for v in results.variants}
    rows = []
    for c in results.comparisons:
        if metrics and c.metric not in metrics:
            continue
        rows.append(
            {
                "metric": metric_label(c.metric),
                "variant": c.variant,
                "control": fmt_value(c.metric, values[c.control][c.metric].value),
                "variant's": fmt_value(c.metric, values[c.variant][c.metric].value),
                "lift": fmt_pct(c.rel_lift),
                "interval of the lift": _leveled(c.rel_ci_low, c.rel_ci_high, c.ci_level),
                "chance to beat control": _chance(c.prob_beat_control),
                "significant": "yes" if c.p_value_adjusted < alpha else "no",
                "p (adjusted)": fmt_p(c.p_value_adjusted),
            }
        )
    return pd.DataFrame(rows).set_index(["metric", "variant"]) if rows else pd.DataFrame()


def readable_segment_lifts(results: ExperimentResults, metric: str) -> pd.DataFrame:
    """Lift of each challenger on ``metric`` per segment, in percentages (exploratory).

    Segment comparisons are adjusted across segments × challengers: the p-value shown is the
    adjusted one, and the interval is at the level that adjusted test used (wider than 95 %).
    """
    rows = pd.DataFrame(
        [
            {
                "segment": s.segment.replace("_", " "),
                "variant": c.variant,
                "lift": fmt_pct(c.rel_lift),
                "interval of the lift": _leveled(c.rel_ci_low, c.rel_ci_high, c.ci_level),
                "p (adjusted)": fmt_p(c.p_value_adjusted),
            }
            for s in results.segments
            for c in s.comparisons
            if c.metric == metric
        ]
    )
    return rows.set_index(["segment", "variant"]) if len(rows) else rows


def decision_summary(results: ExperimentResults) -> str:
    """The decision in a few plain lines: what to do, the evidence in percentages, and why."""
    d = results.decision
    head = f"Decision: {STATUS_WORDS[d.status]}"
    if d.winner:
        head += f": {d.winner}"
    lines = [head + "."]
    if d.best_challenger and d.rel_lift is not None:
        who = "The winner" if d.winner else "The best challenger"
        evidence = (
            f"{who}, {d.best_challenger}, changes {metric_label(d.primary_metric)} by "
            f"{d.rel_lift:+.1%} against the control"
        )
        if d.rel_ci_low is not None and d.rel_ci_high is not None:
            level = d.ci_level if d.ci_level is not None else 0.95
            evidence += (
                f" ({100 * level:.3g}% interval {fmt_interval(d.rel_ci_low, d.rel_ci_high)})"
            )
        if d.prob_beat_control is not None:
            evidence += f"; chance it beats the control: {_chance(d.prob_beat_control)}"
        lines.append(evidence + ".")
    lines.append("Why:")
    lines.extend(f"  • {reason}" for reason in d.reasons)
    return "\n".join(lines)


def plan_summary(plan: ExperimentPlan) -> str:
    """A plan in plain words for the person who books the send."""
    lines = [
        f"To detect a {plan.mde_relative:+.0%} change in {metric_label(plan.primary_metric)} "
        f"(from {plan.baseline:.2%}, {plan.baseline_source}) with {plan.power:.0%} certainty, "
        f"each of the {plan.variants} variants needs {plan.per_variant:,} recipients: "
        f"{plan.total:,} in all.",
    ]
    if plan.decision_method == "sequential" and plan.fixed_horizon_per_variant:
        lines.append(
            "The test is sequential (always-valid: safe to read at every look), so it needs "
            f"more than a single-look test would ({plan.fixed_horizon_per_variant:,} per variant)."
        )
    if plan.days is not None:
        lines.append(
            f"At {plan.recipients_per_day:,} recipients a day that is {plan.days} day(s) of "
            "sending; allow a few more days for late clicks and orders."
        )
    if plan.audience_size:
        if plan.mde_at_audience is None:
            lines.append(f"{plan.audience_size:,} recipients cannot detect any change reliably.")
        else:
            enough = plan.audience_size >= plan.total
            lines.append(
                f"Your {plan.audience_size:,} recipients can detect changes of "
                f"{plan.mde_at_audience:+.1%} or more"
                + (": enough." if enough else ": fewer variants or a larger list would help.")
            )
    return "\n".join(lines)


def mde_curve_plot(plan: ExperimentPlan) -> Figure:
    """Smallest detectable lift against recipients per variant, with the plan marked."""
    import numpy as np  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415 (import matplotlib only when plotting)

    from loopexp.design.plan import mde_at  # noqa: PLC0415

    sizes = np.unique(np.geomspace(max(plan.per_variant / 20, 50), plan.per_variant * 5, 40))
    points = [
        (n, m)
        for n in sizes.astype(int)
        if (m := mde_at(plan.baseline, int(n), plan.alpha_per_comparison, plan.power)) is not None
    ]
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    ax.plot([n for n, _ in points], [m for _, m in points], color="tab:blue")
    ax.plot([plan.per_variant], [plan.mde_relative], "o", color="tab:green")
    ax.annotate(
        f"plan: {plan.per_variant:,} per variant → {plan.mde_relative:+.0%}",
        (plan.per_variant, plan.mde_relative),
        textcoords="offset points",
        xytext=(-8, -16),
        ha="right",
    )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:,.0f}")
    ax.yaxis.set_major_formatter(lambda y, _: f"{y:+.0%}")
    ax.set_xlabel("recipients per variant")
    ax.set_ylabel(f"smallest detectable lift\nin {metric_label(plan.primary_metric)}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig

"""Judge a flow test: intent-to-treat from entry, conversion within the window, censoring-aware.

Per arm (the branches of the experiment split): everyone who entered is in the denominator,
mailed or not. The outcome is the flow's conversion event within ``W = conversion.window_days``
of entry. At a look, recipients whose window has not closed are censored, not zeros: the decision
reads the Kaplan–Meier probability of converting by ``W`` per arm and the difference of two arms
with its delta-method interval (:mod:`loopexp.stats.survival`), always-valid by default because
entries accumulate and the flow is looked at daily. Beside it: the matured cohort (recipients
whose window has closed: a plain proportion) and the naive "conversions so far", which the
censoring biases against the arm that converts later.

Guardrails: unsubscribes within the window per entered recipient (the spec's ``unsubscribe_rate``
guardrail, tested the same way) and messages sent per recipient (reported). Versions: only
entries of this flow version (or one the spec declares compatible) are analysed; others are a
different test and are counted, never pooled.

The result is a ``results.json`` (schema "1") like every analysis, so the decision, the report,
MLflow and the next spec work unchanged; the flow's own tables (arms, funnel, curves) are in
:class:`FlowAnalysis`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from loopexp.analysis.analyze import data_fingerprint
from loopexp.analysis.decide import decide
from loopexp.analysis.results import (
    Comparison,
    DataInfo,
    ExperimentInfo,
    ExperimentResults,
    GuardrailResult,
    MetricValue,
    NotCompared,
    SRMResult,
    VariantResult,
)
from loopexp.design.flow import FlowSpec
from loopexp.design.spec import ExperimentSpec
from loopexp.events.scope import send_scope
from loopexp.metrics.flow import FlowData, flow_outcomes
from loopexp.stats import srm_check
from loopexp.stats.effect import Effect
from loopexp.stats.survival import (
    WindowRate,
    km_window_rate,
    matured_rate,
    window_difference,
    window_times,
)

#: Metric names of a flow arm in ``results.json`` (beside the primary ``conversion_rate``).
MATURED = "matured_conversion_rate"
SO_FAR = "conversions_so_far"
MESSAGES = "messages_per_recipient"
UNSUBSCRIBES = "unsubscribe_rate"


@dataclass
class FlowAnalysis:
    """A flow test's results (the contract) and the flow's own tables."""

    results: ExperimentResults
    arms: pd.DataFrame
    """Per arm: entered, matured, KM rate with its interval, matured and naive rates, messages
    and unsubscribes per recipient."""
    funnel: pd.DataFrame
    """Per arm and step: sent, delivered, opened, clicked, unsubscribed, ordered (recipients)."""
    recipients: pd.DataFrame
    """Per recipient: arm, follow-up and event times (days), of this flow version."""
    as_of: pd.Timestamp
    other_versions: int
    """Recipients of other flow versions, left out (never pooled)."""


def analyze_flow_files(
    spec: ExperimentSpec,
    events_path: str | Path,
    assignment_path: str | Path,
    quarantine_path: str | Path | None = None,
    as_of: pd.Timestamp | None = None,
) -> FlowAnalysis:
    """Read the events and flow assignment in DuckDB and analyse the flow test."""
    flow = _flow(spec)
    data = flow_outcomes(
        events_path,
        assignment_path,
        flow.conversion.window_days,
        flow.conversion.event,
        quarantine_path,
        as_of=as_of,
        segments=[s.value for s in spec.audience.segments],
        variants=[v.id for v in spec.variants],
        max_quarantine_share=spec.data.max_quarantine_share,
        memory_limit=spec.data.memory_limit,
        temp_directory=spec.data.temp_directory,
        scope=send_scope(spec.data.campaign_ids, assignment_path),  # issue 28: this flow's only
    )
    return analyze_flow(
        spec, data, str(events_path), data_fingerprint(events_path, assignment_path)
    )


def _flow(spec: ExperimentSpec) -> FlowSpec:
    if spec.flow is None:
        raise ValueError(f"spec {spec.name!r} has no flow: section; analyse it with analyze()")
    return spec.flow


def analyze_flow(
    spec: ExperimentSpec, data: FlowData, source: str = "", fingerprint: str = ""
) -> FlowAnalysis:
    """Analyse per-recipient flow outcomes (see the module docstring)."""
    flow = _flow(spec)
    window = flow.conversion.window_days
    frame = data.recipients
    versions = {flow.version(), *flow.compatible_with}
    same = frame["flow_version"].isna() | frame["flow_version"].isin(versions)
    other_versions = int((~same).sum())
    frame = frame[same.to_numpy()].reset_index(drop=True)
    arms = [v.id for v in spec.variants]
    conv = {a: _rate(frame, a, "t_convert", window) for a in arms}
    unsub = {a: _rate(frame, a, "t_unsubscribe", window) for a in arms}
    observed = {a: int((frame["variant_id"] == a).sum()) for a in arms}
    check = srm_check(observed, spec.expected_shares(), spec.decision.srm_alpha)
    srm = SRMResult(p_value=check.p_value, ok=check.ok, expected=check.expected, observed=observed)
    comparisons, not_compared = _comparisons(spec, conv, window)
    guardrails = _guardrails(spec, unsub)
    decision = decide(spec, comparisons, guardrails, srm, not_compared)
    if other_versions:
        decision.reasons.append(
            f"{other_versions:,} recipients entered another version of the flow and are not "
            "pooled with this one (declare a version in flow.compatible_with to pool it)."
        )
    table = _arm_table(spec, frame, conv, unsub, window)
    results = ExperimentResults(
        experiment=ExperimentInfo.from_spec(spec),
        data=DataInfo(
            source=source,
            fingerprint=fingerprint,
            recipients=len(frame),
            events=data.events,
            quarantined=data.quarantined,
            quarantine_reasons=data.quarantine_reasons,
            unassigned_events=data.unassigned_events,
        ),
        srm=srm,
        variants=[_variant(spec, a, table.loc[a]) for a in arms],
        comparisons=comparisons,
        decision=decision,
        not_compared=not_compared,
    )
    return FlowAnalysis(
        results, table.reset_index(drop=True), data.funnel, frame, data.as_of, other_versions
    )


def _rate(frame: pd.DataFrame, arm: str, column: str, window: float) -> WindowRate:
    rows = frame[frame["variant_id"] == arm]
    duration, event = window_times(
        rows[column].to_numpy(dtype=float), rows["followup"].to_numpy(dtype=float), window
    )
    return km_window_rate(duration, event, window)


def _effect(spec: ExperimentSpec, t: WindowRate, c: WindowRate, alpha: float) -> Effect:
    return window_difference(
        t,
        c,
        alpha=alpha,
        sequential=spec.decision_method == "sequential",
        tuning_n=spec.sequential_tuning_n,
        design_alpha=spec.decision.alpha,
    )


def _comparisons(
    spec: ExperimentSpec, conv: dict[str, WindowRate], window: float
) -> tuple[list[Comparison], list[NotCompared]]:
    """Each challenger against the control on the KM rate by the window (Bonferroni family)."""
    alpha = spec.decision.alpha
    k = len(spec.challengers)
    out, missing = [], []
    control = conv[spec.control]
    for ch in spec.challengers:
        arm = conv[ch.id]
        empty = [a for a, r in ((ch.id, arm), (spec.control, control)) if math.isnan(r.value)]
        if empty:
            missing.append(
                NotCompared(
                    metric=spec.primary_metric,
                    variant=ch.id,
                    segment="all",
                    reason=f"no recipient of {empty} has been followed for the full {window:g} "
                    "days yet: no conversion rate by the window to compare",
                )
            )
            continue
        e = _effect(spec, arm, control, alpha / k)
        out.append(
            Comparison(
                metric=spec.primary_metric,
                variant=ch.id,
                control=spec.control,
                estimate=e.estimate,
                rel_lift=e.rel_lift,
                ci_low=e.ci_low,
                ci_high=e.ci_high,
                rel_ci_low=e.rel_ci_low,
                rel_ci_high=e.rel_ci_high,
                p_value=e.p_value,
                p_value_adjusted=min(1.0, e.p_value * k),
                prob_beat_control=None,
                expected_loss=None,
                method=f"{e.method}; intent-to-treat from entry, {window:g}-day window"
                + (f"; Bonferroni over {k} challengers" if k > 1 else ""),
                ci_level=1 - alpha / k,
                family_size=k,
            )
        )
    return out, missing


def _guardrails(spec: ExperimentSpec, unsub: dict[str, WindowRate]) -> list[GuardrailResult]:
    """Unsubscribes within the window: harm (or non-inferiority) on the relative lift."""
    alpha = spec.decision.alpha
    out = []
    for g in spec.guardrails:
        for ch in spec.challengers:
            e = _effect(spec, unsub[ch.id], unsub[spec.control], alpha)
            low, high = e.rel_ci_low, e.rel_ci_high
            if math.isnan(e.rel_lift):  # no unsubscribe in the control: the absolute difference
                low, high = (e.ci_low, e.ci_high)
                margin = 0.0
            else:
                margin = g.max_relative_increase
            # harm: veto when a worsening beyond the margin is shown; else it must be ruled out
            passed = not low > margin if g.mode == "harm" else high <= margin
            out.append(
                GuardrailResult(
                    metric=g.metric,
                    variant=ch.id,
                    rel_lift=e.rel_lift,
                    rel_ci_low=e.rel_ci_low,
                    rel_ci_high=e.rel_ci_high,
                    max_relative_increase=g.max_relative_increase,
                    passed=bool(passed),
                    mode=g.mode,
                    # the veto reads the interval against the margin; no one-sided p of it
                    p_value=None,
                    ci_level=1 - alpha,
                )
            )
    return out


def _arm_table(
    spec: ExperimentSpec,
    frame: pd.DataFrame,
    conv: dict[str, WindowRate],
    unsub: dict[str, WindowRate],
    window: float,
) -> pd.DataFrame:
    rows = []
    z = 1.959963984540054  # the arm's own 95 % pointwise interval, for reading, not deciding
    for arm in (v.id for v in spec.variants):
        part = frame[frame["variant_id"] == arm]
        t = part["t_convert"].to_numpy(dtype=float)
        follow = part["followup"].to_numpy(dtype=float)
        rate, events, matured = matured_rate(t, follow, window)
        km = conv[arm]
        rows.append(
            {
                "arm": arm,
                "entered": len(part),
                "matured": matured,
                "km_rate": km.value,
                "km_low": km.value - z * km.se,
                "km_high": km.value + z * km.se,
                "km_conversions": km.events,
                "matured_rate": rate,
                "matured_conversions": events,
                "so_far_rate": float(np.mean(np.isfinite(t))) if len(part) else math.nan,
                "so_far_conversions": int(np.isfinite(t).sum()),
                "messages_per_recipient": float(part["sends"].mean()) if len(part) else math.nan,
                "messages": int(part["sends"].sum()),
                "unsubscribe_rate": unsub[arm].value,
                "unsubscribes": unsub[arm].events,
            }
        )
    return pd.DataFrame(rows).set_index("arm", drop=False)


def _variant(spec: ExperimentSpec, arm: str, row: pd.Series) -> VariantResult:
    n = int(row["entered"])

    def value(v: float, numerator: float, denominator: int) -> MetricValue:
        return MetricValue(
            value=None if math.isnan(v) else float(v), numerator=numerator, denominator=denominator
        )

    return VariantResult(
        id=arm,
        is_control=arm == spec.control,
        n=n,
        metrics={
            spec.primary_metric: value(row["km_rate"], int(row["km_conversions"]), n),
            MATURED: value(
                row["matured_rate"], int(row["matured_conversions"]), int(row["matured"])
            ),
            SO_FAR: value(row["so_far_rate"], int(row["so_far_conversions"]), n),
            MESSAGES: value(row["messages_per_recipient"], int(row["messages"]), n),
            UNSUBSCRIBES: value(row["unsubscribe_rate"], int(row["unsubscribes"]), n),
        },
    )


def conversion_curves(analysis: FlowAnalysis, window: float) -> pd.DataFrame:
    """Kaplan–Meier P(converted by day t) per arm for t up to the window (for the plots)."""
    from statsmodels.duration.survfunc import SurvfuncRight  # noqa: PLC0415 (plots only)

    parts = []
    for arm, rows in analysis.recipients.groupby("variant_id", sort=False):
        duration, event = window_times(
            rows["t_convert"].to_numpy(dtype=float), rows["followup"].to_numpy(dtype=float), window
        )
        if not event.any():
            continue
        sf = SurvfuncRight(duration, event.astype(float))
        day = np.concatenate([[0.0], sf.surv_times])
        parts.append(
            pd.DataFrame(
                {"arm": arm, "day": day, "converted": 1 - np.concatenate([[1.0], sf.surv_prob])}
            )
        )
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["arm", "day", "converted"])
    )


__all__ = [
    "FlowAnalysis",
    "analyze_flow",
    "analyze_flow_files",
    "conversion_curves",
]

"""Decision rule: comparisons, guardrails and the SRM checks in, one Decision with reasons out.

Order of precedence:
1. ``invalid_srm``: the split is broken (on the assignment, or on the delivered counts the metrics
   divide by), nothing else can be trusted.
2. ``keep_testing`` when a primary comparison could not be made (an arm with too few delivered
   recipients): a comparison that was not made is never evidence of anything; and when a
   fixed-horizon test is read before its planned sample ("n of N recipients"): its p-values are
   only valid at that sample (read early and often, they ship false winners; the ``sequential``
   method is the one that may be read at every look).
3. ``ship``: a challenger beats control on the primary metric (adjusted p < alpha) and passes every
   guardrail; the largest improvement among those wins (by the absolute difference, which is
   defined even when the control rate is 0 and orders challengers as the relative lift does; ties
   by smaller p-value, then by variant id).
4. ``guardrail_veto``: challengers won on the primary metric, but each broke a guardrail.
5. ``no_difference``: no winner, and every challenger's interval rules out a lift as large as the
   MDE (an unbounded interval rules out nothing).
6. ``keep_testing``: no winner yet, and the data cannot rule out a lift worth having.

Every reason states the numbers it rests on and the level of the interval it quotes: the level the
adjusted test used, so an interval excludes 0 exactly when the adjusted p-value is below alpha.
"""

from __future__ import annotations

import math

from loopexp.analysis.maturity import ReadTime, early_look_note, premature_reasons, utc_text
from loopexp.analysis.power import power_check
from loopexp.analysis.results import (
    Comparison,
    Decision,
    GuardrailResult,
    NotCompared,
    PeriodSRM,
    SRMResult,
    Status,
)
from loopexp.design.parts import DecisionRule
from loopexp.design.spec import ExperimentSpec


def _pct(x: float | None, undefined: str = "n/a") -> str:
    if x is None or math.isnan(x):
        return undefined
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return f"{x:+.1%}"


def _level(level: float | None) -> str:
    return f"{100 * (0.95 if level is None else level):.4g}%"


def _lift(c: Comparison) -> str:
    if c.rel_lift is None or math.isnan(c.rel_lift):
        return f"n/a (control is 0; difference {c.estimate:+.4g})"
    return _pct(c.rel_lift)


def _describe(c: Comparison, alpha: float, correction: str) -> str:
    always_valid = "always-valid" in c.method
    interval = "always-valid confidence sequence" if always_valid else "CI"
    p = "always-valid p" if always_valid else "p"
    return (
        f"{c.variant} vs {c.control} on {c.metric}: {_lift(c)} "
        f"({_level(c.ci_level)} {interval} {_pct(c.rel_ci_low)} to {_pct(c.rel_ci_high)}; "
        f"{correction}-adjusted {p} = {c.p_value_adjusted:.3g}, alpha {alpha:g})"
    )


def _order_key(sign: int):
    """Improvement order that never reads a NaN: absolute difference, then p-value, then id."""

    def key(c: Comparison) -> tuple[float, float, str]:
        return (sign * c.estimate, -c.p_value_adjusted, c.variant)

    return key


def decide(
    spec: ExperimentSpec,
    primary: list[Comparison],
    guardrails: list[GuardrailResult],
    srm: SRMResult,
    not_compared: list[NotCompared] | None = None,
    delivery_srm: SRMResult | None = None,
    read: ReadTime | None = None,
    period_srm: list[PeriodSRM] | None = None,
) -> Decision:
    """Apply the spec's decision rule to the primary-metric comparisons of each challenger.

    First the gates that make the data unreadable or premature (:func:`_gate`; ``read``: a
    fixed-horizon one-off send before its final read time, :mod:`loopexp.analysis.maturity`),
    then the verdict on the comparisons (:func:`_verdict`).
    """
    metric = spec.metric(spec.primary_metric)
    sign = 1 if metric.higher_is_better else -1
    reached = min((srm.observed.get(v.id, 0) for v in spec.variants), default=0)
    base = {
        "primary_metric": spec.primary_metric,
        "guardrails": guardrails,
        "recipients_per_variant": reached,
        "planned_recipients_per_variant": spec.planned_recipients_per_variant,
        "final_read_at": utc_text(read.final_read_at) if read else None,
        "before_final_read": bool(read and not read.due),
    }
    key = _order_key(sign)
    best = max(primary, key=key) if primary else None
    gated = _gate(spec, primary, srm, not_compared or [], delivery_srm, reached)
    broken = [p for p in period_srm or [] if not p.ok]
    if broken and (gated is None or gated[0] != Status.INVALID_SRM):
        gated = Status.INVALID_SRM, [_period_reason(p) for p in broken]
    premature = premature_reasons(spec, read)
    if premature and (gated is None or gated[0] != Status.INVALID_SRM):
        # no lift copied: an immature lift is no estimate of anything worth quoting
        return Decision(status=Status.KEEP_TESTING, winner=None, reasons=premature, **base)
    if gated is not None and gated[0] == Status.INVALID_SRM:
        status, reasons = gated
        return Decision(status=status, winner=None, reasons=reasons, **base, **_fields(best))
    if gated is not None:
        status, reasons = gated
        win = None
    else:
        status, win, reasons = _verdict(spec.decision, primary, guardrails, sign)
        reasons += early_look_note(spec, read)
    power = power_check(spec, win or best, reached)  # a read far below the plan says so
    base |= {
        "detectable_rel_lift": power.detectable_rel_lift,
        "shrunk_rel_lift": power.shrunk_rel_lift,
    }
    winner = None if win is None else win.variant
    return Decision(
        status=status,
        winner=winner,
        reasons=reasons + power.reasons,
        **base,
        **_fields(win or best),
    )


def _fields(c: Comparison | None) -> dict:
    """The decision's copy of the comparison it reports (the winner, else the best challenger)."""
    if c is None:
        return {}
    return {
        "best_challenger": c.variant,
        "rel_lift": c.rel_lift,
        "rel_ci_low": c.rel_ci_low,
        "rel_ci_high": c.rel_ci_high,
        "p_value_adjusted": c.p_value_adjusted,
        "prob_beat_control": c.prob_beat_control,
        "ci_level": c.ci_level,
    }


def _gate(
    spec: ExperimentSpec,
    primary: list[Comparison],
    srm: SRMResult,
    not_compared: list[NotCompared],
    delivery_srm: SRMResult | None,
    reached: int,
) -> tuple[Status, list[str]] | None:
    """Why no lift may be read yet, or None when the comparisons can be judged.

    A broken split or send, a missing comparison, a fixed-horizon test before its planned sample.
    """
    rule = spec.decision
    if not srm.ok:
        return Status.INVALID_SRM, [
            f"Sample ratio mismatch: observed {srm.observed} against expected shares "
            f"{ {k: round(v, 4) for k, v in srm.expected.items()} } (chi-square p = "
            f"{srm.p_value:.2g} < {rule.srm_alpha:g}). The assignment or the send is broken; "
            "fix it and re-run before reading any lift."
        ]
    if delivery_srm is not None and not delivery_srm.ok:
        return Status.INVALID_SRM, [_delivery_reason(delivery_srm, rule.srm_alpha)]
    missing = [n for n in not_compared if n.metric == spec.primary_metric]
    if missing or not primary:
        reasons = [f"Not compared: {n.variant} on {n.metric}: {n.reason}" for n in missing] or [
            f"No comparison on {spec.primary_metric} could be made."
        ]
        reasons.append(
            "A comparison that could not be made is no evidence of no difference: keep testing "
            "(fix the send or collect more recipients) before deciding."
        )
        return Status.KEEP_TESTING, reasons
    planned = spec.planned_recipients_per_variant
    if spec.decision_method == "fixed" and planned is not None and reached < planned:
        reasons = [
            f"Fixed-horizon test read before its planned sample: {reached:,} of {planned:,} "
            "recipients per variant so far. Its p-values hold only at the planned sample; keep "
            "testing until then (or use decision.method: sequential to read it at every look)."
        ]
        reasons += [_describe(c, rule.alpha, rule.correction) for c in primary]
        return Status.KEEP_TESTING, reasons
    return None


def _verdict(
    rule: DecisionRule, primary: list[Comparison], guardrails: list[GuardrailResult], sign: int
) -> tuple[Status, Comparison | None, list[str]]:
    """Status, winner and reasons of comparisons that can be judged.

    Ship the best significant challenger that passed its guardrails, veto when every significant
    one broke a guardrail, else no difference or keep testing (see :func:`_no_winner`).
    """
    key = _order_key(sign)
    failed = {g.variant for g in guardrails if not g.passed and not g.no_data}
    vetoes = [_veto_reason(g, rule.alpha) for g in guardrails if not g.passed and not g.no_data]
    unjudged = {g.variant for g in guardrails if g.no_data}
    no_data = [
        f"Guardrail {g.metric}: no data for {g.variant}: {g.note}." for g in guardrails if g.no_data
    ]
    significant = [c for c in primary if c.p_value_adjusted < rule.alpha and sign * c.estimate > 0]
    winners = [c for c in significant if c.variant not in failed]
    waiting = [c for c in winners if c.variant in unjudged]
    winners = [c for c in winners if c.variant not in unjudged]
    if waiting and not winners:
        reasons = [_describe(c, rule.alpha, rule.correction) for c in waiting] + no_data
        reasons.append(
            "A guardrail without data is not a pass: keep testing until it has data (include "
            "its events in the export), or remove the guardrail from the spec knowingly."
        )
        return Status.KEEP_TESTING, None, reasons + vetoes
    if winners:
        win = max(winners, key=key)
        reasons = [f"{win.variant} wins: " + _describe(win, rule.alpha, rule.correction)]
        reasons += [
            f"{c.variant} also beat control but by less: "
            + _describe(c, rule.alpha, rule.correction)
            for c in sorted(winners, key=key, reverse=True)
            if c is not win
        ]
        return Status.SHIP, win, reasons + vetoes + no_data
    if significant:
        reasons = [_describe(c, rule.alpha, rule.correction) for c in significant]
        reasons += vetoes
        reasons.append(
            "Every challenger that won on the primary metric broke a guardrail: keep the control."
        )
        return Status.GUARDRAIL_VETO, None, reasons
    status, reasons = _no_winner(rule, primary, sign)
    return status, None, reasons + vetoes + no_data


def _no_winner(
    rule: DecisionRule, primary: list[Comparison], sign: int
) -> tuple[Status, list[str]]:
    """No winner: keep the control if the data rule out a lift worth having (the MDE)."""
    ruled_out = all(_upper_lift(c, sign) < rule.mde_relative for c in primary)
    reasons = [_describe(c, rule.alpha, rule.correction) for c in primary]
    if ruled_out:
        reasons.append(
            f"No challenger beats control, and every interval rules out a lift of "
            f"{rule.mde_relative:.0%} or more (the MDE): keep the control and test something "
            "bolder."
        )
        return Status.NO_DIFFERENCE, reasons
    reasons.append(
        f"No challenger beats control yet, but a lift of {rule.mde_relative:.0%} (the MDE) is "
        "still inside an interval: collect more recipients before deciding."
    )
    return Status.KEEP_TESTING, reasons


def _upper_lift(c: Comparison, sign: int) -> float:
    """Largest plausible improvement (relative) of a challenger, in the metric's good direction.

    +inf when the interval is unbounded or undefined (a zero control rate).
    """
    bound = c.rel_ci_high if sign > 0 else c.rel_ci_low
    if bound is None or math.isnan(bound):
        return math.inf
    return sign * bound


def _delivery_reason(s: SRMResult, srm_alpha: float) -> str:
    total = sum(s.observed.values())
    shares = {k: (v / total if total else 0.0) for k, v in s.observed.items()}
    worst = max(s.expected, key=lambda k: abs(shares.get(k, 0.0) - s.expected[k]))
    return (
        f"Delivered counts do not match the split: delivered {s.observed} against expected "
        f"shares { {k: round(v, 4) for k, v in s.expected.items()} } (chi-square p = "
        f"{s.p_value:.2g} < {srm_alpha:g}); {worst} has {shares.get(worst, 0.0):.1%} of the "
        f"delivered recipients instead of {s.expected[worst]:.1%}. A send that failed for one "
        "variant makes every delivered-based metric compare different populations: check the "
        "ESP's send report and re-send before reading any lift."
    )


def _period_reason(p: PeriodSRM) -> str:
    if p.kind == "send_batch":
        return (
            f"Sample ratio mismatch in the send batch of {p.period}: {p.observed} recipients "
            f"first sent in that hour (chi-square p = {p.p_value:.2g} < {p.alpha:.2g}, the SRM "
            "level over the batches checked). The send broke in that batch (a batch that failed, "
            "or went out for one variant only): check the ESP's send log for that hour and "
            "re-send before reading any lift."
        )
    return (
        f"Sample ratio mismatch on {p.period}: {p.observed} recipients (chi-square p = "
        f"{p.p_value:.2g} < {p.alpha:.2g}, the SRM level over the days checked). The split or "
        f"the send broke that day; fix it and re-run before reading any lift."
    )


def _veto_reason(g: GuardrailResult, alpha: float) -> str:
    p = "n/a" if g.p_value is None else f"{g.p_value:.3g}"
    if g.mode == "non_inferiority":
        test = (
            f"not shown to stay within the allowed {g.max_relative_increase:.0%} worsening "
            f"(one-sided non-inferiority p = {p}, not below alpha/2 = {alpha / 2:g})"
        )
    else:
        test = (
            f"worse beyond the allowed {g.max_relative_increase:.0%} (one-sided p = {p} < "
            f"alpha/2 = {alpha / 2:g})"
        )
    return (
        f"Guardrail {g.metric}: {g.variant} moved it {_pct(g.rel_lift)} "
        f"({_level(g.ci_level)} CI {_pct(g.rel_ci_low)} to {_pct(g.rel_ci_high)}): {test}."
    )

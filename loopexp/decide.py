"""Decision rule: comparisons, guardrails and the SRM check in, one Decision with reasons out.

Order of precedence:
1. ``invalid_srm``: the split is broken, nothing else can be trusted.
2. ``ship``: a challenger beats control on the primary metric (adjusted p < alpha) and passes every
   guardrail; the largest lift among those wins.
3. ``guardrail_veto``: challengers won on the primary metric, but each broke a guardrail.
4. ``no_difference``: no winner, and every challenger's CI rules out a lift as large as the MDE.
5. ``keep_testing``: no winner yet, and the data cannot rule out a lift worth having.
"""

from __future__ import annotations

from loopexp.results import Comparison, Decision, GuardrailResult, SRMResult, Status
from loopexp.spec import ExperimentSpec


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1%}"


def _describe(c: Comparison, alpha: float, correction: str) -> str:
    return (
        f"{c.variant} vs {c.control} on {c.metric}: {_pct(c.rel_lift)} "
        f"(95% CI {_pct(c.rel_ci_low)} to {_pct(c.rel_ci_high)}; "
        f"{correction}-adjusted p = {c.p_value_adjusted:.3g}, alpha {alpha})"
    )


def decide(
    spec: ExperimentSpec,
    primary: list[Comparison],
    guardrails: list[GuardrailResult],
    srm: SRMResult,
) -> Decision:
    """Apply the spec's decision rule to the primary-metric comparisons of each challenger."""
    rule = spec.decision
    metric = spec.metric(spec.primary_metric)
    sign = 1 if metric.higher_is_better else -1
    base = {"primary_metric": spec.primary_metric, "guardrails": guardrails}

    def improvement(c: Comparison) -> float:
        return sign * (c.rel_lift if c.rel_lift is not None else c.estimate)

    best = max(primary, key=improvement) if primary else None
    best_fields = (
        {
            "best_challenger": best.variant,
            "rel_lift": best.rel_lift,
            "rel_ci_low": best.rel_ci_low,
            "rel_ci_high": best.rel_ci_high,
            "p_value_adjusted": best.p_value_adjusted,
            "prob_beat_control": best.prob_beat_control,
        }
        if best
        else {}
    )

    if not srm.ok:
        return Decision(
            status=Status.INVALID_SRM,
            winner=None,
            reasons=[
                f"Sample ratio mismatch: observed {srm.observed} against expected shares "
                f"{ {k: round(v, 4) for k, v in srm.expected.items()} } (chi-square p = "
                f"{srm.p_value:.2g} < {rule.srm_alpha}). The assignment or the send is broken; "
                "fix it and re-run before reading any lift."
            ],
            **base,
            **best_fields,
        )

    failed = {g.variant for g in guardrails if not g.passed}
    significant = [c for c in primary if c.p_value_adjusted < rule.alpha and sign * c.estimate > 0]
    winners = [c for c in significant if c.variant not in failed]
    reasons: list[str] = []
    if winners:
        win = max(winners, key=improvement)
        reasons.append(f"{win.variant} wins: " + _describe(win, rule.alpha, rule.correction))
        reasons += [f"{c.variant} also beat control but by less." for c in winners if c is not win]
        reasons += [_veto_reason(g) for g in guardrails if not g.passed]
        fields = {
            **best_fields,
            "best_challenger": win.variant,
            "rel_lift": win.rel_lift,
            "rel_ci_low": win.rel_ci_low,
            "rel_ci_high": win.rel_ci_high,
            "p_value_adjusted": win.p_value_adjusted,
            "prob_beat_control": win.prob_beat_control,
        }
        return Decision(status=Status.SHIP, winner=win.variant, reasons=reasons, **base, **fields)

    if significant:
        reasons = [_describe(c, rule.alpha, rule.correction) for c in significant]
        reasons += [_veto_reason(g) for g in guardrails if not g.passed]
        reasons.append(
            "Every challenger that won on the primary metric broke a guardrail: keep the control."
        )
        return Decision(
            status=Status.GUARDRAIL_VETO, winner=None, reasons=reasons, **base, **best_fields
        )

    # No winner: can the data rule out a lift worth having (the MDE)?
    ruled_out = all(_upper_lift(c, sign) < rule.mde_relative for c in primary)
    reasons = [_describe(c, rule.alpha, rule.correction) for c in primary]
    if ruled_out:
        reasons.append(
            f"No challenger beats control, and every CI rules out a lift of {rule.mde_relative:.0%}"
            " or more (the MDE): keep the control and test something bolder."
        )
        status = Status.NO_DIFFERENCE
    else:
        reasons.append(
            f"No challenger beats control yet, but a lift of {rule.mde_relative:.0%} (the MDE) is "
            "still inside the CI: collect more recipients before deciding."
        )
        status = Status.KEEP_TESTING
    reasons += [_veto_reason(g) for g in guardrails if not g.passed]
    return Decision(status=status, winner=None, reasons=reasons, **base, **best_fields)


def _upper_lift(c: Comparison, sign: int) -> float:
    """Largest plausible improvement (relative) of a challenger, in the metric's good direction."""
    bound = c.rel_ci_high if sign > 0 else c.rel_ci_low
    if bound is None:
        return float("inf")
    return sign * bound


def _veto_reason(g: GuardrailResult) -> str:
    return (
        f"Guardrail {g.metric}: {g.variant} moved it {_pct(g.rel_lift)} "
        f"(95% CI {_pct(g.rel_ci_low)}"
        f" to {_pct(g.rel_ci_high)}), beyond the allowed {g.max_relative_increase:.0%} worsening."
    )

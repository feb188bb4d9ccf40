"""A campaign's history as typed records: what each iteration decided, measured and learnt.

The records are plain data (JSON-serialisable pydantic models) built from ``results.json`` files
and a few run tags, so the tracking stage can fill them from MLflow and the report stage can render
them without either knowing the other. :func:`closed_loop_report` assembles the history: the
KPI trend, the decisions, the cumulative lift (raw and shrunk for winner's curse, see
:mod:`loopexp.learn.shrinkage`), and what to test next. :func:`baseline_from_history` pools
earlier sends' control rates into a planning baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loopexp.analysis.results import ExperimentResults, Status
from loopexp.design.spec import ExperimentSpec
from loopexp.learn.shrinkage import (
    Lift,
    cumulative_lift,
    empirical_bayes_prior,
    primary_log_lifts,
    shrink,
)

#: Version of :class:`IterationDigest` (a run tag): a reader ignores digests of another version.
DIGEST_VERSION = 1

#: The KPIs of the trend, in reading order, with their labels.
KPIS: dict[str, str] = {
    "delivery_rate": "delivered",
    "open_rate": "human open",
    "click_rate": "human click",
    "conversion_rate": "conversion",
    "revenue_per_delivered": "revenue / recipient",
    "unsubscribe_rate": "unsubscribe",
    "complaint_rate": "complaint",
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Incremental(_Model):
    """Revenue the mailing added over not mailing (everyone mailed vs the no-mail holdout)."""

    total: float
    low: float | None
    high: float | None
    per_recipient: float
    rel_lift: float | None
    level: float
    arm: str


class Shrunk(_Model):
    """One primary comparison: the raw lift and its empirical-Bayes shrunk estimate."""

    iteration: int
    variant: str
    shipped: bool
    raw: Lift
    shrunk: Lift


class IterationFacts(_Model):
    """What an analysed iteration's results, send time and policy say (digest and record share)."""

    iteration: int
    name: str
    test_type: str
    control: str
    status: str
    winner: str | None
    best_challenger: str | None
    primary_metric: str
    lift: Lift
    kpis: dict[str, float | None]
    control_kpis: dict[str, float | None]
    recipients: int
    send_windows: dict[str, str] = Field(default_factory=dict)
    send_time_notes: list[str] = Field(default_factory=list)
    vetoed: list[str] = Field(default_factory=list)
    incremental_revenue: Incremental | None = None
    link_clicks: dict[str, dict[str, float]] | None = None
    policy_gain: str | None = None
    """Issue 27: "personalisation gain: projected X [interval], realised Y [interval]" of the
    policy the iteration deployed (its policy.json), None without one."""


class IterationRecord(IterationFacts):
    """One analysed iteration as read back from the tracking store: its facts and lineage."""

    run_id: str
    parent_run_id: str | None
    lineage_ok: bool
    """The parent run id is the previous iteration's run (or there is no previous one)."""
    next_spec: str
    flow_version: str | None = None
    """A flow test's version (its flow definition's fingerprint): KPIs are read per version."""


class PrimaryLift(_Model):
    """One usable comparison on an iteration's primary metric: its raw lift and log lift.

    The empirical-Bayes prior's data (:func:`loopexp.learn.shrinkage.primary_log_lifts`), kept so
    the report needs no ``results.json`` to shrink a campaign's lifts.
    """

    variant: str
    raw: Lift
    log_lift: float
    se: float


class IterationDigest(IterationFacts):
    """Everything the closed-loop report needs of one iteration's results, send time and policy.

    Small enough to travel as a run tag (``loopexp.report.digest``), so the report of a long
    campaign is one search of the store, not one ``results.json`` download per iteration.
    """

    version: int = DIGEST_VERSION
    primary: list[PrimaryLift] = Field(default_factory=list)


class ClosedLoopReport(_Model):
    """Everything the closed-loop report shows, as a typed record (JSON-serialisable)."""

    campaign: str
    tracking_uri: str
    iterations: list[IterationRecord]
    prior_mean: float | None
    prior_sd: float | None
    prior_tests: int
    shrunk: list[Shrunk]
    cumulative: Lift
    cumulative_shrunk: Lift
    next_steps: list[str]
    notes: list[str]


# --- one iteration ------------------------------------------------------------------------------


def _pooled(results: ExperimentResults, metric: str) -> float | None:
    num = den = 0.0
    for v in results.variants:
        m = v.metrics.get(metric)
        if m is not None:
            num, den = num + m.numerator, den + m.denominator
    return num / den if den else None


def iteration_record(
    results: ExperimentResults,
    *,
    run_id: str,
    parent_run_id: str | None,
    previous_run_id: str | None,
    next_spec: str = "",
    send_time: Mapping[str, Any] | None = None,
    flow_version: str | None = None,
    policy: Mapping[str, Any] | None = None,
) -> IterationRecord:
    """One iteration's record from its results and lineage (``send_time``: its send_time.json)."""
    return record_from_digest(
        iteration_digest(results, send_time, policy),
        run_id=run_id,
        parent_run_id=parent_run_id,
        previous_run_id=previous_run_id,
        next_spec=next_spec,
        flow_version=flow_version,
    )


def iteration_digest(
    results: ExperimentResults,
    send_time: Mapping[str, Any] | None = None,
    policy: Mapping[str, Any] | None = None,
) -> IterationDigest:
    """What the report needs of an iteration's results, send_time.json and policy.json."""
    d = results.decision
    control = next((v for v in results.variants if v.is_control), None)
    windows: dict[str, str] = {}
    notes: list[str] = []
    if send_time:
        found = send_time.get("windows", [])
        windows = {w["segment"]: w["slot"] for w in found if w.get("slot")}
        notes = [f"{w['segment']}: {w['reason']}" for w in found if w.get("reason")]
    return IterationDigest(
        iteration=results.experiment.iteration,
        name=results.experiment.name,
        test_type=results.experiment.test_type,
        control=control.id if control else "",
        status=d.status.value,
        winner=d.winner,
        best_challenger=d.best_challenger,
        primary_metric=d.primary_metric,
        lift=Lift(value=d.rel_lift, low=d.rel_ci_low, high=d.rel_ci_high, level=d.ci_level),
        kpis={k: _pooled(results, k) for k in KPIS},
        control_kpis={
            k: (control.metrics[k].value if control and k in control.metrics else None)
            for k in KPIS
        },
        recipients=results.data.recipients,
        send_windows=windows,
        send_time_notes=notes,
        vetoed=sorted({g.variant for g in d.guardrails if not g.passed and not g.no_data}),
        incremental_revenue=_incremental_revenue(results),
        link_clicks=_link_shares(results),
        policy_gain=(policy or {}).get("gain_line") or None,  # issue 27: its policy.json
        primary=primary_lifts(results),
    )


def primary_lifts(results: ExperimentResults) -> list[PrimaryLift]:
    """The iteration's usable primary comparisons (the prior's data), raw lift and log lift."""
    return [
        PrimaryLift(
            variant=c.variant,
            raw=Lift(
                value=c.rel_lift, low=c.rel_ci_low, high=c.rel_ci_high, level=c.ci_level or 0.95
            ),
            log_lift=ys[0],
            se=ys[1],
        )
        for c, ys in primary_log_lifts(results)
    ]


def record_from_digest(
    digest: IterationDigest,
    *,
    run_id: str,
    parent_run_id: str | None,
    previous_run_id: str | None,
    next_spec: str = "",
    flow_version: str | None = None,
) -> IterationRecord:
    """An iteration's record from its digest and the lineage its run's tags hold."""
    fields = digest.model_dump(exclude={"version", "primary"})
    return IterationRecord(
        **fields,
        run_id=run_id,
        parent_run_id=parent_run_id,
        lineage_ok=previous_run_id is None or parent_run_id == previous_run_id,
        next_spec=next_spec,
        flow_version=flow_version,
    )


def _link_shares(results: ExperimentResults) -> dict[str, dict[str, float]] | None:
    """Each variant's share of human clicks per link, most-clicked first (None: no link data)."""
    if not results.links:
        return None
    shares: dict[str, dict[str, float]] = {}
    for row in sorted(results.links, key=lambda r: (r.variant_id, -r.clicks, r.link)):
        shares.setdefault(row.variant_id, {})[row.link] = row.share
    return shares


def _incremental_revenue(results: ExperimentResults) -> Incremental | None:
    """All mailed arms pooled against the holdout on revenue per assigned recipient (issue 15)."""
    rows = [r for r in results.incrementality if r.metric == "revenue_per_assigned"]
    row = next((r for r in rows if r.arm == "all_mailed"), rows[0] if rows else None)
    if row is None:
        return None
    return Incremental(
        total=row.incremental_total,
        low=row.incremental_ci_low,
        high=row.incremental_ci_high,
        per_recipient=row.estimate,
        rel_lift=row.rel_lift,
        level=row.ci_level,
        arm=row.arm,
    )


# --- the campaign -------------------------------------------------------------------------------


def closed_loop_report(
    campaign: str,
    tracking_uri: str,
    records: list[IterationRecord],
    results: list[ExperimentResults],
) -> ClosedLoopReport:
    """The campaign's report from its iterations' records and results (same order, oldest first)."""
    return assemble_report(campaign, tracking_uri, records, [primary_lifts(r) for r in results])


def assemble_report(
    campaign: str,
    tracking_uri: str,
    records: list[IterationRecord],
    primaries: list[list[PrimaryLift]],
) -> ClosedLoopReport:
    """The campaign's report from its records and each one's primary lifts (its digest's)."""
    shrunk, prior = _shrunk_comparisons(records, primaries)
    notes: list[str] = []
    if prior is None:
        notes.append(
            f"only {len(shrunk)} past comparison(s) in this campaign: too few to learn a "
            "prior, so the lifts are not shrunk yet (raw = shrunk)"
        )
    without = [str(r.iteration) for r in records if r.incremental_revenue is None]
    if without:
        notes.append(
            f"iteration(s) {', '.join(without)}: no incremental revenue against a holdout (no "
            "holdout in the spec, or results written before holdout incrementality)"
        )
    if all(r.link_clicks is None for r in records):
        notes.append(
            "per-link click distribution: not in these results (the events carry no clicked "
            "URL, or the results were written before loopexp logged the link table)"
        )
    shipped = [s for s in shrunk if s.shipped]
    return ClosedLoopReport(
        campaign=campaign,
        tracking_uri=tracking_uri,
        iterations=records,
        prior_mean=prior[0] if prior else None,
        prior_sd=prior[1] if prior else None,
        prior_tests=len(shrunk),
        shrunk=shrunk,
        cumulative=cumulative_lift(s.raw for s in shipped),
        cumulative_shrunk=cumulative_lift(s.shrunk for s in shipped),
        next_steps=next_steps(records),
        notes=notes,
    )


def _shrunk_comparisons(
    records: list[IterationRecord], primaries: list[list[PrimaryLift]]
) -> tuple[list[Shrunk], tuple[float, float] | None]:
    """Every primary comparison the campaign made (the prior's data), raw and shrunk."""
    estimates = [(rec, p) for rec, found in zip(records, primaries, strict=True) for p in found]
    prior = empirical_bayes_prior([(p.log_lift, p.se) for _, p in estimates])
    shrunk = [
        Shrunk(
            iteration=rec.iteration,
            variant=p.variant,
            shipped=p.variant == rec.winner,
            raw=p.raw,
            shrunk=shrink(p.log_lift, p.se, prior) if prior else p.raw,
        )
        for rec, p in estimates
    ]
    return shrunk, prior


def next_steps(records: list[IterationRecord]) -> list[str]:
    """What to test next, from the latest iteration: the backlog, a rerun, vetoes, weak links."""
    last = records[-1]
    steps: list[str] = []
    if last.next_spec.startswith("none"):
        steps.append(
            "The backlog ran dry: no challenger is left for the next iteration "
            f"({last.next_spec.removeprefix('none: ')}). Add ideas under `backlog:` — e.g. a "
            "new offer, preheader or from-name test against the current control "
            f"{last.winner or last.control!r}."
        )
    elif last.next_spec:
        steps.append(f"The next spec is written: {last.next_spec}")
    if last.status == Status.KEEP_TESTING.value:
        steps.append("The last test was inconclusive: its variants run again (larger sample).")
    for note in last.send_time_notes:
        if "not yet conclusive" in note:
            steps.append(f"Send time, {note}")
    if last.vetoed:
        steps.append(
            f"{', '.join(last.vetoed)} broke a guardrail: do not reuse its approach without a fix."
        )
    steps += _hardly_clicked(last)
    return steps


def _hardly_clicked(record: IterationRecord) -> list[str]:
    """Links of the mail going out next that drew under half an even share of its human clicks."""
    arm = record.winner if record.status == Status.SHIP.value and record.winner else record.control
    shares = (record.link_clicks or {}).get(arm, {})
    if len(shares) < 2:
        return []
    even = 1 / len(shares)
    return [
        f"The link {url} drew only {share:.0%} of the human clicks in {arm!r} (an even share "
        f"would be {even:.0%}): rework or replace what it offers in the next mailing."
        for url, share in shares.items()
        if share < even / 2
    ]


# --- earlier sends ------------------------------------------------------------------------------


def baseline_from_history(spec: ExperimentSpec, results_paths: list[str | Path]) -> float:
    """The control rate of ``spec``'s primary metric pooled over earlier sends' ``results.json``.

    Pooled (total numerator / total denominator), so a big send weighs more than a small one.
    """
    if not results_paths:
        raise ValueError("no results.json of earlier sends given")
    numerator = denominator = 0.0
    for path in results_paths:
        results = ExperimentResults.read_json(path)
        control = next((v for v in results.variants if v.is_control), None)
        value = control.metrics.get(spec.primary_metric) if control else None
        if value is None:
            raise ValueError(f"{path}: the control has no {spec.primary_metric}; pick other sends")
        numerator += value.numerator
        denominator += value.denominator
    if denominator == 0 or not 0 < numerator / denominator < 1:
        raise ValueError(
            f"{spec.primary_metric} of the earlier controls is {numerator:g}/{denominator:g}: "
            "not a usable baseline rate; give one with baseline_rate"
        )
    return numerator / denominator

"""The closed-loop report: every iteration of a campaign, read back from MLflow, side by side.

:func:`build_report` reads the campaign's analysis runs through the MLflow API (the
``loopexp.iteration`` and ``loopexp.parent_run_id`` tags, and each run's ``results.json``
artifact) and assembles:

* the KPI trend: delivery, human open, human click, conversion, revenue per delivered recipient,
  unsubscribe and complaint rates of everyone mailed in each iteration (and of its control);
* each iteration's decision and winner (or best challenger) with the interval the decision used;
* the cumulative lift of the current control over the first: the product of the shipped winners'
  within-test lifts (each one randomised; their log-ratios add, with variances from the
  intervals), raw and shrunk;
* winner's curse: the lift of a shipped winner was selected for looking best, so it is biased
  upward. An empirical-Bayes normal prior on the log lift (DerSimonian-Laird moments over every
  primary comparison the campaign ever made, read from MLflow) shrinks each estimate; the shrunk
  lift is reported beside the raw one (:mod:`loopexp.learn.shrinkage`, which also plans the
  next iteration from it);
* incremental revenue against the holdout and the per-link click distribution when the results
  carry them, else a note saying what is missing;
* what to test next (the backlog ran dry, a send-time window not yet conclusive, ...).

:func:`write_html` renders it (every text from specs or data through ``html.escape``) and
:func:`log_report` logs it as an artifact of a ``closed-loop report`` run in the campaign's
experiment (tag ``loopexp.kind=report``; the iteration listing skips such runs).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from scipy import stats as sps

from loopexp.analysis.results import ExperimentResults, Status
from loopexp.core import tags as tag
from loopexp.core.errors import InputError
from loopexp.learn.shrinkage import Lift, empirical_bayes_prior, log_lift, shrink
from loopexp.track.tracking import (
    TrackingUnavailableError,
    _client,
    _reachable,
    download_artifact,
    list_runs,
    resolve_tracking_uri,
)

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
#: Tag that marks a run as a closed-loop report (not an iteration).

#: Artifact a run may carry with its send-time analysis (see :mod:`loopexp.learn.sendtime`).
SEND_TIME_ARTIFACT = "send_time.json"


class ReportError(InputError):
    """The report cannot be built (no such campaign, no analysed iteration)."""


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


class IterationRecord(_Model):
    """One analysed iteration as read back from MLflow."""

    run_id: str
    parent_run_id: str | None
    lineage_ok: bool
    """The parent run id is the previous iteration's run (or there is no previous one)."""
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
    next_spec: str
    send_windows: dict[str, str] = Field(default_factory=dict)
    send_time_notes: list[str] = Field(default_factory=list)
    vetoed: list[str] = Field(default_factory=list)
    incremental_revenue: Incremental | None = None
    link_clicks: dict[str, dict[str, float]] | None = None


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


# --- reading back -------------------------------------------------------------------------------


def campaign_runs(campaign: str, tracking_uri: str | None = None) -> list[Any]:
    """The campaign's FINISHED analysis runs, one per iteration (the latest), oldest first."""
    uri = resolve_tracking_uri(tracking_uri)
    latest: dict[int, Any] = {}
    for run in list_runs(campaign, uri):
        tags = run.data.tags
        if tags.get(tag.KIND) == "report" or run.info.status != "FINISHED":
            continue
        iteration = tags.get(tag.ITERATION, "")
        if not iteration.isdigit():
            continue
        latest[int(iteration)] = run  # list_runs is oldest first: the last one wins
    return [latest[i] for i in sorted(latest)]


def _artifact_json(run_id: str, name: str, uri: str, folder: Path) -> dict | None:
    try:
        path = download_artifact(run_id, name, uri, folder)
    except TrackingUnavailableError:
        raise
    except Exception:  # MLflow raises several types for a missing artifact
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _pooled(results: ExperimentResults, metric: str) -> float | None:
    num = den = 0.0
    for v in results.variants:
        m = v.metrics.get(metric)
        if m is not None:
            num, den = num + m.numerator, den + m.denominator
    return num / den if den else None


def _record(run: Any, results: ExperimentResults, previous: str | None, st: dict | None):
    tags = run.data.tags
    d = results.decision
    control = next((v for v in results.variants if v.is_control), None)
    parent = tags.get(tag.PARENT_RUN_ID) or None
    windows: dict[str, str] = {}
    notes: list[str] = []
    if st:
        windows = {w["segment"]: w["slot"] for w in st.get("windows", []) if w.get("slot")}
        notes = [f"{w['segment']}: {w['reason']}" for w in st.get("windows", []) if w.get("reason")]
    return IterationRecord(
        run_id=run.info.run_id,
        parent_run_id=parent,
        lineage_ok=previous is None or parent == previous,
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
        next_spec=tags.get(tag.NEXT_SPEC, ""),
        send_windows=windows,
        send_time_notes=notes,
        vetoed=sorted({g.variant for g in d.guardrails if not g.passed}),
        incremental_revenue=_incremental_revenue(results),
        link_clicks=_link_shares(results),
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


# --- the report --------------------------------------------------------------------------------


def build_report(
    campaign: str, tracking_uri: str | None = None, workdir: str | Path | None = None
) -> ClosedLoopReport:
    """Read every iteration of ``campaign`` back from MLflow and assemble the report."""
    uri = resolve_tracking_uri(tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in logs
    runs = campaign_runs(campaign, uri)
    if not runs:
        raise ReportError(
            f"campaign {campaign!r} has no analysed iteration in {uri}: run `loopexp run` (or "
            "`loopexp demo`) first, or check --tracking-uri and the campaign name"
        )
    folder = Path(workdir or tempfile.mkdtemp(prefix="loopexp-report-"))
    records: list[IterationRecord] = []
    all_results: list[ExperimentResults] = []
    previous: str | None = None
    for run in runs:
        sub = folder / run.info.run_id
        sub.mkdir(parents=True, exist_ok=True)
        raw = _artifact_json(run.info.run_id, "results.json", uri, sub)
        if raw is None:
            continue
        results = ExperimentResults.model_validate(raw)
        st = _artifact_json(run.info.run_id, SEND_TIME_ARTIFACT, uri, sub)
        records.append(_record(run, results, previous, st))
        all_results.append(results)
        previous = run.info.run_id
    if not records:
        raise ReportError(f"campaign {campaign!r}: no run has a results.json artifact")

    # Every primary comparison the campaign made: the prior's data.
    estimates: list[tuple[int, str, bool, Lift, tuple[float, float]]] = []
    for rec, results in zip(records, all_results, strict=True):
        for c in results.comparisons:
            if c.metric != rec.primary_metric:
                continue
            ys = log_lift(c.rel_lift, c.rel_ci_low, c.rel_ci_high, c.ci_level)
            if ys is None:
                continue
            raw_lift = Lift(
                value=c.rel_lift, low=c.rel_ci_low, high=c.rel_ci_high, level=c.ci_level or 0.95
            )
            estimates.append((rec.iteration, c.variant, c.variant == rec.winner, raw_lift, ys))
    prior = empirical_bayes_prior([e[4] for e in estimates])
    notes: list[str] = []
    if prior is None:
        notes.append(
            f"only {len(estimates)} past comparison(s) in this campaign: too few to learn a "
            "prior, so the lifts are not shrunk yet (raw = shrunk)"
        )
    shrunk = [
        Shrunk(
            iteration=it,
            variant=v,
            shipped=shipped,
            raw=raw_lift,
            shrunk=shrink(*ys, prior) if prior else raw_lift,
        )
        for it, v, shipped, raw_lift, ys in estimates
    ]
    cumulative, cumulative_shrunk = _cumulative(shrunk)
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
    return ClosedLoopReport(
        campaign=campaign,
        tracking_uri=uri,
        iterations=records,
        prior_mean=prior[0] if prior else None,
        prior_sd=prior[1] if prior else None,
        prior_tests=len(estimates),
        shrunk=shrunk,
        cumulative=cumulative,
        cumulative_shrunk=cumulative_shrunk,
        next_steps=_next_steps(records),
        notes=notes,
    )


def _cumulative(shrunk: list[Shrunk]) -> tuple[Lift, Lift]:
    """Product of the shipped winners' lifts (log ratios add; independent tests' variances too)."""
    out = []
    for pick in ("raw", "shrunk"):
        total = var = 0.0
        for s in shrunk:
            if not s.shipped:
                continue
            lift: Lift = getattr(s, pick)
            ys = log_lift(lift.value, lift.low, lift.high, lift.level)
            if ys is None:
                continue
            total, var = total + ys[0], var + ys[1] ** 2
        z = float(sps.norm.ppf(0.975))
        sd = math.sqrt(var)
        out.append(
            Lift(
                value=math.expm1(total),
                low=math.expm1(total - z * sd),
                high=math.expm1(total + z * sd),
                level=0.95,
            )
        )
    return out[0], out[1]


def _next_steps(records: list[IterationRecord]) -> list[str]:
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


# --- HTML ---------------------------------------------------------------------------------------


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:+.{digits}%}"


def _rate(x: float | None, metric: str) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.2f}" if metric == "revenue_per_delivered" else f"{x:.3%}"


def _money(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:+,.0f}"


def _interval(lift: Lift) -> str:
    if lift.value is None:
        return "—"
    level = f" ({lift.level:.1%} CI)" if lift.level else ""
    return f"{_pct(lift.value)} [{_pct(lift.low)}, {_pct(lift.high)}]{level}"


def trend_plot(report: ClosedLoopReport) -> Any:
    """The KPI trend by iteration (everyone mailed, and the control) as a matplotlib figure."""
    import matplotlib.pyplot as plt  # noqa: PLC0415 (plots only when rendering)

    its = [r.iteration for r in report.iterations]
    fig, axes = plt.subplots(2, 4, figsize=(12, 5))
    for ax, (metric, label) in zip(axes.flat, KPIS.items(), strict=False):
        ax.plot(its, [r.kpis.get(metric) for r in report.iterations], "o-", label="all mailed")
        ax.plot(
            its, [r.control_kpis.get(metric) for r in report.iterations], "s--", label="control"
        )
        ax.set_title(label, fontsize=9)
        ax.set_xticks(its)
    axes.flat[-1].axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"KPI trend by iteration: {report.campaign}", fontsize=10)
    fig.tight_layout()
    return fig


def _trend_png(report: ClosedLoopReport) -> str:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig = trend_plot(report)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def decisions_frame(report: ClosedLoopReport) -> Any:
    """One row per iteration: decision, winner, the lift with its interval, vetoes, lineage."""
    import pandas as pd  # noqa: PLC0415

    return pd.DataFrame(
        [
            {
                "iteration": r.iteration,
                "control": r.control,
                "decision": r.status,
                "winner / best": r.winner
                or (f"({r.best_challenger})" if r.best_challenger else ""),
                f"lift of {r.primary_metric}": _interval(r.lift),
                "vetoed": ", ".join(r.vetoed),
                "lineage": "ok" if r.lineage_ok else "broken",
            }
            for r in report.iterations
        ]
    ).set_index("iteration")


def links_frame(report: ClosedLoopReport, iteration: int | None = None) -> Any:
    """Links × variants of one iteration (default: the latest with link data): share of clicks.

    Each cell is the link's share of the variant's human clicks; the control comes first and
    links are ordered by its share, so the hardly-clicked ones sit at the bottom. Empty when no
    iteration has link data.
    """
    from loopexp.report.views import share_table  # noqa: PLC0415 (pandas only when asked)

    with_links = [r for r in report.iterations if r.link_clicks]
    if iteration is not None:
        with_links = [r for r in with_links if r.iteration == iteration]
    if not with_links:
        return share_table({}, None)
    record = with_links[-1]
    return share_table(record.link_clicks or {}, record.control)


def shrinkage_frame(report: ClosedLoopReport) -> Any:
    """One row per primary comparison: raw and shrunk lift with intervals."""
    import pandas as pd  # noqa: PLC0415

    return pd.DataFrame(
        [
            {
                "iteration": s.iteration,
                "challenger": s.variant,
                "shipped": s.shipped,
                "raw lift": _interval(s.raw),
                "shrunk lift": _interval(s.shrunk),
            }
            for s in report.shrunk
        ]
    )


def report_html(report: ClosedLoopReport, plot: bool = True) -> str:
    """The report as a self-contained HTML page (all text escaped)."""
    e = html.escape
    parts = [f"<h1>Closed-loop report: {e(report.campaign)}</h1>"]
    parts.append(
        f"<p>{len(report.iterations)} iteration(s) read back from MLflow "
        f"({e(report.tracking_uri)}).</p>"
    )
    parts.append(
        "<h2>Decisions</h2><table><tr><th>iteration</th><th>experiment</th>"
        "<th>control</th><th>decision</th><th>winner / best challenger</th>"
        "<th>lift of the primary metric</th><th>guardrail vetoes</th>"
        "<th>lineage</th></tr>"
    )
    for r in report.iterations:
        who = r.winner or (f"({r.best_challenger})" if r.best_challenger else "—")
        lineage = "ok" if r.lineage_ok else f"parent {r.parent_run_id or 'missing'}: broken"
        parts.append(
            f"<tr><td>{r.iteration}</td><td>{e(r.name)}</td><td>{e(r.control)}</td>"
            f"<td>{e(r.status)}</td><td>{e(who)}</td>"
            f"<td>{e(r.primary_metric)}: {e(_interval(r.lift))}</td>"
            f"<td>{e(', '.join(r.vetoed) or '—')}</td><td>{e(lineage)}</td></tr>"
        )
    parts.append("</table>")
    parts.append("<h2>KPI trend (everyone mailed)</h2><table><tr><th>iteration</th>")
    parts += [f"<th>{e(label)}</th>" for label in KPIS.values()]
    parts.append("</tr>")
    for r in report.iterations:
        cells = "".join(f"<td>{e(_rate(r.kpis.get(k), k))}</td>" for k in KPIS)
        parts.append(f"<tr><td>{r.iteration}</td>{cells}</tr>")
    parts.append("</table>")
    if plot:
        parts.append(f'<img alt="KPI trend" src="data:image/png;base64,{_trend_png(report)}"/>')
    parts.append("<h2>What the loop earned</h2><ul>")
    parts.append(
        f"<li>Cumulative lift of the current control over the first (product of the shipped "
        f"winners' lifts): raw {e(_interval(report.cumulative))}; shrunk "
        f"{e(_interval(report.cumulative_shrunk))}</li>"
    )
    for r in report.iterations:
        inc = r.incremental_revenue
        if inc is not None:
            parts.append(
                f"<li>Iteration {r.iteration}: revenue the mailing added over the no-mail holdout "
                f"{e(_money(inc.total))} ({inc.level:.0%} CI {e(_money(inc.low))} to "
                f"{e(_money(inc.high))}; {inc.per_recipient:+.3f} per recipient, "
                f"{e(_pct(inc.rel_lift))} over not mailing)</li>"
            )
    parts.append("</ul>")
    parts.append(
        "<h2>Winner's curse: raw and shrunk lifts</h2><p>Empirical-Bayes prior on the log lift "
        f"from the campaign's {report.prior_tests} primary comparison(s): "
        + (
            f"mean {_pct(math.expm1(report.prior_mean))}, spread (sd of log lift) "
            f"{report.prior_sd:.3f}."
            if report.prior_mean is not None and report.prior_sd is not None
            else "not enough tests yet."
        )
        + "</p><table><tr><th>iteration</th><th>challenger</th><th>shipped</th><th>raw</th>"
        "<th>shrunk</th></tr>"
    )
    for s in report.shrunk:
        parts.append(
            f"<tr><td>{s.iteration}</td><td>{e(s.variant)}</td><td>{'yes' if s.shipped else ''}"
            f"</td><td>{e(_interval(s.raw))}</td><td>{e(_interval(s.shrunk))}</td></tr>"
        )
    parts.append("</table>")
    windows = [r for r in report.iterations if r.send_windows]
    if windows:
        parts.append(
            "<h2>Send time: recommended window per segment</h2><table>"
            "<tr><th>iteration</th><th>windows</th></tr>"
        )
        for r in windows:
            text = ", ".join(f"{k} {v}" for k, v in sorted(r.send_windows.items()))
            parts.append(f"<tr><td>{r.iteration}</td><td>{e(text)}</td></tr>")
        parts.append("</table>")
    links = [r for r in report.iterations if r.link_clicks]
    parts.append("<h2>Link click distribution</h2>")
    if links:
        parts.append("<p>Each link's share of the variant's human clicks (bots excluded).</p>")
        for r in links:
            frame = links_frame(report, r.iteration)
            head = "".join(f"<th>{e(v)}</th>" for v in frame.columns)
            rows = "".join(
                f"<tr><td>{e(link)}</td>" + "".join(f"<td>{x:.1%}</td>" for x in row) + "</tr>"
                for link, row in zip(frame.index, frame.to_numpy(), strict=True)
            )
            parts.append(
                f"<h3>Iteration {r.iteration}</h3><table><tr><th>link</th>{head}</tr>{rows}</table>"
            )
    else:
        parts.append("<p>Not available in these results.</p>")
    parts.append("<h2>What to test next</h2><ul>")
    parts += [f"<li>{e(step)}</li>" for step in report.next_steps]
    parts.append("</ul>")
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in report.notes))
        parts.append("</ul>")
    body = "".join(parts)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(report.campaign)} · closed-loop report</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #ddd}"
        f"</style></head><body>{body}</body></html>"
    )


def write_html(report: ClosedLoopReport, path: str | Path, plot: bool = True) -> Path:
    """Write the report's HTML page; return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(report, plot), encoding="utf-8")
    return path


def log_report(report: ClosedLoopReport, html_path: str | Path) -> str:
    """Log the HTML (and the report as JSON) to a FINISHED report run; return its run id."""
    uri = report.tracking_uri
    html_path = Path(html_path)
    json_path = html_path.with_suffix(".json")
    json_path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    with _reachable(uri):
        client = _client(uri)
        experiment = client.get_experiment_by_name(report.campaign)
        if experiment is None:
            raise ReportError(f"campaign {report.campaign!r} has no MLflow experiment in {uri}")
        last = report.iterations[-1]
        run = client.create_run(
            experiment.experiment_id,
            run_name=f"closed-loop report · {len(report.iterations)} iteration(s)",
            tags={
                tag.KIND: "report",
                tag.CAMPAIGN: report.campaign,
                tag.REPORT_ITERATIONS: str(len(report.iterations)),
                tag.PARENT_RUN_ID: last.run_id,
            },
        )
        status = "FAILED"
        try:
            client.log_artifact(run.info.run_id, str(html_path), artifact_path="report")
            client.log_artifact(run.info.run_id, str(json_path), artifact_path="report")
            if report.cumulative.value is not None:
                client.log_metric(run.info.run_id, "cumulative.rel_lift", report.cumulative.value)
            status = "FINISHED"
        finally:  # never leave a run RUNNING
            client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


__all__ = [
    "KPIS",
    "ClosedLoopReport",
    "Incremental",
    "IterationRecord",
    "ReportError",
    "Shrunk",
    "build_report",
    "campaign_runs",
    "decisions_frame",
    "links_frame",
    "log_report",
    "report_html",
    "shrinkage_frame",
    "trend_plot",
    "write_html",
]

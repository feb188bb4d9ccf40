"""When a decision may be read: after the outcomes it rests on have arrived.

A one-off send read 2 hours after sending counts only the fast responders: a click-rate decision
then favours whatever makes people respond sooner, not more, and every daily cron read is another
look at a fixed-horizon test. So a fixed-horizon one-off send is read once, at its final read
time: the last send plus the longest maturity window (:func:`loopexp.metrics.definitions.
maturity_hours`) among the primary metric and the guardrails, or ``decision.read_at``. Before
then the decision is ``keep_testing`` with that time in its reasons. The sequential method may
look earlier (its p-values are valid at every look), on recipients whose windows have closed
only: the engine censors the others (:mod:`loopexp.metrics.maturity`).

Events received by webhook (the collect stage's raw log) are final later again: a provider
retries a failed delivery for up to its retry window (SendGrid 24 h, Mailgun 8 h, ...), so an
event of the last hour of the window may still arrive that long after it. The final read time
then adds that retry lag (:func:`webhook_retry_lag`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loopexp.design.spec import ExperimentSpec
from loopexp.events.completeness import FILE as COMPLETENESS_FILE
from loopexp.metrics.definitions import WEBHOOK_RETRY_LAG_HOURS, maturity_hours


@dataclass(frozen=True)
class ReadTime:
    """When the data were read, and when the test's outcomes are final.

    Attributes:
        as_of: the time of this read (UTC).
        final_read_at: when a one-off send is read (UTC); None when no send time is known or the
            test enrols continuously (read at its planned sample instead).
        window_hours: the longest maturity window among the primary metric and guardrails.
        last_sent_at: the campaign's last send (or delivery) event, UTC, when known.
        from_spec: True when ``final_read_at`` is the spec's ``decision.read_at``.
        retry_lag_hours: the webhook providers' retry lag added to the window (0: exports).
    """

    as_of: datetime
    final_read_at: datetime | None
    window_hours: float
    last_sent_at: datetime | None = None
    from_spec: bool = False
    retry_lag_hours: float = 0.0

    @property
    def due(self) -> bool:
        """True when the outcomes are final (or no final read time applies)."""
        return self.final_read_at is None or self.as_of >= self.final_read_at


def utc_text(when: datetime | None) -> str | None:
    """ISO text of a UTC time to the second (``2026-03-05T09:05:00Z``), None stays None."""
    if when is None:
        return None
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def decision_window_hours(spec: ExperimentSpec) -> float:
    """The longest maturity window (hours) among the primary metric and the guardrails."""
    names = [spec.primary_metric, *(g.metric for g in spec.guardrails)]
    return max(maturity_hours(spec.metric(n)) for n in names)


def webhook_retry_lag(events_path: str | Path) -> float:
    """Hours a webhook provider may still retry, when ``events_path`` came from the raw log.

    ``loopexp ingest`` writes ``completeness.json`` beside the events exactly when its inputs
    included the webhook receiver's raw log (:mod:`loopexp.events.completeness`), with the
    slowest retry window of the providers in it. Without that file the events are exports: 0.
    A report without a readable window falls back to :data:`WEBHOOK_RETRY_LAG_HOURS`.
    """
    report = Path(events_path).parent / COMPLETENESS_FILE
    if not report.is_file():
        return 0.0
    try:
        window = json.loads(report.read_text(encoding="utf-8")).get("retry_window_hours")
        return max(0.0, float(window))
    except (ValueError, TypeError, AttributeError, OSError):
        return WEBHOOK_RETRY_LAG_HOURS  # a report we cannot read: the documented default lag


def read_time(
    spec: ExperimentSpec,
    last_sent_at: datetime | None,
    as_of: datetime | None = None,
    retry_lag_hours: float = 0.0,
) -> ReadTime:
    """The read time of ``spec`` at ``as_of`` (default: now), its send ending ``last_sent_at``.

    ``retry_lag_hours`` (events received by webhook: :func:`webhook_retry_lag`) is added to
    the longest maturity window.
    """
    now = _aware(as_of or datetime.now(UTC))
    hours = decision_window_hours(spec)
    sent = None if last_sent_at is None else _aware(last_sent_at)
    if spec.decision.read_at is not None:
        final: datetime | None = _aware(spec.decision.read_at)
    elif spec.enrolment == "one_off" and sent is not None:
        final = sent + timedelta(hours=hours + retry_lag_hours)
    else:
        final = None
    return ReadTime(
        now,
        final,
        hours,
        sent,
        from_spec=spec.decision.read_at is not None,
        retry_lag_hours=retry_lag_hours,
    )


def premature_reasons(spec: ExperimentSpec, read: ReadTime | None) -> list[str] | None:
    """Why a fixed-horizon one-off send may not be read yet, or None when it may be.

    The sequential method may be read at any look (on matured recipients): None for it too.
    """
    if read is None or read.due or spec.decision_method != "fixed":
        return None
    assert read.final_read_at is not None
    when = read.final_read_at.strftime("%Y-%m-%d %H:%M UTC")
    if read.from_spec:
        basis = "the spec's decision.read_at"
    else:
        basis = (
            f"the last send ({read.last_sent_at:%Y-%m-%d %H:%M} UTC) plus {read.window_hours:g} h, "
            "the longest maturity window of the primary metric and guardrails"
        )
        if read.retry_lag_hours:
            basis += (
                f", plus {read.retry_lag_hours:g} h for the webhook providers' retries (events "
                "received by webhook)"
            )
    waited = ""
    if read.last_sent_at is not None:
        waited = f", {(read.as_of - read.last_sent_at).total_seconds() / 3600:.1f} h after the send"
    return [
        f"Final read at {when} ({basis}). Read now ({read.as_of:%Y-%m-%d %H:%M} UTC{waited}), the "
        "outcomes are still arriving: a decision on them would favour whatever makes people "
        "respond sooner, not more, and each earlier read is another look at a fixed-horizon "
        "test. Keep testing and run again after the final read time (or use decision.method: "
        "sequential to look earlier, on recipients whose windows have closed)."
    ]


def early_look_note(spec: ExperimentSpec, read: ReadTime | None) -> list[str]:
    """A sequential look before the final read: say that only matured recipients counted."""
    if read is None or read.due or spec.decision_method != "sequential":
        return []
    assert read.final_read_at is not None
    return [
        f"Early look before the final read at {read.final_read_at:%Y-%m-%d %H:%M} UTC: only "
        "recipients whose outcome windows have closed are counted (always-valid, so this look "
        "is safe)."
    ]

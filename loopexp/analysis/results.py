"""The analysis result: typed records serialised as ``results.json`` (schema_version "1").

Other tools read this file, so field names are a public contract: extend it, never rename. The same
object renders as tables in the terminal (rich) and in Jupyter (HTML), and as DataFrames.
"""

from __future__ import annotations

import html
import json
import math
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_serializer

if TYPE_CHECKING:
    from loopexp.design.spec import ExperimentSpec

RESULTS_SCHEMA_VERSION = "1"


class Status(StrEnum):
    """What the decision says to do."""

    SHIP = "ship"
    KEEP_TESTING = "keep_testing"
    NO_DIFFERENCE = "no_difference"
    GUARDRAIL_VETO = "guardrail_veto"
    INVALID_SRM = "invalid_srm"
    """The split is broken: on the assignment, or on the delivered counts the metrics divide by."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_serializer("*", when_used="json")
    def _finite(self, value: Any) -> Any:
        # JSON has no NaN: undefined numbers (e.g. a lift over a zero control rate) become null.
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value


class ExperimentInfo(_Record):
    """Which experiment and iteration these results belong to."""

    name: str
    campaign: str
    iteration: int
    test_type: str
    spec_sha256: str
    decision_method: str | None = None
    """``fixed`` or ``sequential`` (always-valid); None in results written before it existed."""
    enrolment: str | None = None
    """``one_off`` or ``continuous`` (a lifecycle-flow step)."""

    @classmethod
    def from_spec(cls, spec: ExperimentSpec) -> ExperimentInfo:
        """The identity of ``spec``'s iteration, with its content fingerprint."""
        return cls(
            name=spec.name,
            campaign=spec.campaign,
            iteration=spec.iteration,
            test_type=spec.test_type.value,
            spec_sha256=spec.sha256(),
            decision_method=spec.decision_method,
            enrolment=spec.enrolment,
        )


class DataInfo(_Record):
    """Where the data came from and how much of it there was."""

    source: str
    fingerprint: str
    recipients: int
    events: int
    quarantined: int
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    unassigned_events: int = 0


class SRMResult(_Record):
    """Sample-ratio-mismatch check of the assignment."""

    p_value: float
    ok: bool
    expected: dict[str, float]
    observed: dict[str, int]


class PeriodSRM(_Record):
    """Sample-ratio check of one day of enrolment (or send batch), mailed variants only."""

    period: str
    p_value: float
    ok: bool
    alpha: float
    """The level it was checked at: ``decision.srm_alpha`` / number of periods checked."""
    observed: dict[str, int]
    kind: Literal["day", "send_batch"] = "day"  # send_batch: the UTC hour of the first send


class MetricValue(_Record):
    """A metric's value with the numbers it is made of."""

    value: float | None
    numerator: float
    denominator: int


class VariantResult(_Record):
    """One variant: assigned recipients and its metric values."""

    id: str
    is_control: bool
    n: int
    metrics: dict[str, MetricValue]


#: The figures of a comparison people read (tables) and compare across runs (MLflow metrics).
COMPARISON_FIGURES = (
    "estimate",
    "rel_lift",
    "rel_ci_low",
    "rel_ci_high",
    "p_value",
    "p_value_adjusted",
    "prob_beat_control",
)


class Comparison(_Record):
    """One challenger against the control on one metric."""

    metric: str
    variant: str
    control: str
    estimate: float
    rel_lift: float | None
    ci_low: float | None
    """Lower bound of the absolute difference's interval; null in JSON when unbounded (-inf) or
    undefined, e.g. a segment arm with a single delivered recipient."""
    ci_high: float | None
    """Upper bound; null in JSON when unbounded (+inf) or undefined."""
    rel_ci_low: float | None
    rel_ci_high: float | None
    p_value: float
    p_value_adjusted: float
    prob_beat_control: float | None
    expected_loss: float | None
    method: str
    ci_level: float | None = None
    """Confidence level of ``ci_*`` and ``rel_ci_*``: the level the adjusted test used (e.g. 0.975
    for the smaller of two Holm-rejected p-values), so the interval excludes 0 exactly when
    ``p_value_adjusted`` < alpha. None in results written before this field existed (then 0.95)."""
    family_size: int | None = None
    """Number of hypotheses in this comparison's multiplicity family."""
    prob_best: float | None = None
    """Posterior probability that this challenger is the best of all arms (control included)."""
    expected_loss_abs: float | None = None
    """Expected loss of shipping this challenger, in the metric's own units (rate or currency)."""
    bayes_method: str | None = None
    """How ``prob_beat_control``, ``prob_best`` and the expected losses were computed."""
    covariates: list[str] | None = None
    """Pre-period covariates of a regression-adjusted comparison (None: not adjusted)."""
    ci_narrowing: float | None = None
    """How much shorter the adjusted interval is than the unadjusted one (1 - se_adj / se)."""


class IncrementalityResult(_Record):
    """A mailed arm (or ``all_mailed``) against the no-mail holdout, per assigned recipient.

    Intent to treat: everyone assigned is in the denominator, mailed or not, delivered or not.
    ``incremental_*`` are the totals the mailing added over not mailing (difference × recipients
    assigned to the arm): conversions for a rate, revenue for a mean.
    """

    metric: str
    arm: str
    n_arm: int
    n_holdout: int
    arm_value: float
    holdout_value: float
    estimate: float
    ci_low: float | None
    ci_high: float | None
    rel_lift: float | None
    rel_ci_low: float | None
    rel_ci_high: float | None
    p_value: float
    p_value_adjusted: float
    incremental_total: float
    incremental_ci_low: float | None
    incremental_ci_high: float | None
    ci_level: float
    method: str


class LinkClicks(_Record):
    """Human clicks on one normalised link in one variant: which links drew the clicks.

    ``share`` is the link's share of the variant's human clicks on links; bot clicks,
    quarantined and duplicate events never count (see :mod:`loopexp.metrics.links`).
    """

    variant_id: str
    link: str
    clicks: int
    clickers: int
    share: float


class NotCompared(_Record):
    """A comparison that could not be made: it is never evidence of "no difference"."""

    metric: str
    variant: str
    segment: str
    reason: str


class HeterogeneityResult(_Record):
    """Does a challenger's effect differ between segments? Cochran's Q on the log ratio."""

    metric: str
    variant: str
    q: float
    df: int
    p_value: float
    i_squared: float
    segments: list[str]
    """Segments with events in both arms (a log ratio needs them)."""


class SegmentResult(_Record):
    """Per-segment variants and comparisons (exploratory: the decision uses the whole audience).

    P-values are adjusted across segments x challengers (x metrics for secondary metrics), and the
    intervals are at the matching levels: a segment "win" is a win after looking at every segment.
    """

    segment: str
    variants: list[VariantResult]
    comparisons: list[Comparison]


class GuardrailResult(_Record):
    """Whether a challenger stays within a guardrail."""

    metric: str
    variant: str
    rel_lift: float | None
    rel_ci_low: float | None
    rel_ci_high: float | None
    max_relative_increase: float
    passed: bool
    mode: str = "harm"
    """``harm``: veto when a worsening beyond the margin is shown; ``non_inferiority``: veto unless
    the challenger is shown not to be worse by more than the margin."""
    p_value: float | None = None
    """One-sided p-value of the test the veto used, compared with alpha / 2."""
    ci_level: float | None = None
    """Two-sided level of ``rel_ci_*`` (1 - alpha): its end on the bad side is the one-sided
    bound of the test (beyond the margin for a harm veto, within it for a non-inferiority pass)."""
    no_data: bool = False
    """True when the guardrail could not be judged: no event of its type in any arm (an export
    lacking that type), or an arm without enough recipients. Not a pass (``passed`` is False),
    and not a veto: a winner waits (keep_testing) until the guardrail has data."""
    note: str | None = None
    """Why the guardrail has no data, in words (with ``no_data``)."""


class Decision(_Record):
    """The decision and its reasons, in plain words."""

    status: Status
    winner: str | None
    primary_metric: str
    reasons: list[str]
    guardrails: list[GuardrailResult] = Field(default_factory=list)
    best_challenger: str | None = None
    """Winner, or the most promising challenger when there is no winner."""
    rel_lift: float | None = None
    rel_ci_low: float | None = None
    rel_ci_high: float | None = None
    p_value_adjusted: float | None = None
    prob_beat_control: float | None = None
    ci_level: float | None = None
    """Level of ``rel_ci_*`` above (the level the decision's adjusted test used)."""
    recipients_per_variant: int | None = None
    """Fewest recipients assigned to a variant at this analysis (for the planned-sample gate)."""
    planned_recipients_per_variant: int | None = None
    """The plan's sample per variant; a fixed-horizon test is read only once it is reached."""
    final_read_at: str | None = None
    """When a one-off send's outcomes are final and it is read (UTC, ISO 8601): the last send
    plus the longest maturity window of the primary metric and guardrails, or decision.read_at.
    A fixed-horizon test read before then says keep_testing. None: continuous enrolment, or no
    send time in the data."""
    before_final_read: bool = False
    """True when the data were read before ``final_read_at``: outcomes still arriving (a
    fixed-horizon test then keeps testing; a sequential one looked at matured recipients)."""
    detectable_rel_lift: float | None = None
    """A read far below the planned sample: the smallest relative lift of the primary metric
    this many recipients per variant detect with the spec's power (else None)."""
    shrunk_rel_lift: float | None = None
    """With ``detectable_rel_lift``: the reported lift shrunk for the winner's curse (normal
    prior of true log lifts N(0, log(1 + MDE)²)), beside the raw ``rel_lift``."""


class PolicyShareInfo(_Record):
    """A policy iteration's split (issue 27): the analysis above describes the explored share."""

    explored: int
    """Recipients in the uniformly randomised exploration share (holdout included)."""
    policy: int
    """Recipients whose variant the policy's rules chose: judged by its realised gain."""
    exploration: float
    """The spec's ``policy.exploration``."""


class ExperimentResults(_Record):
    """Everything one analysis of one iteration produced: the ``results.json`` contract."""

    schema_version: str = RESULTS_SCHEMA_VERSION
    experiment: ExperimentInfo
    data: DataInfo
    srm: SRMResult
    variants: list[VariantResult]
    comparisons: list[Comparison]
    segments: list[SegmentResult] = Field(default_factory=list)
    decision: Decision
    not_compared: list[NotCompared] = Field(default_factory=list)
    """Comparisons that could not be made (too few recipients in an arm), with the reason."""
    delivery_srm: SRMResult | None = None
    """Sample-ratio check of the delivered counts (the denominator of delivered-based metrics)."""
    heterogeneity: list[HeterogeneityResult] = Field(default_factory=list)
    """Per challenger and metric: does the effect differ between lifecycle segments?"""
    incrementality: list[IncrementalityResult] = Field(default_factory=list)
    """Each mailed arm and all pooled against the no-mail holdout (when the spec has one)."""
    links: list[LinkClicks] = Field(default_factory=list)
    """Per-link human clicks per variant, most-clicked first (empty when events carry no URL)."""
    policy_share: PolicyShareInfo | None = None
    """With deployed policy rules: variants, comparisons and SRM describe the exploration share."""
    srm_by_period: list[PeriodSRM] = Field(default_factory=list)
    """The split per day of enrolment (``enrolled_at``) or send batch of a one-off send, when two
    or more: a send broken on one day or in one batch invalidates the run, naming it."""
    opens: dict[str, Any] | None = None
    """Opens after Apple MPP (issue 28): :func:`loopexp.analysis.opens.opens_section`."""

    def to_json(self) -> str:
        """Serialise as indented JSON (NaN written as null)."""
        return self.model_dump_json(indent=2)

    def write_json(self, path: str | Path) -> Path:
        """Write ``results.json`` (creating folders) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def read_json(cls, path: str | Path) -> ExperimentResults:
        """Read a ``results.json`` written by :meth:`write_json`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        version = data.get("schema_version")
        if version != RESULTS_SCHEMA_VERSION:
            raise ValueError(
                f"{path}: results schema_version {version!r}; this loopexp reads "
                f"{RESULTS_SCHEMA_VERSION!r}"
            )
        return cls.model_validate(data)

    def comparison(self, metric: str, variant: str) -> Comparison:
        """The comparison of ``variant`` against control on ``metric``."""
        for c in self.comparisons:
            if (c.metric, c.variant) == (metric, variant):
                return c
        raise KeyError(f"no comparison for metric={metric} variant={variant}")

    def variants_frame(self) -> pd.DataFrame:
        """Variants x metrics table of values."""
        rows = {v.id: {m: mv.value for m, mv in v.metrics.items()} for v in self.variants}
        frame = pd.DataFrame(rows).T
        frame.insert(0, "n", [v.n for v in self.variants])
        return frame

    def comparisons_frame(self) -> pd.DataFrame:
        """One row per (metric, challenger) comparison (the columns even when none was made)."""
        columns = list(Comparison.model_fields)
        return pd.DataFrame([c.model_dump() for c in self.comparisons], columns=columns)

    def incrementality_frame(self) -> pd.DataFrame:
        """One row per (metric, mailed arm or all_mailed) comparison with the holdout."""
        return pd.DataFrame([r.model_dump() for r in self.incrementality])

    def links_frame(self) -> pd.DataFrame:
        """One row per (variant, link): human clicks, distinct clickers, share of the variant's."""
        columns = list(LinkClicks.model_fields)
        return pd.DataFrame([r.model_dump() for r in self.links], columns=columns)

    def decision_dict(self) -> dict[str, Any]:
        """The decision with the lineage it came from: the content of ``decision.json``."""
        return {
            "schema_version": self.schema_version,
            "experiment": self.experiment.model_dump(mode="json"),
            "data_fingerprint": self.data.fingerprint,
            "srm": self.srm.model_dump(mode="json"),
            "decision": self.decision.model_dump(mode="json"),
        }

    def comparisons_table(
        self, metrics: list[str] | None = None, show_probability: bool = True
    ) -> Any:
        """A compact rich table of challenger-versus-control comparisons (fits 80 columns)."""
        from rich import box  # noqa: PLC0415 (rich only when printing)
        from rich.table import Table  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        from loopexp.analysis import formatting as fmt  # noqa: PLC0415

        title = f"{self.experiment.name} · iteration {self.experiment.iteration}"
        # Text, not str: a name like "[bold]" or "[/]" is shown literally, never parsed as markup.
        table = Table(
            title=Text(title), box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), pad_edge=False
        )
        table.add_column("metric", no_wrap=True)
        table.add_column("variant", no_wrap=True)
        for col in ("control", "value", "lift (CI)", "p adj."):
            table.add_column(col, justify="right", no_wrap=True)
        if show_probability:
            table.add_column("P(win)", justify="right", no_wrap=True)
        values = {v.id: v.metrics for v in self.variants}
        for c in self.comparisons:
            if metrics and c.metric not in metrics:
                continue
            interval = f"({fmt.fmt_points(c.rel_ci_low)}, {fmt.fmt_points(c.rel_ci_high)})"
            row = [
                c.metric,
                c.variant,
                fmt.fmt_value(c.metric, values[c.control][c.metric].value),
                fmt.fmt_value(c.metric, values[c.variant][c.metric].value),
                f"{fmt.fmt_pct(c.rel_lift)} {interval}{fmt.fmt_level(c.ci_level)}",
                fmt.fmt_p(c.p_value_adjusted),
            ]
            if show_probability:
                row.append("–" if c.prob_beat_control is None else f"{c.prob_beat_control:.0%}")
            table.add_row(*row)
        return table

    def guardrails_frame(self) -> pd.DataFrame:
        """The guardrails as the veto read them: lift, interval, margin, one-sided p."""
        from loopexp.analysis import formatting as fmt  # noqa: PLC0415

        rows = [
            {
                "guardrail": fmt.metric_label(g.metric),
                "variant": g.variant,
                "lift": fmt.fmt_pct(g.rel_lift),
                "interval": fmt.fmt_interval(g.rel_ci_low, g.rel_ci_high)
                + (f" ({g.ci_level:.0%})" if g.ci_level else ""),
                "margin": f"+{g.max_relative_increase:.0%}",
                "mode": g.mode.replace("_", "-"),
                "p (one-sided)": "–" if g.p_value is None else fmt.fmt_p(g.p_value),
                "verdict": "NO DATA" if g.no_data else ("passed" if g.passed else "VETO"),
            }
            for g in self.decision.guardrails
        ]
        return pd.DataFrame(rows)

    def guardrails_html(self) -> str:
        """:meth:`guardrails_frame` as HTML (nothing when the spec has no guardrails)."""
        table = self.guardrails_frame()
        return "" if table.empty else "<h4>Guardrails</h4>" + table.to_html(index=False)

    def summary_html(self) -> str:
        """An HTML summary (decision, reasons, comparisons, guardrails) for Jupyter and reports."""
        d = self.decision
        frame = self.comparisons_frame()[["metric", "variant", *COMPARISON_FIGURES[1:]]]
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in d.reasons)
        winner = f" → <b>{html.escape(d.winner)}</b>" if d.winner else ""
        return (
            f"<h3>{html.escape(self.experiment.name)} · iteration "
            f"{self.experiment.iteration}</h3>"
            f"<p>Decision: <b>{d.status.value}</b>{winner}. SRM p = {self.srm.p_value:.3g} "
            f"({'ok' if self.srm.ok else 'MISMATCH'}).</p><ul>{reasons}</ul>"
            + frame.to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="–")
            + self.guardrails_html()
        )

    def __rich__(self) -> Any:
        """Render the comparison table for the terminal."""
        return self.comparisons_table()

    def _repr_html_(self) -> str:
        """Render the decision, its reasons and the comparisons for Jupyter."""
        return self.summary_html()

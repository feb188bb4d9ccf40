"""Experiment specs: the YAML files in ``experiments/``, validated with pydantic.

A spec says what is tested (variants), on whom (audience segments), how it is judged (primary
metric, guardrails, decision rule) and where it came from (campaign, iteration, parent MLflow run).
Errors name the file, the line and the field, and say what to do.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import unicodedata
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from loopexp.core.errors import InputError
from loopexp.events.config import IngestConfig
from loopexp.metrics.definitions import HOLDOUT, LIBRARY, MetricDef, resolve_metric

SPEC_SCHEMA_VERSION = 1


class Segment(StrEnum):
    """Lifecycle segments of an email audience."""

    PROSPECT = "prospect"
    NEW_CUSTOMER = "new_customer"
    EXISTING_CUSTOMER = "existing_customer"
    INACTIVE = "inactive"


class TestType(StrEnum):
    """What the variants differ in."""

    __test__ = False  # not a pytest class

    SUBJECT_LINE = "subject_line"
    CONTENT = "content"
    SEND_TIME = "send_time"
    PREHEADER = "preheader"
    FROM_NAME = "from_name"
    MULTIVARIATE = "multivariate"
    """Factorial: ``factors`` with levels; the variants are the cells (every combination)."""


class _Model(BaseModel):
    # allow_inf_nan=False: `.inf` / `.nan` in YAML are floats, and no spec number may be one.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: Largest variant weight: weights are relative, and a sum that overflows (1e308) breaks shares.
MAX_WEIGHT = 1000.0
#: Largest holdout share: beyond it too few recipients are mailed to compare anything.
MAX_HOLDOUT = 0.99
#: Largest relative MDE or guardrail margin (+1000 %): anything larger is a typo (10 for 10 %?).
MAX_RELATIVE = 10.0


class Variant(_Model):
    """One arm of the test: what the recipients of this arm receive."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
    description: str = ""
    subject: str | None = None
    preheader: str | None = None
    """The preview text shown after the subject in the inbox."""
    from_name: str | None = None
    """The sender's display name."""
    content: str | None = None
    send_time: str | None = Field(default=None, description="local send time, HH:MM")
    weight: Annotated[float, Field(gt=0, le=MAX_WEIGHT)] = 1.0
    cell: dict[str, str] | None = None
    """For a multivariate (factorial) test: the level of each factor this cell combines."""


class FactorLevel(_Model):
    """One level of a factor: the message fields it sets in every cell that has it."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_]{0,19}$")]
    description: str = ""
    subject: str | None = None
    preheader: str | None = None
    from_name: str | None = None
    content: str | None = None
    send_time: str | None = None


class Factor(_Model):
    """A factor of a multivariate (factorial) test, e.g. ``subject`` with two levels."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,19}$")]
    levels: Annotated[list[FactorLevel], Field(min_length=2)]


#: Message fields a factor level can set.
_LEVEL_FIELDS = ("subject", "preheader", "from_name", "content", "send_time")


def factorial_cells(factors: list[Factor]) -> list[dict[str, Any]]:
    """The variants (as dicts) of a full factorial design: one per combination of levels.

    A cell's id joins its level ids with ``-`` in factor order (``plain-grid``); the first cell
    (every factor at its first level) is the natural control.
    """
    cells = []
    for combo in itertools.product(*(f.levels for f in factors)):
        cell: dict[str, Any] = {
            "id": "-".join(level.id for level in combo),
            "description": ", ".join(
                f"{f.name}={level.id}" for f, level in zip(factors, combo, strict=True)
            ),
            "cell": {f.name: level.id for f, level in zip(factors, combo, strict=True)},
        }
        for level in combo:
            for name in _LEVEL_FIELDS:
                value = getattr(level, name)
                if value is None:
                    continue
                if name in cell:
                    raise ValueError(
                        f"two factors set {name!r} (level {level.id!r} and another); each message "
                        "field may belong to one factor only"
                    )
                cell[name] = value
        cells.append(cell)
    return cells


class RecipientColumns(_Model):
    """Which columns of a recipient list (CSV or Parquet) hold what.

    The key is the ``id`` column as is, or else the keyed hash of the ``email`` column (see
    :mod:`loopexp.core.keys`); with neither set, a ``recipient_key`` column is used as the id, or an
    ``email`` column as the address.
    """

    id: str | None = None
    """A recipient id column used as the recipient key as is (e.g. the ESP's or the CRM's id)."""
    email: str | None = None
    """The e-mail address column: hashed into the key, and written only to the send lists."""
    segment: str = "segment"
    """The team's segment label; mapped to a lifecycle segment by ``audience.segment_map``."""
    consent: str | None = None
    """Double opt-in flag (true/false, yes/no, 1/0): rows without consent are excluded."""
    suppressed: str | None = None
    """Suppression flag (true/false, yes/no, 1/0): a key suppressed on any row is excluded."""


class Audience(_Model):
    """Who is in the test."""

    segments: list[Segment] = Field(default_factory=lambda: list(Segment), min_length=1)
    holdout: Annotated[float, Field(ge=0, le=MAX_HOLDOUT)] = 0.0
    """Share of the audience that is assigned to no mail at all (the ``holdout`` group)."""
    segment_map: dict[str, Segment] = Field(default_factory=dict)
    """The team's own segment labels → lifecycle segments, e.g. ``Existing Customer:
    existing_customer``. The lifecycle names themselves need no entry."""
    unmapped_segments: Literal["error", "exclude"] = "error"
    """A label that is neither a lifecycle segment nor in ``segment_map``: stop with an error
    (default), or exclude those recipients with the reason ``unmapped_segment``."""
    columns: RecipientColumns = Field(default_factory=RecipientColumns)
    filters: dict[str, list[str]] = Field(default_factory=dict)
    """Free filters: column → the values (as text) a recipient must have to be in the test."""
    exclude_tested_within_days: Annotated[int, Field(ge=1)] | None = None
    """Exclude recipients who got a test mail in the last N days (needs a contact history)."""

    def lifecycle_segment(self, label: str) -> Segment | None:
        """The lifecycle segment a list's label stands for, or None when it is unmapped."""
        if label in self.segment_map:
            return self.segment_map[label]
        try:
            return Segment(label)
        except ValueError:
            return None


class Guardrail(_Model):
    """A metric that must not get worse: it can veto a winner."""

    metric: str
    max_relative_increase: Annotated[float, Field(ge=0, le=MAX_RELATIVE)] = 0.0
    """The relative worsening allowed (the margin): an increase for a lower-is-better metric such
    as unsubscribes, a decrease for a higher-is-better one."""
    mode: Literal["harm", "non_inferiority"] = "harm"
    """How the margin is tested, one-sided at alpha / 2 (the two-sided interval at the spec's
    level):

    * ``harm`` (default): veto when the data show a worsening beyond the margin. A veto needs
      evidence, so with few events a real harm can pass unnoticed; the default because it works
      with a margin of 0 and with any sample size, and it never vetoes a flat challenger by
      lack of data.
    * ``non_inferiority``: veto unless the data show the challenger is *not* worse by more than
      the margin. Protects the guardrail as well as its power allows (``loopexp.design.plan``
      computes
      the recipients it needs); needs a margin > 0.
    """

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, name: str, info: ValidationInfo) -> str:
        # The spec's own `metrics:` reach here through the validation context (parse_spec); the
        # spec-level check below is the authoritative one when there is no context.
        if info.context is None:
            return name
        return _check_metric(name, info.context.get("custom_metrics", ()))

    @model_validator(mode="after")
    def _margin_for_non_inferiority(self) -> Guardrail:
        if self.mode == "non_inferiority" and self.max_relative_increase <= 0:
            raise ValueError(
                "a non_inferiority guardrail needs max_relative_increase > 0 (no challenger can "
                "prove it is not worse by any amount at all); set a margin such as 0.2, or use "
                "mode: harm"
            )
        return self


class BetaPrior(_Model):
    """Beta prior of every arm's rate in the Bayesian view of proportions."""

    a: Annotated[float, Field(gt=0)] = 1.0
    b: Annotated[float, Field(gt=0)] = 1.0


class DecisionRule(_Model):
    """How the analysis turns statistics into a decision."""

    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05
    power: Annotated[float, Field(gt=0.5, lt=1)] = 0.8
    mde_relative: Annotated[float, Field(gt=0, le=MAX_RELATIVE)] = 0.10
    """Smallest relative lift of the primary metric worth acting on."""
    correction: Literal["holm", "bonferroni", "fdr_bh", "none"] = "holm"
    srm_alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.001
    prior: BetaPrior = Field(default_factory=BetaPrior)
    """Beta(a, b) prior of each arm's rate for the beta-binomial view (chance to be best, expected
    loss). Default Beta(1, 1): uniform, worth two recipients, so any real send overrides it."""
    expected_delivery_rate: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Share of sent recipients expected to be delivered (from history): the plan counts the
    delivered population that delivered-based metrics divide by, then grosses up to sends."""
    method: Literal["fixed", "sequential"] | None = None
    """``fixed``: fixed-horizon tests, read once the planned sample is reached (a run before then
    says keep_testing, "n of N recipients"). ``sequential``: always-valid p-values and confidence
    sequences (loopexp.stats.sequential), safe to read at every look — what a daily cron needs.
    Default: ``sequential`` for continuous enrolment, ``fixed`` otherwise."""
    sequential_tuning_n: Annotated[int, Field(ge=10)] | None = None
    """Total recipients of a comparison (both arms) at which the confidence sequence is tightest
    [default: twice planned_recipients_per_variant, else 5000]."""
    cap_percentile: Annotated[float, Field(gt=0.5, lt=1)] | None = 0.99
    """Winsorise mean metrics (revenue) at this percentile of the non-zero per-recipient values,
    pooled over arms (computed in the engine); None = no capping. Default 0.99: with a few percent
    buyers and lognormal order values one large order can outweigh all others and flip the
    decision; capped at the 99th percentile of order values, the Fieller interval of revenue per
    delivered covers at 95 % on such data (bench/calibration.md). The metric is then revenue with
    orders capped at that value, stated in each comparison's ``method``."""


class DataRules(_Model):
    """How much bad data a run tolerates, and the resources of the metrics engine (DuckDB)."""

    max_quarantine_share: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Stop with an error, rather than decide, when more than this share of events is malformed."""
    memory_limit: (
        Annotated[str, Field(pattern=r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|[kmgt]i?b)\s*$")] | None
    ) = None
    """DuckDB's memory limit, e.g. ``4GB`` [default: $LOOPEXP_DUCKDB_MEMORY_LIMIT, else half of
    the memory available]."""
    temp_directory: str | None = None
    """Where DuckDB spills when over its limit [default: $LOOPEXP_DUCKDB_TEMP_DIR, else a fresh
    temporary folder]."""


#: A send slot: local wall-clock time, HH:MM (24 h).
SLOT_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class SendTimeSettings(_Model):
    """When each recipient is mailed: randomised over ``slots``, or at a learned window.

    A share ``explore_share`` of every segment (chosen by a salted hash, independent of the variant
    split) is randomised evenly over ``slots``; the rest is sent at its segment's ``windows`` entry
    (the slot a previous iteration recommended; ``slots[0]`` for a segment without one). With the
    default ``explore_share`` of 1 every recipient is randomised: a send-time test running beside
    the variant test. Slots are local times in each recipient's timezone where it is known
    (``timezone_column`` of the recipient list), else in ``default_timezone``. See
    :mod:`loopexp.learn.sendtime`.
    """

    slots: Annotated[list[Annotated[str, Field(pattern=SLOT_PATTERN)]], Field(min_length=2)]
    windows: dict[Segment, Annotated[str, Field(pattern=SLOT_PATTERN)]] = Field(
        default_factory=dict
    )
    explore_share: Annotated[float, Field(ge=0, le=1)] = 1.0
    default_timezone: str = "UTC"
    timezone_column: str | None = None

    @model_validator(mode="after")
    def _known_slots(self) -> SendTimeSettings:
        if len(set(self.slots)) != len(self.slots):
            raise ValueError(f"send_time.slots must be distinct; got {self.slots}")
        unknown = {s: w for s, w in self.windows.items() if w not in self.slots}
        if unknown:
            raise ValueError(
                f"send_time.windows {unknown} name slots not in send_time.slots {self.slots}"
            )
        return self


class AllocationSettings(_Model):
    """Adaptive weights for the next iteration (see :mod:`loopexp.learn.allocation`).

    Each next spec's challengers get Thompson-sampling (``top_two``: top-two) shares of the
    challengers' budget from this iteration's posterior; the control keeps its share, and no
    challenger gets less than ``floor`` of the audience.
    """

    method: Literal["thompson", "top_two"] = "thompson"
    floor: Annotated[float, Field(ge=0, lt=1)] = 0.05


class EventsSource(_Model):
    """Where ``loopexp run`` finds this campaign's events when no ``--events`` is given.

    A daily cron points ``run`` at the ESP's export folder: every export file in it (sorted) is
    ingested into the run's ``ingest/`` folder (canonical events, quarantine, summary) first.
    """

    path: Annotated[str, Field(min_length=1)]
    """A folder of exports (or a file, or a glob), relative to the spec file's folder."""
    format: str = "auto"
    """Format of the exports (``loopexp ingest --format``): ``auto`` recognises each file;
    ``canonical`` reads the path as canonical events Parquet without ingesting."""

    @field_validator("format")
    @classmethod
    def _known_format(cls, fmt: str) -> str:
        from loopexp.events.ingest import FORMATS  # noqa: PLC0415 (DuckDB only when needed)

        if fmt not in FORMATS:
            raise ValueError(f"unknown events format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt

    def resolve(self, spec_path: str | Path) -> Path:
        """The path as named, relative to the folder of the spec file at ``spec_path``."""
        return Path(spec_path).parent / Path(self.path).expanduser()

    def rebased(self, from_folder: str | Path, to_folder: str | Path) -> EventsSource:
        """The same exports named from a spec in ``to_folder`` (the next spec's folder).

        A relative path is relative to its spec's folder: a next spec written elsewhere
        (``--next-spec-dir``) would otherwise point at another folder. Absolute paths stay.
        """
        path = Path(self.path).expanduser()
        if path.is_absolute() or Path(from_folder).resolve() == Path(to_folder).resolve():
            return self
        moved = os.path.relpath(Path(from_folder).resolve() / path, Path(to_folder).resolve())
        return self.model_copy(update={"path": moved})


class ExperimentSpec(_Model):
    """A complete, validated experiment spec (one iteration of one campaign)."""

    schema_version: Literal[1] = SPEC_SCHEMA_VERSION
    name: Annotated[str, Field(min_length=1, max_length=200)]
    campaign: Annotated[str, Field(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    iteration: Annotated[int, Field(ge=1, le=100_000)] = 1
    test_type: TestType
    description: str = ""
    salt: Annotated[str, Field(min_length=1, max_length=200)]
    control: str
    variants: Annotated[list[Variant], Field(min_length=2)]
    audience: Audience = Field(default_factory=Audience)
    metrics: list[MetricDef] = Field(default_factory=list)
    """Metrics this spec defines (beyond the standard library, loopexp.metrics.LIBRARY)."""
    primary_metric: str = "click_rate"
    secondary_metrics: list[str] = Field(default_factory=list)
    guardrails: list[Guardrail] = Field(default_factory=list)
    decision: DecisionRule = Field(default_factory=DecisionRule)
    data: DataRules = Field(default_factory=DataRules)
    planned_recipients_per_variant: Annotated[int, Field(ge=1)] | None = None
    enrolment: Literal["one_off", "continuous"] = "one_off"
    """``one_off``: one send to the whole list. ``continuous``: a step of a lifecycle flow
    (welcome, cart abandonment, reactivation) whose recipients enter over time and are analysed as
    they accumulate; its decision method defaults to ``sequential``."""
    covariates: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]] = Field(
        default_factory=list
    )
    """Pre-period covariates for regression adjustment (CUPED / multi-covariate): columns of the
    assignment known before the send (e.g. ``pre_opens``, ``pre_clicks`` over 90 days); the
    engine returns their sums with each non-ratio metric and the analysis adjusts on them."""
    backlog: list[Variant] = Field(default_factory=list)
    """Challengers waiting for a later iteration; ``loop.next_spec`` draws from here."""
    parent_run_id: str | None = None
    factors: list[Factor] | None = None
    """Multivariate (factorial) tests only: the factors; ``variants`` may then be left out and
    are generated as every combination of levels (see :func:`factorial_cells`)."""
    ingest: IngestConfig | None = None
    """How ``loopexp ingest`` reads this campaign's ESP exports (variant field, bot thresholds)."""
    events: EventsSource | None = None
    """The ESP export folder ``loopexp run`` ingests when no ``--events`` is given."""
    send_time: SendTimeSettings | None = None
    """Send slots randomised beside the variants, or learned windows per segment (see
    :class:`SendTimeSettings`); None: one send for everyone."""
    allocation: AllocationSettings | None = None
    """Adaptive weights written into each next spec; None: the variants keep their weights."""

    @model_validator(mode="before")
    @classmethod
    def _factorial_cells(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("factors") or data.get("variants"):
            return data
        factors = [Factor.model_validate(f) for f in data["factors"]]
        cells = factorial_cells(factors)
        return {**data, "variants": cells, "control": data.get("control") or cells[0]["id"]}

    @field_validator("name")
    @classmethod
    def _one_line(cls, name: str) -> str:
        # A newline or control character could forge lines in reports and run descriptions.
        if re.search(r"[\x00-\x1f\x7f]", name):
            raise ValueError("must be one line, without newlines, tabs or control characters")
        return name

    @field_validator("metrics")
    @classmethod
    def _metrics_new(cls, defs: list[MetricDef]) -> list[MetricDef]:
        names = [d.name for d in defs]
        clash = sorted({n for n in names if n in LIBRARY or names.count(n) > 1})
        if clash:
            raise ValueError(
                f"metric name(s) {clash} repeat or are standard metrics; give them new names"
            )
        return defs

    @field_validator("primary_metric")
    @classmethod
    def _primary_known(cls, name: str, info: ValidationInfo) -> str:
        return _check_metric(name, [d.name for d in info.data.get("metrics", [])])

    @field_validator("secondary_metrics")
    @classmethod
    def _secondary_known(cls, names: list[str], info: ValidationInfo) -> list[str]:
        custom = [d.name for d in info.data.get("metrics", [])]
        return [_check_metric(n, custom) for n in names]

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        ids = [v.id for v in self.variants]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"variant ids must be unique; repeated: {dupes}")
        if HOLDOUT in ids:
            raise ValueError(f"{HOLDOUT!r} is reserved for the no-mail group; rename that variant")
        if self.control not in ids:
            raise ValueError(f"control {self.control!r} is not one of the variants {ids}")
        for g in self.guardrails:
            _check_metric(g.metric, [d.name for d in self.metrics])
        self._check_factorial()
        backlog_clash = sorted({b.id for b in self.backlog} & set(ids))
        if backlog_clash:
            raise ValueError(f"backlog ids {backlog_clash} are already variants of this iteration")
        if (
            self.enrolment == "continuous"
            and self.decision_method == "fixed"
            and self.planned_recipients_per_variant is None
        ):
            raise ValueError(
                "a continuous-enrolment test with decision.method: fixed needs "
                "planned_recipients_per_variant (a fixed-horizon test is read once, at its "
                "planned sample); set it (`loopexp plan`), or use decision.method: sequential"
            )
        dupes = sorted({c for c in self.covariates if self.covariates.count(c) > 1})
        if dupes:
            raise ValueError(f"covariates must be unique; repeated: {dupes}")
        return self

    def _check_factorial(self) -> None:
        is_mvt = self.test_type == TestType.MULTIVARIATE
        if is_mvt and not self.factors:
            raise ValueError("a multivariate test needs `factors:` (each with two or more levels)")
        if self.factors and not is_mvt:
            raise ValueError("`factors:` belongs to test_type multivariate; remove it or set that")
        if not self.factors:
            return
        names = [f.name for f in self.factors]
        if len(set(names)) != len(names):
            raise ValueError(f"factor names must be unique; got {names}")
        expected = {c["id"]: c["cell"] for c in factorial_cells(self.factors)}
        got = {v.id: v.cell for v in self.variants}
        if got != expected:
            raise ValueError(
                "the variants of a multivariate test are the cells of its factors; leave "
                f"`variants:` out to generate them (expected cells {sorted(expected)})"
            )

    @property
    def decision_method(self) -> str:
        """``fixed`` or ``sequential``: as set, else sequential for continuous enrolment."""
        if self.decision.method is not None:
            return self.decision.method
        return "sequential" if self.enrolment == "continuous" else "fixed"

    @property
    def sequential_tuning_n(self) -> float:
        """Total sample of a comparison at which its confidence sequence is tightest."""
        if self.decision.sequential_tuning_n is not None:
            return float(self.decision.sequential_tuning_n)
        if self.planned_recipients_per_variant is not None:
            return float(2 * self.planned_recipients_per_variant)
        return 5000.0  # gbstats' default (loopexp.stats.sequential.DEFAULT_TUNING_N)

    @property
    def challengers(self) -> list[Variant]:
        """The variants compared against the control."""
        return [v for v in self.variants if v.id != self.control]

    @property
    def all_metrics(self) -> list[str]:
        """Primary, secondary and guardrail metrics, each once, primary first."""
        names = [self.primary_metric, *self.secondary_metrics, *(g.metric for g in self.guardrails)]
        return list(dict.fromkeys(names))

    def metric(self, name: str) -> MetricDef:
        """The definition of metric ``name``: this spec's own first, else the standard library."""
        return resolve_metric(name, self.metrics)

    @property
    def metric_defs(self) -> list[MetricDef]:
        """Definitions of :attr:`all_metrics`, in that order (what the engines compute)."""
        return [self.metric(n) for n in self.all_metrics]

    def expected_shares(self) -> dict[str, float]:
        """Expected share of the audience per group, holdout included when there is one."""
        mailed = 1.0 - self.audience.holdout
        total = sum(v.weight for v in self.variants)
        shares = {v.id: mailed * v.weight / total for v in self.variants}
        if self.audience.holdout > 0:
            shares[HOLDOUT] = self.audience.holdout
        return shares

    @property
    def slug(self) -> str:
        """A safe file-name stem for this iteration's outputs: ``<name>-iter<N>`` as a slug."""
        return f"{safe_slug(self.name, 80)}-iter{self.iteration}"

    def sha256(self) -> str:
        """Fingerprint of the spec's content (canonical JSON), for lineage.

        Fields added after schema 1 was first fingerprinted are left out while they hold their
        default, so a spec that does not use them keeps the fingerprint recorded in earlier runs.
        """
        return hashlib.sha256(
            self.model_dump_json(exclude=self._defaulted_new_fields()).encode()
        ).hexdigest()

    def _defaulted_new_fields(self) -> dict[str, Any]:
        exclude: dict[str, Any] = {}
        audience = {
            name
            for name in _NEW_AUDIENCE_FIELDS
            if getattr(self.audience, name)
            == Audience.model_fields[name].get_default(call_default_factory=True)
        }
        if audience:
            exclude["audience"] = audience
        if self.factors is None:
            exclude["factors"] = True
        if self.send_time is None:
            exclude["send_time"] = True
        if self.events is None:
            exclude["events"] = True
        if self.allocation is None:
            exclude["allocation"] = True
        if not self.metrics:  # the spec's own metric definitions (issue 16)
            exclude["metrics"] = True
        variant_fields = {
            i: {n for n in _NEW_VARIANT_FIELDS if getattr(v, n) is None}
            for i, v in enumerate(self.variants)
        }
        backlog_fields = {
            i: {n for n in _NEW_VARIANT_FIELDS if getattr(v, n) is None}
            for i, v in enumerate(self.backlog)
        }
        exclude["variants"] = variant_fields
        if backlog_fields:
            exclude["backlog"] = backlog_fields
        return exclude

    def to_yaml(self) -> str:
        """Render as YAML in declaration order; defaults included, unset (null) fields left out.

        The audience fields added for recipient lists are left out while at their defaults.
        """
        data = self.model_dump(mode="json", exclude_none=True, exclude=self._defaulted_new_fields())
        _restore_explicit_nulls(self, data)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def _restore_explicit_nulls(model: BaseModel, data: dict[str, Any]) -> None:
    """Put back the nulls that mean something: a field set to None whose default is not None.

    ``exclude_none`` drops every None, and for e.g. ``decision.cap_percentile: null`` (default
    0.99) the re-read spec would silently cap again. Walks nested models and lists of them.
    """
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None:
            if name not in data and field.default is not None and field.default_factory is None:
                data[name] = None
        elif isinstance(value, BaseModel) and isinstance(data.get(name), dict):
            _restore_explicit_nulls(value, data[name])
        elif isinstance(value, list) and isinstance(data.get(name), list):
            for item, item_data in zip(value, data[name], strict=False):
                if isinstance(item, BaseModel) and isinstance(item_data, dict):
                    _restore_explicit_nulls(item, item_data)


def safe_slug(text: str, max_length: int = 80) -> str:
    """A file-name-safe slug of ``text``: ASCII letters, digits, ``.``, ``_`` and ``-`` only.

    No path separator, no leading dot (``../../x`` becomes ``x``), at most ``max_length``
    characters (a long text keeps a hash of the whole, so two long names stay distinct), never
    empty. File names derived from a spec go through here.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text).strip(".-_")
    slug = re.sub(r"-{2,}", "-", slug) or "experiment"
    if len(slug) > max_length:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        slug = slug[: max_length - 9].rstrip(".-_") + "-" + digest
    return slug


#: Fields added after the first fingerprints were recorded (see ``ExperimentSpec.sha256``).
_NEW_AUDIENCE_FIELDS = (
    "segment_map",
    "unmapped_segments",
    "columns",
    "filters",
    "exclude_tested_within_days",
)
_NEW_VARIANT_FIELDS = ("preheader", "from_name", "cell")


def _check_metric(name: str, custom: list[str] | tuple[str, ...] = ()) -> str:
    if name not in LIBRARY and name not in custom:
        known = sorted({*LIBRARY, *custom})
        raise ValueError(f"unknown metric {name!r}; known metrics: {known}")
    return name


class SpecError(InputError):
    """A spec file that cannot be used, with every problem located in the file."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = Path(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{self.path}: invalid experiment spec ({len(problems)} problem(s)):\n{lines}\n"
            "Fix the fields above; `loopexp validate FILE` checks a spec without running it."
        )


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a YAML spec; raise :class:`SpecError` naming file, line and field."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(path, ["file not found"]) from None
    except IsADirectoryError:
        raise SpecError(path, ["is a folder, not a spec file"]) from None
    except OSError as exc:
        raise SpecError(path, [f"cannot be read: {exc.strerror or exc}"]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(
            path, [f"{len(data):,} bytes: too large for a spec (at most {MAX_SPEC_BYTES:,})"]
        )
    if b"\x00" in data:
        raise SpecError(path, ["is a binary file, not a YAML spec (it contains NUL bytes)"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(
            path,
            [
                f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                f"{exc.start}); save the file as UTF-8"
            ],
        ) from None
    return parse_spec(text, source=path)


#: A spec is a page of YAML; anything much larger is not one (and could exhaust memory).
MAX_SPEC_BYTES = 1_000_000


def parse_spec(text: str, source: str | Path = "<string>") -> ExperimentSpec:
    """Validate YAML text as a spec; ``source`` names it in error messages."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(source, [f"not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise SpecError(source, ["the top level must be a mapping of fields (name: ..., ...)"])
    duplicates = _duplicate_keys(root)
    if duplicates:
        raise SpecError(source, duplicates)
    try:
        metrics = data.get("metrics")
        custom = (
            [m["name"] for m in metrics if isinstance(m, dict) and isinstance(m.get("name"), str)]
            if isinstance(metrics, list)
            else []
        )
        return ExperimentSpec.model_validate(data, context={"custom_metrics": custom})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"]
            where = _format_loc(loc)
            line = _line_of(root, loc)
            prefix = f"line {line}: " if line else ""
            problems.append(f"{prefix}{where or '(spec)'}: {err['msg']}")
        raise SpecError(source, problems) from None


def write_spec(spec: ExperimentSpec, path: str | Path) -> Path:
    """Write a spec as YAML (creating folders), and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.to_yaml(), encoding="utf-8")
    return path


def _duplicate_keys(node: yaml.Node | None) -> list[str]:
    """Every key that appears twice in one mapping (YAML keeps the last silently), with lines."""
    problems: list[str] = []
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key, value in current.value:
                name = getattr(key, "value", None)
                line = key.start_mark.line + 1
                if isinstance(name, str) and name != "<<":
                    if name in first:
                        problems.append(
                            f"line {line}: duplicate key {name!r} (first at line {first[name]}); "
                            "keep one"
                        )
                    else:
                        first[name] = line
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return sorted(problems, key=lambda p: int(p.split(":")[0].removeprefix("line ")))


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node on ``loc`` (YAML keeps marks; pydantic doesn't)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == part]
            if not match:
                return line
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line

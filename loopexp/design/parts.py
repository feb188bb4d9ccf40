"""The parts an experiment spec is made of.

Variants and factors, the audience, guardrails, the decision and data rules, send-time settings
and the events source.

Each is a pydantic model validated on its own; :class:`loopexp.design.spec.ExperimentSpec` puts
them together and checks what spans several parts.
"""

from __future__ import annotations

import difflib
import itertools
import os
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from loopexp.metrics.definitions import LIBRARY


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
    FLOW = "flow"
    """An automation flow (``flow:``): the variants are the branches of its experiment split."""


class SpecModel(BaseModel):
    """Base of every spec part: unknown fields rejected, frozen, finite numbers only."""

    # allow_inf_nan=False: `.inf` / `.nan` in YAML are floats, and no spec number may be one.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: Largest variant weight: weights are relative, and a sum that overflows (1e308) breaks shares.
MAX_WEIGHT = 1000.0
#: Largest holdout share: beyond it too few recipients are mailed to compare anything.
MAX_HOLDOUT = 0.99
#: Largest relative MDE or guardrail margin (+1000 %): anything larger is a typo (10 for 10 %?).
MAX_RELATIVE = 10.0


class Variant(SpecModel):
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


class FactorLevel(SpecModel):
    """One level of a factor: the message fields it sets in every cell that has it."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_]{0,19}$")]
    description: str = ""
    subject: str | None = None
    preheader: str | None = None
    from_name: str | None = None
    content: str | None = None
    send_time: str | None = None


class Factor(SpecModel):
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


class RecipientColumns(SpecModel):
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


class Audience(SpecModel):
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


class Guardrail(SpecModel):
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
        return check_metric(name, info.context.get("custom_metrics", ()))

    @model_validator(mode="after")
    def _margin_for_non_inferiority(self) -> Guardrail:
        if self.mode == "non_inferiority" and self.max_relative_increase <= 0:
            raise ValueError(
                "a non_inferiority guardrail needs max_relative_increase > 0 (no challenger can "
                "prove it is not worse by any amount at all); set a margin such as 0.2, or use "
                "mode: harm"
            )
        return self


class BetaPrior(SpecModel):
    """Beta prior of every arm's rate in the Bayesian view of proportions."""

    a: Annotated[float, Field(gt=0)] = 1.0
    b: Annotated[float, Field(gt=0)] = 1.0


class DecisionRule(SpecModel):
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
    read_at: datetime | None = None
    """When a fixed-horizon one-off send is read (UTC; a time without zone is taken as UTC).
    Default: after the send and the longest maturity window among the primary metric and the
    guardrails (loopexp.metrics.definitions.MATURITY_HOURS); before then a run says keep_testing,
    "final read at <time>". Set it to read later (or, knowingly, sooner)."""


class DataRules(SpecModel):
    """How much bad data a run tolerates, and the resources of the metrics engine (DuckDB)."""

    max_quarantine_share: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Stop with an error, rather than decide, when more than this share of events is malformed."""
    memory_limit: (
        Annotated[str, Field(pattern=r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|[kmgt]i?b)\s*$")] | None
    ) = None
    """DuckDB's memory limit, e.g. ``4GB`` [default: $LOOPEXP_DUCKDB_MEMORY_LIMIT, else half of
    the memory available, at most 800 MiB per DuckDB thread]."""
    temp_directory: str | None = None
    """Where DuckDB spills when over its limit [default: $LOOPEXP_DUCKDB_TEMP_DIR, else a fresh
    temporary folder]."""
    history: str | None = None
    """Earlier campaigns' canonical events (Parquet, globs allowed; relative to the spec's folder):
    classifies recipients as Apple-proxy / non-proxy readers before the send, so results.json
    gains an ``opens`` section robust to Mail Privacy Protection (issue 28)."""
    campaign_ids: list[Annotated[str, Field(min_length=1, pattern=r"\S")]] = Field(
        default_factory=list
    )
    """The provider campaign identifiers this experiment's sends carry (SendGrid single-send or
    marketing campaign id or category, Mailchimp campaign id, Braze campaign / canvas id, the SES
    ``campaign`` tag, ...: what ingest puts in the event table's ``campaign_id``). An event naming
    another campaign is quarantined as ``other_campaign`` and counted; an event with no campaign
    field passes. Empty (the default): no event is judged by its campaign (issue 28)."""


#: A send slot: local wall-clock time, HH:MM (24 h).
SLOT_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class SendTimeSettings(SpecModel):
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


class AllocationSettings(SpecModel):
    """Adaptive weights for the next iteration (see :mod:`loopexp.learn.allocation`).

    Each next spec's challengers get Thompson-sampling (``top_two``: top-two) shares of the
    challengers' budget from this iteration's posterior; the control keeps its share, and no
    challenger gets less than ``floor`` of the audience.
    """

    method: Literal["thompson", "top_two"] = "thompson"
    floor: Annotated[float, Field(ge=0, lt=1)] = 0.05


class EventsSource(SpecModel):
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
        from loopexp.events.adapters.registry import format_names  # noqa: PLC0415 (loads adapters)

        known = format_names()
        if fmt not in known:
            raise ValueError(f"unknown events format {fmt!r}; use one of {', '.join(known)}")
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


def check_metric(name: str, custom: list[str] | tuple[str, ...] = ()) -> str:
    """``name`` if the library or the spec's ``custom`` metrics define it, else ValueError."""
    if name not in LIBRARY and name not in custom:
        known = sorted({*LIBRARY, *custom})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown metric {name!r}; {hint}known metrics: {known}")
    return name

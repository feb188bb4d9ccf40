"""Tests of experiment specs (loopexp.design.spec) and of the next-iteration writer
(loopexp.learn.iteration)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import norm

from loopexp.analysis.analyze import analyze
from loopexp.analysis.results import (
    DataInfo,
    Decision,
    ExperimentInfo,
    ExperimentResults,
    MetricValue,
    SRMResult,
    Status,
    VariantResult,
)
from loopexp.assignment.assign import assign_groups
from loopexp.design.spec import ExperimentSpec, SpecError, load_spec, parse_spec, write_spec
from loopexp.learn.iteration import LoopError, next_spec
from loopexp.metrics import METRICS, GroupStats, MetricTable, get_metric

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "experiments").glob("*.yaml"))
DEMO = ROOT / "experiments" / "subject_line_demo.yaml"

MINIMAL = """\
name: minimal test
campaign: minimal
test_type: content
salt: minimal-salt
control: a
variants:
  - id: a
    content: old
  - id: b
    content: new
    weight: 2
"""


def line_of(text: str, needle: str) -> int:
    """1-based line number of the only line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def spec_error(tmp_path: Path, text: str) -> SpecError:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.path == path
    assert str(path) in str(info.value)
    return info.value


# --- examples ----------------------------------------------------------------------------------


def test_there_are_example_specs():
    assert DEMO in EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_specs_validate(path):
    spec = load_spec(path)
    assert isinstance(spec, ExperimentSpec)
    assert spec.control in {v.id for v in spec.variants}
    assert len(spec.variants) >= 2
    assert parse_spec(spec.to_yaml()) == spec


def test_demo_spec_content():
    spec = load_spec(DEMO)
    assert spec.control == "control"
    assert [v.id for v in spec.variants] == ["control", "personal", "urgency"]
    assert [c.id for c in spec.challengers] == ["personal", "urgency"]
    assert [b.id for b in spec.backlog] == ["question", "benefit"]
    assert spec.primary_metric == "click_rate"
    assert spec.all_metrics[0] == "click_rate"
    assert "unsubscribe_rate" in spec.all_metrics
    assert len(spec.all_metrics) == len(set(spec.all_metrics))


def test_minimal_spec_defaults():
    spec = parse_spec(MINIMAL)
    assert spec.iteration == 1
    assert spec.primary_metric == "click_rate"
    assert spec.audience.holdout == 0.0
    assert len(spec.audience.segments) == 4
    assert spec.decision.alpha == 0.05
    assert spec.planned_recipients_per_variant is None
    assert spec.parent_run_id is None


# --- located errors ----------------------------------------------------------------------------


def test_bad_weight_names_file_line_and_field(tmp_path):
    text = DEMO.read_text(encoding="utf-8").replace(
        "  - id: personal\n", "  - id: personal\n    weight: -1\n"
    )
    err = spec_error(tmp_path, text)
    line = line_of(text, "weight: -1")
    assert len(err.problems) == 1
    problem = err.problems[0]
    assert problem.startswith(f"line {line}: variants[1].weight:")
    assert "greater than 0" in problem
    assert f"line {line}: variants[1].weight" in str(err)


@pytest.mark.parametrize(
    ("old", "new", "needle", "field"),
    [
        ("  holdout: 0.0", "  holdout: 1.5", "holdout: 1.5", "audience.holdout"),
        ("  alpha: 0.05", "  alpha: 0.9", "alpha: 0.9", "decision.alpha"),
        ("  correction: holm", "  correction: tukey", "correction: tukey", "decision.correction"),
        ("iteration: 1", "iteration: 0", "iteration: 0", "iteration"),
        (
            "  - metric: unsubscribe_rate",
            "  - metric: unsubscribes",
            "metric: unsubscribes",
            "guardrails[0].metric",
        ),
        ("  - id: urgency", "  - id: Urgency!", "id: Urgency!", "variants[2].id"),
        ("  - id: benefit", "  - id: benefit\n    weight: 0", "weight: 0", "backlog[1].weight"),
        ("test_type: subject_line", "test_type: colour", "test_type: colour", "test_type"),
    ],
)
def test_nested_errors_are_located(tmp_path, old, new, needle, field):
    text = DEMO.read_text(encoding="utf-8")
    assert old in text
    text = text.replace(old, new)
    err = spec_error(tmp_path, text)
    assert [p for p in err.problems if f": {field}:" in p], err.problems
    (problem,) = [p for p in err.problems if f": {field}:" in p]
    assert problem.startswith(f"line {line_of(text, needle)}: {field}:")


def test_unknown_metric_lists_known_metrics(tmp_path):
    text = DEMO.read_text(encoding="utf-8").replace(
        "primary_metric: click_rate", "primary_metric: clicks"
    )
    err = spec_error(tmp_path, text)
    (problem,) = err.problems
    assert problem.startswith(f"line {line_of(text, 'primary_metric: clicks')}: primary_metric:")
    assert "unknown metric 'clicks'" in problem
    for name in METRICS:
        assert name in problem


def test_unknown_secondary_metric(tmp_path):
    text = DEMO.read_text(encoding="utf-8").replace("open_rate_raw,", "opens,")
    err = spec_error(tmp_path, text)
    (problem,) = err.problems
    assert "secondary_metrics" in problem
    assert "unknown metric 'opens'" in problem
    assert f"line {line_of(text, 'secondary_metrics:')}" in problem


def test_unknown_top_level_field_rejected(tmp_path):
    text = DEMO.read_text(encoding="utf-8") + "colour: blue\n"
    err = spec_error(tmp_path, text)
    (problem,) = err.problems
    assert problem.startswith(f"line {line_of(text, 'colour: blue')}: colour:")
    assert "Extra inputs are not permitted" in problem


def test_unknown_nested_field_rejected(tmp_path):
    text = MINIMAL.replace("    content: new\n", "    content: new\n    subjekt: typo\n")
    err = spec_error(tmp_path, text)
    (problem,) = err.problems
    assert problem.startswith(f"line {line_of(text, 'subjekt')}: variants[1].subjekt:")


def test_missing_required_field(tmp_path):
    text = MINIMAL.replace("salt: minimal-salt\n", "")
    err = spec_error(tmp_path, text)
    (problem,) = err.problems
    assert "salt: Field required" in problem


def test_several_problems_all_reported(tmp_path):
    text = MINIMAL.replace("weight: 2", "weight: -2").replace(
        "test_type: content", "test_type: nope"
    )
    err = spec_error(tmp_path, text)
    assert len(err.problems) == 2
    assert "2 problem(s)" in str(err)
    assert any("variants[1].weight" in p for p in err.problems)
    assert any("test_type" in p for p in err.problems)


def test_control_not_among_variants(tmp_path):
    err = spec_error(tmp_path, MINIMAL.replace("control: a", "control: c"))
    (problem,) = err.problems
    assert "control 'c' is not one of the variants ['a', 'b']" in problem


def test_duplicate_variant_ids(tmp_path):
    text = MINIMAL.replace("  - id: b", "  - id: a")
    err = spec_error(tmp_path, text)
    (problem,) = err.problems
    assert "variant ids must be unique" in problem
    assert "['a']" in problem


def test_holdout_variant_id_reserved(tmp_path):
    text = MINIMAL.replace("  - id: b", "  - id: holdout")
    err = spec_error(tmp_path, text)
    (problem,) = err.problems
    assert "'holdout' is reserved" in problem


def test_backlog_clash_with_variants(tmp_path):
    text = MINIMAL + "backlog:\n  - id: b\n    content: again\n"
    err = spec_error(tmp_path, text)
    assert "backlog ids ['b']" in err.problems[0]


def test_too_few_variants(tmp_path):
    text = MINIMAL.split("  - id: b", maxsplit=1)[0]
    err = spec_error(tmp_path, text)
    assert any(p.split(": ", 1)[1].startswith("variants:") for p in err.problems), err.problems


@pytest.mark.parametrize(
    "text", ["- a\n- b\n", "42\n", "just a string\n", "", "# only a comment\n"]
)
def test_non_mapping_yaml(tmp_path, text):
    err = spec_error(tmp_path, text)
    assert err.problems == ["the top level must be a mapping of fields (name: ..., ...)"]


def test_invalid_yaml(tmp_path):
    err = spec_error(tmp_path, "name: [unclosed\ncampaign: x\n")
    (problem,) = err.problems
    # Line first, as every other problem; PyYAML's "<unicode string>" never reaches users.
    assert re.match(r"line \d+, column \d+: not valid YAML: ", problem), problem
    assert "<unicode string>" not in problem


def test_parse_spec_names_its_source():
    with pytest.raises(SpecError, match=r"^somewhere\.yaml: invalid experiment spec"):
        parse_spec("- 1\n", source="somewhere.yaml")
    with pytest.raises(SpecError, match=r"^<string>: "):
        parse_spec("- 1\n")


def test_missing_file(tmp_path):
    path = tmp_path / "does" / "not" / "exist.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.problems == ["file not found"]
    assert str(path) in str(info.value)
    assert "loopexp validate" in str(info.value)


def test_spec_error_is_value_error():
    assert issubclass(SpecError, ValueError)


# --- round trips, shares, fingerprint ----------------------------------------------------------


def test_to_yaml_round_trips():
    spec = load_spec(DEMO)
    assert parse_spec(spec.to_yaml()) == spec
    fancy = spec.model_copy(
        update={
            "description": "Ünïcode — quotes ' \" and: colons",
            "planned_recipients_per_variant": 1234,
            "parent_run_id": "abc123",
            "iteration": 3,
        }
    )
    text = fancy.to_yaml()
    assert parse_spec(text) == fancy
    data = yaml.safe_load(text)
    assert list(data)[:3] == ["schema_version", "name", "campaign"]  # declaration order
    # Unset (None) fields are left out.
    assert "parent_run_id" not in yaml.safe_load(spec.to_yaml())


def test_write_spec_creates_folders_and_round_trips(tmp_path):
    spec = parse_spec(MINIMAL)
    path = write_spec(spec, tmp_path / "a" / "b" / "next.yaml")
    assert path.exists()
    assert load_spec(path) == spec


def test_expected_shares_without_holdout():
    shares = parse_spec(MINIMAL).expected_shares()
    assert shares == pytest.approx({"a": 1 / 3, "b": 2 / 3})
    assert "holdout" not in shares
    assert math.isclose(sum(shares.values()), 1.0)


def test_expected_shares_with_holdout():
    text = MINIMAL + "audience:\n  holdout: 0.25\n"
    shares = parse_spec(text).expected_shares()
    assert shares == pytest.approx({"a": 0.25, "b": 0.5, "holdout": 0.25})
    assert math.isclose(sum(shares.values()), 1.0)
    demo = load_spec(DEMO)
    with_holdout = demo.model_copy(
        update={"audience": demo.audience.model_copy(update={"holdout": 0.1})}
    )
    shares = with_holdout.expected_shares()
    assert shares == pytest.approx(
        {"control": 0.3, "personal": 0.3, "urgency": 0.3, "holdout": 0.1}
    )
    assert math.isclose(sum(shares.values()), 1.0)


def test_sha256_stable():
    a = load_spec(DEMO).sha256()
    assert re.fullmatch(r"[0-9a-f]{64}", a)
    assert load_spec(DEMO).sha256() == a
    assert parse_spec(load_spec(DEMO).to_yaml()).sha256() == a
    # Key order and comments in the YAML do not matter, only the content.
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    reordered = dict(reversed(list(data.items())))
    assert (
        parse_spec("# another comment\n" + yaml.safe_dump(reordered, sort_keys=False)).sha256() == a
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("salt: spring-newsletter-subject-iter-1", "salt: spring-newsletter-subject-iter-1b"),
        ("  holdout: 0.0", "  holdout: 0.05"),
        ("  mde_relative: 0.10", "  mde_relative: 0.12"),
        ("iteration: 1", "iteration: 2"),
        ('"The spring collection is here"', '"The spring collection is here!"'),
        ("  - id: benefit", "  - id: benefits"),
    ],
)
def test_sha256_changes_when_a_field_changes(old, new):
    text = DEMO.read_text(encoding="utf-8")
    assert old in text
    assert parse_spec(text.replace(old, new)).sha256() != parse_spec(text).sha256()


def test_spec_is_frozen():
    spec = parse_spec(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        spec.salt = "other"


# --- loop.next_spec ----------------------------------------------------------------------------


def plan_reference(baseline: float, mde: float, alpha: float, power: float, k: int) -> float:
    """R ``power.prop.test`` sample size (two-sided, Bonferroni over ``k`` challengers)."""
    p1, p2 = baseline, baseline * (1 + mde)
    pbar = (p1 + p2) / 2
    z_a, z_b = norm.ppf(1 - alpha / k / 2), norm.ppf(power)
    num = z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return num**2 / (p2 - p1) ** 2


def assert_plan(planned: int, baseline: float, spec: ExperimentSpec, k: int) -> None:
    rule = spec.decision
    n = plan_reference(baseline, rule.mde_relative, rule.alpha, rule.power, k)
    assert math.ceil(n) <= planned <= math.ceil(n) + 1, (planned, n)


def make_results(
    spec: ExperimentSpec,
    status: Status,
    winner: str | None = None,
    rates: dict[str, float | None] | None = None,
) -> ExperimentResults:
    rates = rates or {}
    variants = []
    for v in spec.variants:
        rate = rates.get(v.id, 0.05)
        variants.append(
            VariantResult(
                id=v.id,
                is_control=v.id == spec.control,
                n=20_000,
                metrics={
                    spec.primary_metric: MetricValue(
                        value=rate,
                        numerator=0.0 if rate is None else rate * 20_000,
                        denominator=20_000,
                    )
                },
            )
        )
    shares = spec.expected_shares()
    return ExperimentResults(
        experiment=ExperimentInfo.from_spec(spec),
        data=DataInfo(source="test", fingerprint="f", recipients=60_000, events=1, quarantined=0),
        srm=SRMResult(
            p_value=0.5,
            ok=status != Status.INVALID_SRM,
            expected=shares,
            observed={k: 20_000 for k in shares},
        ),
        variants=variants,
        comparisons=[],
        decision=Decision(
            status=status, winner=winner, primary_metric=spec.primary_metric, reasons=["test"]
        ),
    )


@pytest.fixture
def demo() -> ExperimentSpec:
    return load_spec(DEMO).model_copy(update={"planned_recipients_per_variant": 999})


def check_common(old: ExperimentSpec, new: ExperimentSpec, parent: str | None) -> None:
    assert new.iteration == old.iteration + 1
    assert new.salt != old.salt
    assert new.parent_run_id == parent
    assert new.name == old.name
    assert new.campaign == old.campaign
    assert new.primary_metric == old.primary_metric
    assert new.guardrails == old.guardrails
    assert new.decision == old.decision
    assert new.audience == old.audience
    assert parse_spec(new.to_yaml()) == new


def test_next_spec_ship(demo):
    results = make_results(demo, Status.SHIP, winner="personal", rates={"personal": 0.065})
    new = next_spec(demo, results, parent_run_id="run-123")
    check_common(demo, new, "run-123")
    assert new.control == "personal"
    assert [v.id for v in new.variants] == ["personal", "question", "benefit"]
    # Variants keep their content: the winner is the same mail, backlog entries are taken as-is.
    assert new.variants[0] == next(v for v in demo.variants if v.id == "personal")
    assert new.variants[1:] == demo.backlog
    assert new.backlog == []
    assert new.planned_recipients_per_variant != 999
    # Re-planned from the observed rate of the new control (the winner), not the old control's.
    assert_plan(new.planned_recipients_per_variant, 0.065, demo, k=2)


@pytest.mark.parametrize("status", [Status.NO_DIFFERENCE, Status.GUARDRAIL_VETO])
def test_next_spec_control_stays_and_challengers_replaced(demo, status):
    results = make_results(demo, status, rates={"control": 0.04})
    new = next_spec(demo, results, parent_run_id="parent")
    check_common(demo, new, "parent")
    assert new.control == "control"
    assert [v.id for v in new.variants] == ["control", "question", "benefit"]
    assert new.variants[0] == demo.variants[0]
    assert new.backlog == []
    assert_plan(new.planned_recipients_per_variant, 0.04, demo, k=2)


def test_next_spec_takes_only_what_the_backlog_has(demo):
    short = demo.model_copy(update={"backlog": demo.backlog[:1]})
    new = next_spec(short, make_results(short, Status.NO_DIFFERENCE, rates={"control": 0.1}))
    assert [v.id for v in new.variants] == ["control", "question"]
    assert new.backlog == []
    assert_plan(new.planned_recipients_per_variant, 0.1, short, k=1)


def test_next_spec_keeps_remaining_backlog():
    text = MINIMAL + (
        "backlog:\n"
        "  - id: c\n    content: c\n"
        "  - id: d\n    content: d\n"
        "  - id: e\n    content: e\n"
    )
    spec = parse_spec(text)
    new = next_spec(spec, make_results(spec, Status.NO_DIFFERENCE))
    assert [v.id for v in new.variants] == ["a", "c"]
    assert [v.id for v in new.backlog] == ["d", "e"]
    third = next_spec(new, make_results(new, Status.SHIP, winner="c"))
    assert third.iteration == 3
    assert [v.id for v in third.variants] == ["c", "d"]
    assert [v.id for v in third.backlog] == ["e"]
    assert len({spec.salt, new.salt, third.salt}) == 3


@pytest.mark.parametrize("status", [Status.KEEP_TESTING, Status.INVALID_SRM])
def test_next_spec_same_variants_again(demo, status):
    results = make_results(demo, status, rates={"control": 0.05})
    new = next_spec(demo, results, parent_run_id="p")
    check_common(demo, new, "p")
    assert new.control == demo.control
    assert new.variants == demo.variants
    assert new.backlog == demo.backlog
    assert_plan(new.planned_recipients_per_variant, 0.05, demo, k=2)


def test_next_spec_keep_testing_needs_no_backlog(demo):
    empty = demo.model_copy(update={"backlog": []})
    new = next_spec(empty, make_results(empty, Status.KEEP_TESTING))
    assert new.variants == demo.variants


@pytest.mark.parametrize(
    ("status", "winner"),
    [(Status.SHIP, "personal"), (Status.NO_DIFFERENCE, None), (Status.GUARDRAIL_VETO, None)],
)
def test_next_spec_empty_backlog_raises(demo, status, winner):
    empty = demo.model_copy(update={"backlog": []})
    with pytest.raises(LoopError, match="backlog") as info:
        next_spec(empty, make_results(empty, status, winner=winner))
    assert "iteration 2" in str(info.value)
    assert "spring-newsletter" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("rate", [None, 0.0, 1.0])
def test_next_spec_keeps_plan_when_rate_cannot_be_planned(demo, rate):
    new = next_spec(demo, make_results(demo, Status.KEEP_TESTING, rates={"control": rate}))
    assert new.planned_recipients_per_variant == 999


def test_next_spec_parent_run_id_default_none(demo):
    with_parent = demo.model_copy(update={"parent_run_id": "old"})
    new = next_spec(with_parent, make_results(with_parent, Status.KEEP_TESTING))
    assert new.parent_run_id is None


def test_next_salt_rerandomises_assignment(demo):
    new = next_spec(demo, make_results(demo, Status.KEEP_TESTING))
    keys = [f"rcp-{i}" for i in range(6_000)]
    before, after = assign_groups(keys, demo), assign_groups(keys, new)
    # Same three arms, new salt: about a third of recipients keep their arm, not all of them.
    assert abs(float(np.mean(before == after)) - 1 / 3) < 0.04
    # And deterministic: writing the next spec again gives the same salt.
    assert next_spec(demo, make_results(demo, Status.KEEP_TESTING)).salt == new.salt


# --- loop through analyze on a synthetic MetricTable -------------------------------------------


def synthetic_table(spec: ExperimentSpec, click: dict[str, float], n: int = 20_000) -> MetricTable:
    stats = []
    for v in spec.variants:
        for name in spec.all_metrics:
            metric = get_metric(name)
            if name == spec.primary_metric:
                rate = click[v.id]
            elif metric.kind == "mean":
                stats.append(GroupStats(name, v.id, "all", n, 1.0 * n, 26.0 * n))
                continue
            else:
                rate = {"unsubscribe_rate": 0.003, "delivery_rate": 0.98}.get(name, 0.2)
            k = float(round(rate * n))
            stats.append(GroupStats(name, v.id, "all", n, k, k))
    return MetricTable(
        stats=stats, assigned={v.id: n for v in spec.variants}, events=0, quarantined=0
    )


def test_next_spec_from_analyze_ship(demo):
    table = synthetic_table(demo, {"control": 0.05, "personal": 0.07, "urgency": 0.051})
    results = analyze(demo, table)
    assert results.decision.status == Status.SHIP
    assert results.decision.winner == "personal"
    new = next_spec(demo, results, parent_run_id="run-a")
    check_common(demo, new, "run-a")
    assert new.control == "personal"
    assert [v.id for v in new.variants] == ["personal", "question", "benefit"]


def test_next_spec_from_analyze_no_difference(demo):
    table = synthetic_table(demo, {"control": 0.05, "personal": 0.05, "urgency": 0.0501}, n=200_000)
    results = analyze(demo, table)
    assert results.decision.status == Status.NO_DIFFERENCE
    new = next_spec(demo, results, parent_run_id="run-b")
    check_common(demo, new, "run-b")
    assert new.control == "control"
    assert [v.id for v in new.variants] == ["control", "question", "benefit"]
    assert_plan(new.planned_recipients_per_variant, 0.05, demo, k=2)


def test_next_spec_from_analyze_keep_testing(demo):
    table = synthetic_table(demo, {"control": 0.05, "personal": 0.052, "urgency": 0.05}, n=2_000)
    results = analyze(demo, table)
    assert results.decision.status == Status.KEEP_TESTING
    new = next_spec(demo, results)
    assert new.variants == demo.variants
    assert new.iteration == 2
    assert_plan(new.planned_recipients_per_variant, 0.05, demo, k=2)


def test_an_explicit_null_survives_the_yaml_round_trip():
    """``cap_percentile: null`` (default 0.99) must not come back capped in a written spec."""
    data = load_spec(DEMO).model_dump(mode="json")
    data["decision"]["cap_percentile"] = None
    spec = ExperimentSpec.model_validate(data)
    again = parse_spec(spec.to_yaml())
    assert again.decision.cap_percentile is None
    assert again == spec


def test_events_folder_is_rebased_for_a_next_spec_written_elsewhere(tmp_path):
    """A relative export folder names the same folder from the next spec's own folder."""
    from loopexp.design.parts import EventsSource

    exports = tmp_path / "campaign" / "exports"
    exports.mkdir(parents=True)
    source = EventsSource(path="exports/", format="auto")
    spec_path = tmp_path / "campaign" / "spec.yaml"
    elsewhere = tmp_path / "out" / "next"
    elsewhere.mkdir(parents=True)
    moved = source.rebased(spec_path.parent, elsewhere)
    assert moved.resolve(elsewhere / "next.yaml").resolve() == exports.resolve()
    assert source.rebased(spec_path.parent, spec_path.parent) == source  # same folder: as is
    absolute = EventsSource(path=str(exports))
    assert absolute.rebased(spec_path.parent, elsewhere) == absolute

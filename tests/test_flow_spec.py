"""The spec's ``flow:`` section: the examples validate, and every graph error is located."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loopexp.design.spec import SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
FLOW_EXAMPLES = ["welcome_flow_timing.yaml", "winback_cadence.yaml", "cart_reminder_holdout.yaml"]


def _example(name: str = "welcome_flow_timing.yaml") -> dict:
    return yaml.safe_load((ROOT / "experiments" / name).read_text())


def _problems(data: dict) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(yaml.safe_dump(data, sort_keys=False), source="flow.yaml")
    return str(info.value)


@pytest.mark.parametrize("name", FLOW_EXAMPLES)
def test_flow_examples_validate_and_round_trip(name: str) -> None:
    spec = load_spec(ROOT / "experiments" / name)
    assert spec.flow is not None and spec.test_type == "flow"
    arms = [b.id for b in spec.flow.split_node.split or []]
    assert sorted(arms) == sorted(v.id for v in spec.variants)
    assert parse_spec(spec.to_yaml()) == spec
    assert len(spec.flow.version()) == 12


def test_arm_schedules_differ_in_wait_cadence_and_branch() -> None:
    welcome = load_spec(ROOT / "experiments" / "welcome_flow_timing.yaml").flow
    assert [d for d, _, _ in welcome.arm_sends("wait_1d")] == [1.0]
    assert [d for d, _, _ in welcome.arm_sends("wait_3d")] == [3.0]
    winback = load_spec(ROOT / "experiments" / "winback_cadence.yaml").flow
    assert len(winback.arm_sends("two")) == 2 and len(winback.arm_sends("three")) == 3
    cart = load_spec(ROOT / "experiments" / "cart_reminder_holdout.yaml").flow
    assert cart.arm_sends("none") == [] and len(cart.arm_sends("reminder")) == 1


def test_single_mail_specs_keep_their_fingerprint() -> None:
    # The flow field is left out of the fingerprint while unset (recorded in earlier runs).
    spec = load_spec(ROOT / "experiments" / "welcome_flow.yaml")
    assert spec.flow is None
    assert "\nflow:" not in spec.to_yaml()
    assert '"flow"' not in spec.model_dump_json(exclude=spec._defaulted_new_fields())


def test_unreachable_step_is_named_with_its_line() -> None:
    data = _example()
    data["flow"]["steps"].append({"id": "orphan", "send": "x"})
    message = _problems(data)
    assert "['orphan'] cannot be reached" in message
    assert "line " in message and "flow" in message


def test_cycle_is_named() -> None:
    data = _example()
    data["flow"]["steps"][-1]["next"] = "ordered_yet"  # second_mail -> ordered_yet -> second_mail
    assert "ordered_yet -> second_mail -> ordered_yet form a cycle" in _problems(data)


def test_send_after_the_conversion_window_is_refused() -> None:
    data = _example()
    data["flow"]["steps"][3]["wait_days"] = 8  # wait_3: the second mail after the 7-day window
    message = _problems(data)
    assert "'second_mail' (arm 'wait_3d') sends 8 days after entry" in message
    assert "window of 7 days" in message


def test_unknown_step_and_bad_experiment_are_named() -> None:
    data = _example()
    data["flow"]["steps"][2]["next"] = "nowhere"
    data["flow"]["experiment"] = "welcome_mail"
    message = _problems(data)
    assert "step 'wait_1' leads to unknown step 'nowhere'" in message
    assert "experiment 'welcome_mail' must name a split step" in message


def test_arms_must_be_the_variants_and_weights_set_once() -> None:
    data = _example()
    data["flow"]["steps"][1]["split"][1]["id"] = "wait_2d"
    assert "must be the variants" in _problems(data)
    data = _example()
    data["flow"]["steps"][1]["split"][1]["weight"] = 3
    assert "set the weight on the variant only" in _problems(data)


def test_a_step_has_exactly_one_kind_and_flow_rules_hold() -> None:
    data = _example()
    data["flow"]["steps"][0]["wait_days"] = 1
    assert "exactly one of send, wait_days, condition or split" in _problems(data)
    for field, value, needle in [
        ("enrolment", "one_off", "enrolment: continuous"),
        ("primary_metric", "click_rate", "judged on conversion_rate"),
        ("audience", {"holdout": 0.1}, "no audience.holdout"),
        ("test_type", "content", "go together"),
        ("guardrails", [{"metric": "complaint_rate"}], "['complaint_rate'] cannot be judged"),
    ]:
        data = _example()
        data[field] = value
        assert needle in _problems(data), field


def test_loopexp_plan_gives_recipients_and_days_of_a_flow_test() -> None:
    from typer.testing import CliRunner

    from loopexp.cli import app

    spec = str(ROOT / "experiments" / "welcome_flow_timing.yaml")
    result = CliRunner().invoke(app, ["plan", spec, "--baseline", "0.06", "--per-day", "1200"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert (
        "11,631 per arm" in text and "19.4 days of entries + the 7-day window = 26.4 days" in text
    )
    missing = CliRunner().invoke(app, ["plan", spec, "--baseline", "0.06"])
    assert missing.exit_code == 2 and "--per-day" in missing.output

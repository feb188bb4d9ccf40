"""``assign`` applying a spec's ``policy:`` section, and the ``propensity`` column (issue 27)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from loopexp.assignment.assign import assign_recipients
from loopexp.core.errors import InputError
from loopexp.design.spec import SpecError, load_spec, parse_spec
from tests.conftest import DEMO_SPEC

POLICY = {
    "name": "per segment",
    "kind": "segment",
    "exploration": 0.2,
    "rules": [
        {"when": [{"feature": "segment", "op": "==", "value": "prospect"}], "action": "personal"},
        {"when": [{"feature": "past_click_hour", "op": ">=", "value": 17}], "action": "urgency"},
        {"action": "control"},
    ],
}


def _spec(policy: dict | None, holdout: float = 0.1):
    data = yaml.safe_load(DEMO_SPEC.read_text())
    data["audience"] = {**data.get("audience", {}), "holdout": holdout}
    if policy is not None:
        data["policy"] = policy
    return parse_spec(yaml.safe_dump(data), "policy-spec.yaml")


def _recipients(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "recipient_key": [f"r{i:06d}" for i in range(n)],
            "segment": rng.choice(["prospect", "existing_customer", "inactive"], n),
            "past_click_hour": rng.choice([-1, 9, 18], n).astype(float),
        }
    )


def test_assign_applies_the_policy_with_uniform_exploration(tmp_path: Path) -> None:
    spec = _spec(POLICY, holdout=0.1)
    recipients = _recipients(60_000)
    result = assign_recipients(recipients, spec)
    out = result.assignment.merge(recipients[["recipient_key", "past_click_hour"]])
    variant = out["variant_id"].astype(str).to_numpy()
    seg = out["segment"].astype(str).to_numpy()
    hour = out["past_click_hour"].to_numpy()
    rule = np.where(seg == "prospect", "personal", np.where(hour >= 17, "urgency", "control"))
    mailed = variant != "holdout"
    assert (~mailed).mean() == pytest.approx(0.1, abs=0.005)
    # 80 % follow the rules, 20 % explore uniformly (a third of which land on the rule's variant).
    assert (variant[mailed] == rule[mailed]).mean() == pytest.approx(0.8 + 0.2 / 3, abs=0.006)
    p = out["propensity"].to_numpy()
    assert np.allclose(p[~mailed], 0.1)
    follows = mailed & (variant == rule)
    assert np.allclose(p[follows], 0.9 * (0.8 + 0.2 / 3))
    assert np.allclose(p[mailed & ~follows], 0.9 * 0.2 / 3)
    assert result.summary.srm_p_values == {}  # no SRM check against weights a policy ignores
    paths = result.write(tmp_path)
    table = pq.read_table(paths["assignment"])
    assert table.column_names[-1] == "propensity"
    assert np.allclose(table["propensity"].to_numpy(), p)


def test_plain_weights_record_their_share_as_propensity() -> None:
    spec = _spec(None, holdout=0.1)
    result = assign_recipients(_recipients(3_000), spec)
    out = result.assignment
    p = out["propensity"].to_numpy()
    mailed = out["variant_id"].astype(str).to_numpy() != "holdout"
    assert np.allclose(p[mailed], 0.9 / 3) and np.allclose(p[~mailed], 0.1)
    # Without a policy the fingerprint and the split are those of a spec without the field.
    assert spec.sha256() == _spec(None, holdout=0.1).sha256()


def test_policy_errors_name_what_to_fix() -> None:
    with pytest.raises(InputError, match=r"past_click_hour.*absent from the recipients"):
        assign_recipients(_recipients(100).drop(columns="past_click_hour"), _spec(POLICY))
    bad = {**POLICY, "rules": [*POLICY["rules"][:-1], {"action": "nope"}]}
    with pytest.raises(SpecError, match="nope"):
        _spec(bad)
    with pytest.raises(SpecError, match="exploration"):
        _spec({**POLICY, "exploration": 0})
    assert load_spec(DEMO_SPEC).policy is None

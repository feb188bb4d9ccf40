"""The names of the MLflow tags loopexp writes and reads, in one place.

A marketer filters runs in the MLflow UI by these names (``tags."loopexp.decision.status" =
'ship'``) and the closed-loop report, the idempotency look-up and stale-run repair read them back,
so each is spelled once. They are part of the contract: add names, never rename one.
"""

from __future__ import annotations

CAMPAIGN = "loopexp.campaign"
ITERATION = "loopexp.iteration"
EXPERIMENT = "loopexp.experiment"
TEST_TYPE = "loopexp.test_type"
SPEC_SHA256 = "loopexp.spec_sha256"
DATA_FINGERPRINT = "loopexp.data_fingerprint"
PARENT_RUN_ID = "loopexp.parent_run_id"
ATTEMPT = "loopexp.attempt"
HOST = "loopexp.host"
PID = "loopexp.pid"
FAILURE = "loopexp.failure"
DECISION_STATUS = "loopexp.decision.status"
DECISION_WINNER = "loopexp.decision.winner"
#: When a one-off send's outcomes are final and it is read (UTC, ISO 8601; issue 28).
DECISION_FINAL_READ_AT = "loopexp.decision.final_read_at"
SUMMARY = "loopexp.summary"
NEXT_SPEC = "loopexp.next_spec"
#: What a run is: an iteration's analysis, or the closed-loop report over iterations.
KIND = "loopexp.kind"
REPORT_ITERATIONS = "loopexp.report.iterations"
#: A flow test (issue 26): the flow's id in the ESP and the fingerprint of its definition (an edit
#: makes a new version, analysed apart).
FLOW_ID = "loopexp.flow.id"
FLOW_VERSION = "loopexp.flow.version"

#: The decision's lift with its interval in words (``+16.2% (95% CI +8.1% to +24.0%)``): a
#: runs-table column of the saved view loopexp's links open.
LIFT = "loopexp.lift"

#: Issue 25: what the closed-loop report needs of an iteration (its results' digest, JSON), so
#: a campaign's report is one search of the store instead of one download per iteration.
DIGEST = "loopexp.report.digest"

"""Per-recipient policies learned from randomised sends and valued off-policy (issue 27).

A policy maps what was known about a recipient before the send (segment, recency, frequency, tenure,
past click hour, past machine-open status) to one of the spec's variants. Candidates are learned and
valued on held-out recipients (cross-fitting) with the doubly robust (AIPW) estimate, using the
propensities the assignment recorded; the simplest candidate whose gain over the best single arm is
clearly positive is chosen, otherwise the single winner.

Modules: :mod:`.estimators` (AIPW / IPW / direct method, numpy), :mod:`.rules` (readable, machine
applicable rules), :mod:`.candidates` (single arm, per segment, shallow tree), :mod:`.evaluate`
(sequential cross-fitting, the choice, the report), :mod:`.guardrails` (a candidate that worsens a
spec guardrail beyond its tolerance is not chosen).
"""

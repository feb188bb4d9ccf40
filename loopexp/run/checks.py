"""Input checks of ``loopexp run`` in seconds, before a kernel starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loopexp.core.errors import EventsError
from loopexp.core.keys import EMAIL_PATTERN
from loopexp.design.spec import ExperimentSpec
from loopexp.metrics.definitions import HOLDOUT
from loopexp.metrics.sources import require_source


class AssignmentMismatchError(EventsError):
    """The assignment was made for another spec or iteration (another salt, other variants)."""


def _mask(key: Any) -> str:
    text = str(key)
    return EMAIL_PATTERN.sub("<e-mail address>", text)[:24]


def check_inputs(spec: ExperimentSpec, events: str | Path, assignment: str | Path) -> list[str]:
    """Check the inputs in seconds, before a kernel starts; return warnings, raise on errors.

    Errors (:class:`EventsError`, :class:`AssignmentMismatchError`): a missing file or column, an
    assignment made with another salt (another iteration's) or with variants the spec lacks, no
    recipient key shared by the events and the assignment.
    """
    import duckdb  # noqa: PLC0415

    from loopexp.events.schema import REQUIRED_COLUMNS  # noqa: PLC0415
    from loopexp.metrics.sources import attach  # noqa: PLC0415 (read exactly as the engine does)

    require_source(events, "events")
    require_source(assignment, "assignment")
    warnings: list[str] = []
    con = duckdb.connect()
    try:
        for view, source, what, needed in (
            ("ev", events, "events", REQUIRED_COLUMNS),
            ("asg", assignment, "assignment", ("recipient_key", "segment", "variant_id")),
        ):
            try:
                attach(con, view, source, what, needed)  # names the file and any missing column
            except duckdb.Error as exc:
                raise EventsError(
                    f"{source}: cannot read the {what} file "
                    f"({str(exc).strip().splitlines()[0][:300]}); expected Parquet or CSV"
                ) from None
        a_columns = [r[0] for r in con.execute("DESCRIBE asg").fetchall()]
        if "salt" in a_columns:
            salts = [r[0] for r in con.execute("SELECT DISTINCT salt FROM asg LIMIT 5").fetchall()]
            if salts != [spec.salt]:
                raise AssignmentMismatchError(
                    f"{assignment}: this assignment was made with salt {salts} but spec "
                    f"{spec.name!r} iteration {spec.iteration} has salt {spec.salt!r}: it belongs "
                    "to another iteration or spec. Analyse it with the spec it was made from, "
                    "or use the assignment written by `loopexp assign` for this spec."
                )
        if "spec_sha256" in a_columns:
            shas = [
                r[0] for r in con.execute("SELECT DISTINCT spec_sha256 FROM asg LIMIT 5").fetchall()
            ]
            if shas != [spec.sha256()]:
                warnings.append(
                    f"{assignment}: made from a spec with fingerprint {shas}, not this spec's "
                    f"({spec.sha256()[:12]}…): the spec was edited after assignment"
                )
        groups = {r[0] for r in con.execute("SELECT DISTINCT variant_id FROM asg").fetchall()}
        unknown = groups - {v.id for v in spec.variants} - {HOLDOUT}
        if unknown:
            raise AssignmentMismatchError(
                f"{assignment}: variants {sorted(map(str, unknown))} are not in spec "
                f"{spec.name!r} (which has {[v.id for v in spec.variants]}): was the assignment "
                "made from another spec?"
            )
        (overlap,) = con.execute(
            "SELECT EXISTS (SELECT 1 FROM ev WHERE recipient_key IN "
            "(SELECT recipient_key FROM asg))"
        ).fetchone()
        if not overlap:
            ev_keys = [r[0] for r in con.execute("SELECT recipient_key FROM ev LIMIT 3").fetchall()]
            a_keys = [r[0] for r in con.execute("SELECT recipient_key FROM asg LIMIT 3").fetchall()]
            raise AssignmentMismatchError(
                f"no event matches the assignment: no recipient_key of {events} is in "
                f"{assignment} (events: {[_mask(k) for k in ev_keys]}…, assignment: "
                f"{[_mask(k) for k in a_keys]}…). Are both from the same send, with keys hashed "
                "with the same key ($LOOPEXP_HASH_KEY)?"
            )
    finally:
        con.close()
    return warnings


__all__ = ["AssignmentMismatchError", "check_inputs"]


def check_store(tracking_uri: str) -> list[str]:
    """The tracking store's pre-flight (:func:`loopexp.track.store.preflight`), before any work.

    Refused credentials or an old database schema raise (:class:`StoreNotReadyError`: waiting
    does not fix them); a store that does not answer is a warning, since the run analyses anyway
    and keeps its results locally for ``loopexp upload``.
    """
    from loopexp.track.store import StoreUnreachableError, preflight  # noqa: PLC0415

    try:
        preflight(tracking_uri)
    except StoreUnreachableError as exc:
        return [str(exc)]
    return []

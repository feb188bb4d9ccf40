"""One run of an experiment at a time: a lock per experiment (``flock``, freed even on kill -9)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from loopexp.core.errors import StateError
from loopexp.design.spec import ExperimentSpec
from loopexp.track.tracking import file_lock, short_hash


class ExperimentBusyError(StateError):
    """Another process holds the experiment's lock."""


def experiment_lock_name(spec: ExperimentSpec, tracking_uri: str) -> str:
    """The lock file's name of an experiment (campaign and name) in one tracking store."""
    return f"experiment-{short_hash(tracking_uri, spec.campaign, spec.name)}"


@contextlib.contextmanager
def experiment_lock(spec: ExperimentSpec, tracking_uri: str, timeout: float) -> Iterator[None]:
    """Hold the experiment's lock; raise :class:`ExperimentBusyError` after ``timeout`` s."""
    try:
        with file_lock(experiment_lock_name(spec, tracking_uri), timeout=timeout):
            yield
    except TimeoutError as exc:
        raise ExperimentBusyError(
            f"another loopexp run of {spec.campaign}/{spec.name} holds the lock {exc} "
            f"(waited {timeout:g} s); it ends when that run ends"
        ) from None


__all__ = ["ExperimentBusyError", "experiment_lock", "experiment_lock_name"]

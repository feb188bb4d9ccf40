"""MLflow logging: one experiment per campaign, one run per analysed iteration.

Marketers read the runs table without clicking, so a run carries a name that says what happened
(``#2 SHIP personal +16%``), a one-line summary in words, headline metrics named the
same in every iteration (``decision.rel_lift``, ``control.<metric>``, ``best.<metric>``) so charts
compare iterations, the per-variant figures for those who dig, and the run's artifacts.

Schedulers need runs that end: a run is FINISHED with all its artifacts or FAILED, never left
RUNNING (:func:`mark_stale_runs` cleans up after a killed process), and a stopped tracking server
fails fast and clearly (:class:`TrackingUnavailableError`) instead of retrying for minutes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from loopexp.analysis.results import COMPARISON_FIGURES, ExperimentResults, Status
from loopexp.core import config
from loopexp.core import tags as tag
from loopexp.core.errors import StateError
from loopexp.design.spec import ExperimentSpec

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

# mlflow takes ~2 s to import: it is loaded only when a run is logged, so `import loopexp` is quick.

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

#: MLflow's HTTP client retries 7 times with backoff factor 2 and a 120 s timeout by default: a
#: stopped server stalls a run for minutes. loopexp's defaults (used unless the variable is set)
#: give up after about 10 s; set the MLflow variables to change them.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}

#: The experiment tag that makes MLflow 3.x open a campaign on its runs table (not on GenAI traces).
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")

#: A RUNNING run of another host is stale after this many hours (same host: when its process died).

_STATUS_WORDS = {
    Status.SHIP: "SHIP",
    Status.KEEP_TESTING: "KEEP TESTING",
    Status.NO_DIFFERENCE: "NO DIFF",
    Status.GUARDRAIL_VETO: "VETO",
    Status.INVALID_SRM: "BAD SPLIT",
}

_SUMMARY_WORDS = {
    Status.SHIP: "SHIP",
    Status.KEEP_TESTING: "KEEP TESTING",
    Status.NO_DIFFERENCE: "NO DIFFERENCE",
    Status.GUARDRAIL_VETO: "GUARDRAIL VETO",
    Status.INVALID_SRM: "INVALID SPLIT (sample-ratio mismatch)",
}

#: Short words for metrics in run names (the default name column shows ~40 characters).
_METRIC_WORDS = {
    "click_rate": "clicks",
    "click_to_open_rate": "CTOR",
    "open_rate": "opens",
    "open_rate_raw": "raw opens",
    "conversion_rate": "conversions",
    "unsubscribe_rate": "unsubscribes",
    "complaint_rate": "complaints",
    "delivery_rate": "deliveries",
    "revenue_per_delivered": "revenue",
}


class TrackingUnavailableError(StateError):
    """The tracking server could not be reached (after bounded retries)."""

    def __init__(self, uri: str, cause: BaseException | str):
        self.uri = uri
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)
        super().__init__(f"MLflow tracking server {uri} is not reachable ({first_line[:300]})")


def configure_http() -> None:
    """Bound MLflow's HTTP retries (see :data:`HTTP_DEFAULTS`) unless the user set them."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def is_remote(uri: str) -> bool:
    """True for a tracking server (http/https), False for a local store."""
    return urlparse(uri).scheme in ("http", "https")


@contextlib.contextmanager
def file_lock(name: str, timeout: float | None = None) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``<lock_dir>/<name>.lock``; wait at most ``timeout`` s.

    The kernel releases the lock when the process dies, even by kill -9, so a lock never goes
    stale. Raises :class:`TimeoutError` when another process holds it for longer than ``timeout``.
    """
    path = config.lock_dir() / f"{name}.lock"
    with path.open("a+") as handle:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(str(path)) from None
                time.sleep(0.2)
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def short_hash(*parts: str) -> str:
    """A short stable hash of strings (lock file names)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def _client(uri: str) -> MlflowClient:
    configure_http()
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 (lazy, see above)

    if not uri.startswith("sqlite:"):
        return MlflowClient(tracking_uri=uri)
    # MLflow creates a fresh SQLite store's tables without a lock (the client creates its store
    # when constructed): two first runs at once fail with "table latest_metrics already exists".
    # Constructing the client under a lock per database file makes the first contact safe; later
    # contacts find the tables (and MLflow caches the store per process).
    with file_lock(f"store-{short_hash(uri)}", timeout=300):
        return MlflowClient(tracking_uri=uri)


@contextlib.contextmanager
def _reachable(uri: str) -> Iterator[None]:
    """Turn a connection failure to a tracking server into :class:`TrackingUnavailableError`."""
    try:
        yield
    except TrackingUnavailableError:
        raise
    except Exception as exc:
        text = str(exc)
        if is_remote(uri) and (
            "API request to" in text
            or "Max retries exceeded" in text
            or "Connection" in type(exc).__name__
            or "Connection refused" in text
        ):
            raise TrackingUnavailableError(uri, exc) from exc
        raise


def resolve_tracking_uri(uri: str | None = None, base: Path | None = None) -> str:
    """Default to ``sqlite:///mlflow.db`` in ``base`` (the working folder); make paths absolute."""
    uri = uri or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri.removeprefix("sqlite:///"))
        uri = f"sqlite:///{((base or Path.cwd()) / path).resolve()}"
    return uri


def _artifact_root(uri: str) -> str | None:
    """Keep artifacts beside a local SQLite store (MLflow would use the working folder)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


def ensure_experiment(client: MlflowClient, campaign: str, uri: str) -> str:
    """The campaign's experiment id (created when new), tagged to open on the runs table."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    experiment = client.get_experiment_by_name(campaign)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(
                campaign, artifact_location=_artifact_root(uri)
            )
        except MlflowException:  # created meanwhile by another process
            experiment = client.get_experiment_by_name(campaign)
            if experiment is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
    if experiment is None or experiment.tags.get(EXPERIMENT_KIND_TAG[0]) != EXPERIMENT_KIND_TAG[1]:
        client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND_TAG)
    return experiment_id


def spec_params(spec: ExperimentSpec) -> dict[str, str]:
    """Flat, readable run params from a spec."""
    params = {
        "name": spec.name,
        "campaign": spec.campaign,
        "iteration": str(spec.iteration),
        "test_type": spec.test_type.value,
        "salt": spec.salt,
        "control": spec.control,
        "variants": ",".join(v.id for v in spec.variants),
        "primary_metric": spec.primary_metric,
        "guardrails": ",".join(
            f"{g.metric}<=+{g.max_relative_increase:g}" for g in spec.guardrails
        ),
        "alpha": f"{spec.decision.alpha:g}",
        "correction": spec.decision.correction,
        "mde_relative": f"{spec.decision.mde_relative:g}",
        "holdout": f"{spec.audience.holdout:g}",
        "segments": ",".join(s.value for s in spec.audience.segments),
        "parent_run_id": spec.parent_run_id or "",
    }
    for v in spec.variants:
        params[f"variant.{v.id}.weight"] = f"{v.weight:g}"
        for field in ("subject", "content", "send_time"):
            value = getattr(v, field)
            if value:
                params[f"variant.{v.id}.{field}"] = value[:500]
    return params


#: Names of the headline metrics, the same in every iteration (charts compare iterations).
HEADLINE_PREFIXES = ("decision.", "control.", "best.")


def headline_metrics(results: ExperimentResults) -> dict[str, float]:
    """Metrics named the same in every iteration: the decision's figures, control and best.

    ``best`` is the winner when there is one, else the most promising challenger.
    """
    d = results.decision
    out: dict[str, float] = {"decision.shipped": float(d.status == Status.SHIP)}
    for field in ("rel_lift", "rel_ci_low", "rel_ci_high", "p_value_adjusted", "prob_beat_control"):
        value = getattr(d, field)
        if value is not None and math.isfinite(value):
            out[f"decision.{field}"] = value
    # What all mailed arms added over the no-mail holdout, named the same in every iteration.
    for r in results.incrementality:
        if r.arm == "all_mailed" and r.metric == "revenue_per_assigned":
            for field, name in (
                ("incremental_total", "holdout.revenue_added"),
                ("incremental_ci_low", "holdout.revenue_added_low"),
                ("incremental_ci_high", "holdout.revenue_added_high"),
            ):
                value = getattr(r, field)
                if value is not None and math.isfinite(value):
                    out[name] = value
    by_id = {v.id: v for v in results.variants}
    control = next((v for v in results.variants if v.is_control), None)
    for label, variant in (("control", control), ("best", by_id.get(d.best_challenger or ""))):
        if variant is None:
            continue
        out[f"{label}.n"] = variant.n
        for name, mv in variant.metrics.items():
            if mv.value is not None and math.isfinite(mv.value):
                out[f"{label}.{name}"] = mv.value
    return out


def results_metrics(results: ExperimentResults) -> dict[str, float]:
    """Numeric run metrics: headline, per-variant, per-comparison figures, SRM and data counts."""
    out: dict[str, float] = {
        "srm_p_value": results.srm.p_value,
        "recipients": results.data.recipients,
        "events": results.data.events,
        "quarantined": results.data.quarantined,
    }
    for v in results.variants:
        # A challenger called "control" or "best" would clash with a headline name: prefix it.
        prefix = f"variant.{v.id}" if v.id in {"best", "decision"} else v.id
        if v.id == "control" and not v.is_control:
            prefix = "variant.control"
        out[f"{prefix}.n"] = v.n
        for name, mv in v.metrics.items():
            if mv.value is not None and math.isfinite(mv.value):
                out[f"{prefix}.{name}"] = mv.value
    for c in results.comparisons:
        prefix = f"{c.metric}.{c.variant}_vs_{c.control}"
        for field in COMPARISON_FIGURES:
            value = getattr(c, field)
            if value is not None and math.isfinite(value):
                out[f"{prefix}.{field}"] = value
    for r in results.incrementality:
        prefix = f"holdout.{r.metric}.{r.arm}"
        for field in (
            "estimate",
            "rel_lift",
            "p_value_adjusted",
            "incremental_total",
            "incremental_ci_low",
            "incremental_ci_high",
        ):
            value = getattr(r, field)
            if value is not None and math.isfinite(value):
                out[f"{prefix}.{field}"] = value
    out.update(headline_metrics(results))
    return out


def markdown_text(text: str) -> str:
    """``text`` as literal Markdown: one line, every markup character escaped.

    Names and reasons come from specs and data: a newline could forge a "Decision: ship" line, and
    ``<script>``, links or emphasis would be rendered by the MLflow UI.
    """
    one_line = re.sub(r"[\x00-\x1f\x7f]+", " ", str(text))
    escaped = re.sub(r"([\\`*_{}\[\]()#+\-.!|~])", r"\\\1", one_line)
    # HTML's own characters as entities: every Markdown renderer leaves those as text.
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str, limit: int = 120) -> str:
    """One line of text from a spec or data (whitespace collapsed), cut at ``limit`` characters.

    Plain text, for tags and names; Markdown output passes it through :func:`markdown_text`.
    """
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _words(spec: ExperimentSpec, variant_id: str | None) -> str:
    """What a variant is, in words: its subject line, content or send time."""
    variant = next((v for v in spec.variants if v.id == variant_id), None)
    if variant is None:
        return ""
    field = {"subject_line": "subject", "content": "content", "send_time": "send_time"}.get(
        spec.test_type.value, "subject"
    )
    value = getattr(variant, field, None) or variant.subject or variant.content or variant.send_time
    return str(value) if value else ""


def _metric_word(metric: str) -> str:
    return _METRIC_WORDS.get(metric, metric.removesuffix("_rate").replace("_", " "))


def run_name(results: ExperimentResults) -> str:
    """``#2 SHIP personal +16%``: what happened, decision first, short enough for the name column.

    MLflow 3's runs table shows about 23 characters of a name (146 px): the iteration and the
    decision always fit; the variant is cut to 10 characters; the metric is in the summary.
    """
    d = results.decision
    parts = [f"#{results.experiment.iteration}", _STATUS_WORDS.get(d.status, d.status.value)]
    who = d.winner or d.best_challenger
    if who:
        parts.append(who if len(who) <= 10 else who[:9] + "…")
        if d.rel_lift is not None and math.isfinite(d.rel_lift):
            parts.append(f"{d.rel_lift:+.0%}" if abs(d.rel_lift) >= 0.1 else f"{d.rel_lift:+.1%}")
    return " ".join(parts)


def summary_line(results: ExperimentResults, spec: ExperimentSpec) -> str:
    """One line in words for a marketer.

    It names the decision, the winning variant's subject line (or content / send time), the lift
    with its interval and certainty, and the guardrails.
    """
    d = results.decision
    status = _SUMMARY_WORDS.get(d.status, d.status.value)
    who = d.winner or d.best_challenger
    metric = _metric_word(d.primary_metric)
    if who:
        words = _words(spec, who)
        role = "" if d.winner else "best so far: "
        text = f"{status}: {role}{_plain(who, 40)}" + (f" “{_plain(words)}”" if words else "")
        if d.rel_lift is not None and math.isfinite(d.rel_lift):
            text += f" {d.rel_lift:+.1%} {metric}"
            if d.rel_ci_low is not None and d.rel_ci_high is not None:
                level = f"{100 * (d.ci_level or 0.95):.4g}%"  # the level the decision's test used
                text += f" ({level} CI {d.rel_ci_low:+.1%} to {d.rel_ci_high:+.1%}"
                if d.prob_beat_control is not None:
                    text += f", {d.prob_beat_control:.0%} chance to beat control"
                text += ")"
    else:
        text = f"{status}: no challenger could be compared on {metric}"
    failed = sorted({f"{g.metric} ({g.variant})" for g in d.guardrails if not g.passed})
    if failed:
        text += f"; guardrails broken: {', '.join(failed)}"
    elif d.guardrails:
        text += f"; guardrails ok ({', '.join(sorted({g.metric for g in d.guardrails}))})"
    return text + "."


def run_description(results: ExperimentResults, spec: ExperimentSpec | None = None) -> str:
    """Markdown for the run page (``mlflow.note.content``): the summary first, then the reasons."""
    d = results.decision
    winner = f", winner **{markdown_text(d.winner)}**" if d.winner else ""
    lines = [
        f"**{markdown_text(summary_line(results, spec))}**" if spec else "",
        "",
        f"## {markdown_text(results.experiment.name)}, iteration {results.experiment.iteration}",
        f"**Decision: {d.status.value}**" + winner,
        "",
        *[f"- {markdown_text(r)}" for r in d.reasons],
        "",
        f"Recipients {results.data.recipients:,}; events {results.data.events:,}; "
        f"quarantined {results.data.quarantined:,}; SRM p = {results.srm.p_value:.3g}.",
    ]
    return "\n".join(lines).lstrip()


def run_identity_tags(
    spec: ExperimentSpec, spec_sha256: str, fingerprint: str, attempt_id: str
) -> dict[str, str]:
    """Tags that identify a run (idempotency) and its owner (stale-run detection)."""
    return {
        tag.CAMPAIGN: spec.campaign,
        tag.ITERATION: str(spec.iteration),
        tag.EXPERIMENT: spec.name,
        tag.TEST_TYPE: spec.test_type.value,
        "loopexp.spec_sha256": spec_sha256,
        tag.DATA_FINGERPRINT: fingerprint,
        tag.PARENT_RUN_ID: spec.parent_run_id or "",
        tag.ATTEMPT: attempt_id,
        tag.HOST: socket.gethostname(),
        tag.PID: str(os.getpid()),
    }


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_finished_run(
    campaign: str, spec_sha256: str, fingerprint: str, tracking_uri: str
) -> Run | None:
    """The FINISHED run of this spec on this data, if one was logged (the idempotency check)."""
    with _reachable(tracking_uri):
        client = _client(tracking_uri)
        experiment = client.get_experiment_by_name(campaign)
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id],
            f"tags.`loopexp.spec_sha256` = {_quoted(spec_sha256)} AND "
            f"tags.`loopexp.data_fingerprint` = {_quoted(fingerprint)} AND "
            "attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    return runs[0] if runs else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_stale_runs(spec: ExperimentSpec, tracking_uri: str) -> list[str]:
    """Mark FAILED the RUNNING runs of this experiment and iteration whose process is gone.

    Call it while holding the experiment's lock: no live loopexp process is then logging this
    experiment on this machine. A run is stale when it was started on this host by a process that
    no longer exists, or on another host more than ``config.stale_after_hours()`` ago.
    """
    stale = []
    with _reachable(tracking_uri):
        client = _client(tracking_uri)
        experiment = client.get_experiment_by_name(spec.campaign)
        if experiment is None:
            return []
        runs = client.search_runs(
            [experiment.experiment_id],
            f"tags.`loopexp.experiment` = {_quoted(spec.name)} AND "
            f"tags.`loopexp.iteration` = '{spec.iteration}' AND attributes.status = 'RUNNING'",
        )
        host = socket.gethostname()
        for run in runs:
            tags = run.data.tags
            age_hours = (time.time() * 1000 - run.info.start_time) / 3.6e6
            same_host = tags.get(tag.HOST) == host
            pid = int(tags.get(tag.PID, "0") or 0)
            if (same_host and pid != os.getpid() and not _pid_alive(pid)) or (
                not same_host and age_hours > config.stale_after_hours()
            ):
                client.set_tag(
                    run.info.run_id,
                    tag.FAILURE,
                    f"stale: its process (pid {pid} on {tags.get(tag.HOST, '?')}) ended "
                    "before the run finished; marked FAILED by a later run",
                )
                client.set_terminated(run.info.run_id, status="FAILED")
                stale.append(run.info.run_id)
    return stale


@dataclass(frozen=True)
class LoggedRun:
    """Where a run was logged."""

    run_id: str
    experiment_id: str
    tracking_uri: str


def start_run(
    spec: ExperimentSpec,
    name: str,
    tags: dict[str, str],
    tracking_uri: str,
) -> LoggedRun:
    """Create a RUNNING run in the campaign's experiment; end it with :func:`end_run`."""
    with _reachable(tracking_uri):
        client = _client(tracking_uri)
        experiment_id = ensure_experiment(client, spec.campaign, tracking_uri)
        run = client.create_run(experiment_id, run_name=name, tags=tags)
    return LoggedRun(run.info.run_id, experiment_id, tracking_uri)


def log_contents(
    run: LoggedRun,
    results: ExperimentResults,
    spec: ExperimentSpec,
    artifacts: Iterable[Path] = (),
) -> None:
    """Params, metrics, results tables (``log_table``) and artifacts of an analysed run."""
    from mlflow.entities import Metric, Param  # noqa: PLC0415 (lazy, see _client)

    with _reachable(run.tracking_uri):
        client = _client(run.tracking_uri)
        client.log_batch(run.run_id, params=[Param(k, v) for k, v in spec_params(spec).items()])
        metrics = list(results_metrics(results).items())
        now = int(time.time() * 1000)
        for start in range(0, len(metrics), 500):  # log_batch takes at most 1000 metrics
            client.log_batch(
                run.run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics[start : start + 500]],
            )
        client.log_table(
            run.run_id,
            results.variants_frame().reset_index(names="variant"),
            "tables/variants.json",
        )
        client.log_table(run.run_id, results.comparisons_frame(), "tables/comparisons.json")
        log_files(run, artifacts)


def log_files(run: LoggedRun, artifacts: Iterable[Path], artifact_path: str | None = None) -> None:
    """Attach files (or folders) to a run."""
    with _reachable(run.tracking_uri):
        client = _client(run.tracking_uri)
        for artifact in map(Path, artifacts):
            if artifact.is_dir():
                sub = f"{artifact_path}/{artifact.name}" if artifact_path else artifact.name
                client.log_artifacts(run.run_id, str(artifact), artifact_path=sub)
            elif artifact.exists():
                client.log_artifact(run.run_id, str(artifact), artifact_path=artifact_path)


def end_run(run: LoggedRun, status: str = "FINISHED", tags: dict[str, str] | None = None) -> None:
    """Set final tags and end the run as FINISHED or FAILED."""
    with _reachable(run.tracking_uri):
        client = _client(run.tracking_uri)
        for key, value in (tags or {}).items():
            client.set_tag(run.run_id, key, value)
        client.set_terminated(run.run_id, status=status)


def log_run(
    results: ExperimentResults,
    spec: ExperimentSpec,
    artifacts: Iterable[Path] = (),
    tracking_uri: str | None = None,
) -> tuple[str, str]:
    """Log one analysed iteration as a FINISHED MLflow run; return ``(run_id, experiment_id)``."""
    uri = resolve_tracking_uri(tracking_uri)
    tags = {
        **run_identity_tags(
            spec, results.experiment.spec_sha256, results.data.fingerprint, "python"
        ),
        **decision_tags(results, spec),
    }
    run = start_run(spec, run_name(results), tags, uri)
    try:
        log_contents(run, results, spec, artifacts)
    except BaseException:
        with contextlib.suppress(Exception):
            end_run(run, "FAILED")
        raise
    end_run(run)
    return run.run_id, run.experiment_id


def decision_tags(results: ExperimentResults, spec: ExperimentSpec) -> dict[str, str]:
    """Tags of an analysed run: the decision, the summary line and the run page's description."""
    d = results.decision
    return {
        tag.DECISION_STATUS: d.status.value,
        tag.DECISION_WINNER: d.winner or "none",
        tag.SUMMARY: summary_line(results, spec),
        "mlflow.note.content": run_description(results, spec),
    }


def list_runs(campaign: str, tracking_uri: str) -> list[Run]:
    """The campaign's runs, oldest first."""
    with _reachable(tracking_uri):
        client = _client(tracking_uri)
        experiment = client.get_experiment_by_name(campaign)
        if experiment is None:
            return []
        return list(
            client.search_runs(
                [experiment.experiment_id],
                order_by=["attributes.start_time ASC"],
                max_results=1000,
            )
        )


def experiment_id_of(campaign: str, tracking_uri: str) -> str | None:
    """The id of the campaign's experiment, or None when nothing was logged yet."""
    with _reachable(tracking_uri):
        experiment = _client(tracking_uri).get_experiment_by_name(campaign)
    return experiment.experiment_id if experiment else None


def download_artifact(run_id: str, path: str, tracking_uri: str, dst: Path) -> Path:
    """Download one artifact of a run into ``dst``; return the local path."""
    with _reachable(tracking_uri):
        local = _client(tracking_uri).download_artifacts(run_id, path, str(dst))
    return Path(local)


def log_artifact(
    run_id: str, path: Path, tracking_uri: str | None = None, artifact_path: str | None = None
) -> None:
    """Attach one more file to a (possibly finished) run."""
    client = _client(resolve_tracking_uri(tracking_uri))
    client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def set_tag(run_id: str, key: str, value: str, tracking_uri: str | None = None) -> None:
    """Set one tag on a (possibly finished) run."""
    _client(resolve_tracking_uri(tracking_uri)).set_tag(run_id, key, value)


def run_tags(run: Any) -> dict[str, str]:
    """The tags of an MLflow run entity."""
    return dict(run.data.tags)


def experiment_url(base_url: str, experiment_id: str | None = None) -> str:
    """The link to a campaign's runs table (model-training view) on a server at ``base_url``."""
    base = base_url.rstrip("/")
    page = f"experiments/{experiment_id}/runs" if experiment_id else "experiments"
    return f"{base}/#/{page}?workflowType=machine_learning"


def ui_hint(tracking_uri: str, experiment_id: str | None = None) -> str:
    """How to see the runs: the URL of a server, or the ``loopexp ui`` command for a local store."""
    uri = resolve_tracking_uri(tracking_uri)
    if is_remote(uri):
        return experiment_url(uri, experiment_id)
    return (
        f"loopexp ui --tracking-uri {uri}  then open "
        f"{experiment_url('http://127.0.0.1:5000', experiment_id)}"
    )

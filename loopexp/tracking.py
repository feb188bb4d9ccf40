"""MLflow logging: one experiment per campaign, one run per analysed iteration.

Marketers compare iterations in the MLflow UI, so runs carry readable params, per-variant and
per-comparison metrics, ``loopexp.*`` tags, a Markdown description, and the artifacts of the run.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from loopexp.results import COMPARISON_FIGURES, ExperimentResults
from loopexp.spec import ExperimentSpec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# mlflow takes ~2 s to import: it is loaded only when a run is logged, so `import loopexp` is quick.


def _client(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 (lazy, see above)

    return MlflowClient(tracking_uri=uri)


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


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


def results_metrics(results: ExperimentResults) -> dict[str, float]:
    """Numeric run metrics: per-variant values, per-comparison figures, SRM and data counts."""
    out: dict[str, float] = {
        "srm_p_value": results.srm.p_value,
        "recipients": results.data.recipients,
        "events": results.data.events,
        "quarantined": results.data.quarantined,
    }
    for v in results.variants:
        out[f"{v.id}.n"] = v.n
        for name, mv in v.metrics.items():
            if mv.value is not None:
                out[f"{v.id}.{name}"] = mv.value
    for c in results.comparisons:
        prefix = f"{c.metric}.{c.variant}_vs_{c.control}"
        for field in COMPARISON_FIGURES:
            value = getattr(c, field)
            if value is not None and math.isfinite(value):
                out[f"{prefix}.{field}"] = value
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


def run_description(results: ExperimentResults) -> str:
    """Markdown for the run page (``mlflow.note.content``); spec and data text escaped."""
    d = results.decision
    winner = f", winner **{markdown_text(d.winner)}**" if d.winner else ""
    lines = [
        f"## {markdown_text(results.experiment.name)}, iteration {results.experiment.iteration}",
        f"**Decision: {d.status.value}**" + winner,
        "",
        *[f"- {markdown_text(r)}" for r in d.reasons],
        "",
        f"Recipients {results.data.recipients:,}; events {results.data.events:,}; "
        f"quarantined {results.data.quarantined:,}; SRM p = {results.srm.p_value:.3g}.",
    ]
    return "\n".join(lines)


def log_run(
    results: ExperimentResults,
    spec: ExperimentSpec,
    artifacts: Iterable[Path] = (),
    tracking_uri: str | None = None,
) -> tuple[str, str]:
    """Log one analysed iteration as an MLflow run; return ``(run_id, experiment_id)``."""
    from mlflow.entities import Metric, Param  # noqa: PLC0415 (lazy, see _client)

    uri = resolve_tracking_uri(tracking_uri)
    client = _client(uri)
    experiment = client.get_experiment_by_name(spec.campaign)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else client.create_experiment(spec.campaign, artifact_location=_artifact_root(uri))
    )
    d = results.decision
    tags = {
        "loopexp.campaign": spec.campaign,
        "loopexp.iteration": str(spec.iteration),
        "loopexp.experiment": spec.name,
        "loopexp.test_type": spec.test_type.value,
        "loopexp.decision.status": d.status.value,
        "loopexp.decision.winner": d.winner or "none",
        "loopexp.spec_sha256": results.experiment.spec_sha256,
        "loopexp.data_fingerprint": results.data.fingerprint,
        "loopexp.parent_run_id": spec.parent_run_id or "",
        "mlflow.note.content": run_description(results),
    }
    run = client.create_run(experiment_id, run_name=f"{spec.name}-iter{spec.iteration}", tags=tags)
    run_id = run.info.run_id
    try:
        client.log_batch(
            run_id,
            params=[Param(k, v) for k, v in spec_params(spec).items()],
        )
        metrics = list(results_metrics(results).items())
        now = int(time.time() * 1000)
        for start in range(0, len(metrics), 500):  # log_batch takes at most 1000 metrics
            client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics[start : start + 500]],
            )
        for artifact in map(Path, artifacts):
            if artifact.is_dir():
                client.log_artifacts(run_id, str(artifact), artifact_path=artifact.name)
            else:
                client.log_artifact(run_id, str(artifact))
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id, experiment_id


def log_artifact(
    run_id: str, path: Path, tracking_uri: str | None = None, artifact_path: str | None = None
) -> None:
    """Attach one more file to a (possibly finished) run."""
    client = _client(resolve_tracking_uri(tracking_uri))
    client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def set_tag(run_id: str, key: str, value: str, tracking_uri: str | None = None) -> None:
    """Set one tag on a (possibly finished) run."""
    _client(resolve_tracking_uri(tracking_uri)).set_tag(run_id, key, value)


def ui_hint(tracking_uri: str, experiment_id: str | None = None) -> str:
    """How to see the runs: the URL of a server, or the ``mlflow ui`` command for a local store."""
    uri = resolve_tracking_uri(tracking_uri)
    suffix = f"#/experiments/{experiment_id}?workflowType=machine_learning" if experiment_id else ""
    if urlparse(uri).scheme in ("http", "https"):
        return f"{uri.rstrip('/')}/{suffix}"
    return (
        f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000  "
        f"then open http://127.0.0.1:5000/{suffix}"
    )

"""Notebook execution through papermill: ``notebooks/`` present the package's work to people."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loopexp.resources import notebooks_dir

#: The shipped notebooks: the repository's ``notebooks/`` in a checkout, inside the installed wheel.
NOTEBOOKS_DIR = notebooks_dir()
ANALYZE_NOTEBOOK = "analyze_experiment.ipynb"


def execute(
    notebook: str | Path,
    output_path: str | Path,
    parameters: dict[str, Any],
    kernel_name: str | None = "python3",
    cwd: str | Path | None = None,
) -> Path:
    """Execute ``notebook`` with ``parameters`` into ``output_path`` and return that path.

    ``notebook`` is a path, or a name in :data:`NOTEBOOKS_DIR`. A failing cell raises papermill's
    ``PapermillExecutionError``; the partly executed notebook is still written for inspection.
    """
    source = Path(notebook)
    if not source.exists():
        source = NOTEBOOKS_DIR / notebook
    if not source.exists():
        raise FileNotFoundError(
            f"notebook {notebook} not found (looked in the working folder and {NOTEBOOKS_DIR})"
        )
    import papermill as pm  # noqa: PLC0415 (lazy: ~1 s to import, needed only to execute)

    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(source),
        str(output_path),
        parameters=parameters,
        kernel_name=kernel_name,
        cwd=str(cwd) if cwd else None,
        progress_bar=False,
        report_mode=False,
        # The kernel talks to us over loopback TCP; its warning about that is noise in a CLI run.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
    )
    return output_path

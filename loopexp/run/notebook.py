"""Notebook execution through papermill: ``notebooks/`` present the package's work to people."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loopexp.core.errors import StateError
from loopexp.design.resources import notebooks_dir

#: The shipped notebooks: the repository's ``notebooks/`` in a checkout, inside the installed wheel.
NOTEBOOKS_DIR = notebooks_dir()
ANALYZE_NOTEBOOK = "analyze_experiment.ipynb"
#: The analysis of a flow test (a spec with ``flow:``): ``loopexp run`` picks it for such specs.
FLOW_NOTEBOOK = "flow_experiment.ipynb"


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
        # CRITICAL, not ERROR: jupyter_client interrupts the kernel before shutting it down, and
        # the kernel logs that as "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel" on
        # every successful run. A failing cell or a dead kernel still reaches us (nbclient).
        extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
    )
    return output_path


class NotebookFailedError(StateError):
    """A cell of the notebook raised (or its kernel died); the partial notebook was kept.

    Attributes:
        notebook: the partly executed notebook (outputs up to and including the failing cell).
        cell: the execution count of the failing cell, when known.
        ename: the exception's type name raised in the kernel.
        evalue: the exception's message.
    """

    def __init__(self, notebook: Path, cell: int | None, ename: str, evalue: str):
        self.notebook = notebook
        self.cell = cell
        self.ename = ename
        self.evalue = evalue
        self.run_id: str | None = None  # the FAILED MLflow run, once the pipeline recorded it
        where = f"cell {cell}" if cell is not None else "a cell"
        super().__init__(
            f"the notebook failed in {where}: {ename}: {evalue.strip()[:500]} "
            f"(the partly executed notebook is {notebook})"
        )


def execute_or_fail(
    notebook: str | Path,
    output_path: str | Path,
    parameters: dict[str, Any],
    kernel_name: str | None = "python3",
    cwd: str | Path | None = None,
) -> Path:
    """:func:`execute`, raising :class:`NotebookFailedError` on a failing cell or a dead kernel.

    papermill writes the partial notebook before it raises, so the failure can be shown (and
    attached to a FAILED MLflow run) with the outputs up to the failing cell.
    """
    from nbclient.exceptions import DeadKernelError  # noqa: PLC0415 (lazy, with papermill)
    from papermill.exceptions import PapermillExecutionError  # noqa: PLC0415

    try:
        return execute(notebook, output_path, parameters, kernel_name=kernel_name, cwd=cwd)
    except PapermillExecutionError as exc:
        failed = NotebookFailedError(Path(output_path), exc.exec_count, exc.ename, exc.evalue)
        raise failed from None
    except DeadKernelError as exc:
        raise NotebookFailedError(Path(output_path), None, "DeadKernelError", str(exc)) from None


def render_html(executed: str | Path, output_path: str | Path | None = None) -> Path:
    """An HTML rendering (nbconvert) of an executed notebook, beside it by default."""
    import nbconvert  # noqa: PLC0415 (lazy: ~1 s to import)
    import nbformat  # noqa: PLC0415

    executed = Path(executed)
    output_path = Path(output_path) if output_path else executed.with_suffix(".html")
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    output_path.write_text(body, encoding="utf-8")
    return output_path

"""Files shipped with loopexp: the notebooks, the example specs, and starter specs for ``init``.

The repository keeps them in its top-level ``notebooks/`` and ``experiments/`` folders; the build
(``setup.py``) maps those folders into the wheel as the packages ``loopexp.notebooks`` and
``loopexp.experiments``, so one lookup through :mod:`importlib.resources` finds them in a checkout
(editable install) and in an installed wheel alike.
"""

from __future__ import annotations

import re
import secrets
from importlib.resources import files
from pathlib import Path

from loopexp.design.parts import TestType
from loopexp.design.spec import parse_spec

NOTEBOOKS_PACKAGE = "loopexp.notebooks"
EXPERIMENTS_PACKAGE = "loopexp.experiments"

#: The example spec of each test type; ``loopexp init --type T`` starts from ``EXAMPLE_SPECS[T]``.
EXAMPLE_SPECS: dict[TestType, str] = {
    TestType.SUBJECT_LINE: "subject_line_demo.yaml",
    TestType.CONTENT: "content_demo.yaml",
    TestType.SEND_TIME: "send_time_demo.yaml",
    TestType.PREHEADER: "preheader_demo.yaml",
    TestType.FROM_NAME: "from_name_demo.yaml",
    TestType.MULTIVARIATE: "multivariate_demo.yaml",
    TestType.FLOW: "welcome_flow_timing.yaml",
}


def _bundled(package: str, name: str) -> Path:
    # Wheels install unzipped, so the resource is a real file that papermill and YAML can open.
    path = Path(str(files(package) / name))
    if not path.is_file():
        available = sorted(p.name for p in files(package).iterdir() if p.name[0] not in "_.")
        raise FileNotFoundError(f"{name} is not shipped with loopexp; shipped: {available}")
    return path


def notebook_path(name: str) -> Path:
    """The path of a shipped notebook, e.g. ``notebook_path("analyze_experiment.ipynb")``."""
    return _bundled(NOTEBOOKS_PACKAGE, name)


def notebooks_dir() -> Path:
    """The folder of the shipped notebooks (the repository's ``notebooks/`` in a checkout)."""
    return Path(str(files(NOTEBOOKS_PACKAGE)))


def example_spec_path(name: str) -> Path:
    """The path of a shipped example spec, e.g. ``example_spec_path("subject_line_demo.yaml")``."""
    return _bundled(EXPERIMENTS_PACKAGE, name)


def starter_spec(test_type: TestType | str, campaign: str) -> str:
    """A commented spec for a new ``test_type`` experiment of ``campaign``, as YAML text.

    It is the shipped example of that test type, comments kept, renamed to ``campaign`` with a
    fresh random salt (two experiments must never share a salt, or their splits correlate). The
    text is validated before it is returned, so a starter always passes ``loopexp validate``.
    """
    test_type = TestType(test_type)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", campaign):  # ExperimentSpec.campaign's rule
        raise ValueError(
            f"campaign name {campaign!r}: use letters, digits, '.', '_' and '-' (no spaces), "
            "starting with a letter or digit"
        )
    text = example_spec_path(EXAMPLE_SPECS[test_type]).read_text(encoding="utf-8")
    salt = f"{campaign}-iter-1-{secrets.token_hex(4)}"
    for key, value in (
        ("name", f"{campaign}-{test_type.value.replace('_', '-')}"),
        ("campaign", campaign),
        ("salt", salt),
        ("iteration", "1"),
    ):
        # Top-level keys only (no indentation); a trailing comment on the line is kept.
        text, count = re.subn(
            rf"^{key}:[^#\n]*?(\s*#.*)?$", rf"{key}: {value}\1", text, count=1, flags=re.M
        )
        if count != 1:
            raise ValueError(f"example spec for {test_type.value} has no top-level {key!r}")
    text = with_planned_hint(text)  # issue 28: a first test without a plan ships on luck
    parse_spec(text, source=f"starter spec for {test_type.value}")
    return text


#: The line ``loopexp init`` adds, commented, when the example has no planned sample.
PLANNED_HINT = (
    "# planned_recipients_per_variant: 20000  # recipients per variant the test needs: "
    "`loopexp plan SPEC --baseline 0.04 --write` fills it in; a fixed-horizon test is read only "
    "once it is reached"
)


def with_planned_hint(text: str) -> str:
    """``text`` with :data:`PLANNED_HINT` appended when it sets no planned sample (commented)."""
    if re.search(r"^#?\s*planned_recipients_per_variant:", text, flags=re.M):
        return text
    return text.rstrip("\n") + "\n" + PLANNED_HINT + "\n"


def write_planned_sample(path: str | Path, per_variant: int, source: str) -> Path:
    """Set ``planned_recipients_per_variant`` in the spec file at ``path``, comments kept.

    Replaces the top-level key (or its commented hint from ``loopexp init``), else appends it;
    the new text is validated before it is written, so the file stays a valid spec.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    line = f"planned_recipients_per_variant: {int(per_variant)}  # {source}"
    new, count = re.subn(
        r"^#?\s*planned_recipients_per_variant:.*$", line, text, count=1, flags=re.M
    )
    if not count:
        new = text.rstrip("\n") + "\n" + line + "\n"
    parse_spec(new, source=path)
    path.write_text(new, encoding="utf-8")
    return path

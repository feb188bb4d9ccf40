"""The before/after table of broken inputs (issue #19): each case run on two versions of loopexp.

    python bench/hardening_table.py --before c9547a3 > table.md

The "before" version is ``git archive``d into a temporary folder and imported instead of the
working tree (a ``sitecustomize`` drops the editable install's finder); the "after" version is the
working tree. Cases come from ``tests/hardening_cases.py`` (events and assignments) and
``tests/test_hardening_spec.py`` (specs); each outcome is what a user would get, in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()
                    and "editable" not in getattr(type(f), "__module__", "")]
sys.path.insert(0, {root!r})
"""


def collect() -> dict[str, str]:
    """Outcome of every case with the loopexp this interpreter imports."""
    sys.path.append(str(ROOT))  # after the version under test, which may come first
    import loopexp  # noqa: PLC0415
    from loopexp.design.spec import load_spec  # noqa: PLC0415
    from tests import hardening_cases as hc  # noqa: PLC0415
    from tests.test_hardening_spec import SPEC_CASES  # noqa: PLC0415

    print(f"loopexp from {loopexp.__file__}", file=sys.stderr)
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(hc.CASES):
            folder = Path(tmp) / f"e{i}"
            folder.mkdir()
            out[case.id] = hc.summary(case, folder)
        for case_id, _, content, _ in SPEC_CASES:
            path = Path(tmp) / f"{case_id}.yaml"
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
            try:
                spec = load_spec(path)
            except Exception as exc:
                kind = type(exc).__name__
                if kind != "SpecError":
                    kind = f"raw {type(exc).__module__}.{kind}"
                problems = getattr(exc, "problems", None) or [str(exc)]
                out[f"spec-{case_id}"] = f"{kind}: {' '.join(problems[0].split())[:110]}"
            else:
                out[f"spec-{case_id}"] = f"accepted (name {spec.name[:30]!r}…)"
    return out


def run_version(env_root: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if env_root is not None:
        site = env_root / "_site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(root=str(env_root)))
        env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, __file__, "--collect"],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=True,
    )
    sys.stderr.write(result.stderr[-300:])
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="c9547a3", help="git revision of the 'before' code")
    parser.add_argument("--collect", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.collect:
        print(json.dumps(collect()))
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.before, "loopexp", "notebooks"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        before = run_version(Path(tmp))
    after = run_version(None)

    sys.path.insert(0, str(ROOT))
    from tests import hardening_cases as hc  # noqa: PLC0415
    from tests.test_hardening_spec import SPEC_CASES  # noqa: PLC0415

    what = {c.id: c.what for c in hc.CASES} | {f"spec-{c[0]}": c[1] for c in SPEC_CASES}
    print(f"| # | case | input | before ({args.before}) | after |")
    print("|---|---|---|---|---|")
    for i, (case_id, text) in enumerate(what.items(), 1):
        cells = [before.get(case_id, "?"), after.get(case_id, "?")]
        cells = [c.replace("|", "\\|") for c in cells]
        print(f"| {i} | `{case_id}` | {text.replace('|', '/')} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()

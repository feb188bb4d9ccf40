"""The README's command lines run as written (in a copy of the repository's folders)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.design.spec import load_spec
from loopexp.sim.simulate import make_recipients
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _bash_blocks(after_heading: str | None = None) -> list[str]:
    text = README
    if after_heading:
        text = text[text.index(after_heading) :]
        text = text[: text.index("\n## ", 1)] if "\n## " in text[1:] else text
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[str]:
    """Logical lines of a bash block: continuations joined, comments and blanks dropped."""
    joined = block.replace("\\\n", " ")
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_every_loopexp_command_and_option_in_the_readme_exists() -> None:
    runner = CliRunner()
    found = 0
    for block in _bash_blocks():
        for line in _commands(block):
            for match in re.finditer(r"loopexp (\w+)((?: +[^|;&>]+?)?)(?=$|[|;&>])", line):
                command, rest = match.group(1), match.group(2)
                if command == "--help":
                    continue
                help_text = runner.invoke(app, [command, "--help"], terminal_width=200)
                assert help_text.exit_code == 0, f"README: `loopexp {command}` is no command"
                words = rest.split()  # a command group (`loopexp server init`): its subcommand
                if (
                    words
                    and re.fullmatch(r"[a-z][a-z-]*", words[0])
                    and "Commands" in help_text.output
                ):
                    sub = [command, words[0], "--help"]
                    help_text = runner.invoke(app, sub, terminal_width=200)
                    assert help_text.exit_code == 0, f"README: no `loopexp {command} {words[0]}`"
                for option in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", rest):
                    assert option in help_text.output, f"README: loopexp {command} has no {option}"
                found += 1
    assert found >= 8


@pytest.mark.integration
def test_readme_command_lines_run_as_written(tmp_path: Path) -> None:
    (block,) = _bash_blocks("## The command line")[:1]
    commands = _commands(block)
    assert len(commands) >= 6
    for folder in ("experiments", "notebooks"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__py*"))
    make_recipients(3000, seed=1)[["recipient_key", "segment"]].to_csv(
        tmp_path / "recipients.csv", index=False
    )
    bin_dir = Path(sys.executable).parent  # the venv: as with `source .venv/bin/activate`
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        if command.startswith("loopexp demo"):
            continue  # the demo runs, from an installed wheel, in tests/test_packaging.py
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        # `loopexp run` exits 3 for a complete run that decided "keep testing" (README: exit codes).
        ok = (0, 3) if command.startswith("loopexp run") else (0,)
        assert done.returncode in ok, f"README line failed: {command}\n{done.stdout}{done.stderr}"
    assert load_spec(tmp_path / "experiments" / "autumn-sale.yaml").test_type == "content"
    assert sorted(p.name for p in (tmp_path / "sends" / "send_lists").glob("*.csv")) == [
        "control.csv",
        "personal.csv",
        "urgency.csv",
    ]
    assert (tmp_path / "sends" / "assignment_summary.json").is_file()
    assert (tmp_path / "runs" / "papermill" / "results.json").is_file()
    assert load_spec(tmp_path / "experiments" / "spring-newsletter-iter2.yaml").iteration == 2

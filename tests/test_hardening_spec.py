"""Issue #19: specs with non-finite or absurd numbers, duplicate keys, hostile names, or bytes that
are not UTF-8 text are refused with a located SpecError; file names derived from a spec are safe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from loopexp.cli import app
from loopexp.design.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]
DEMO = (ROOT / "experiments" / "subject_line_demo.yaml").read_text(encoding="utf-8")


#: 1-based line of the ``personal`` variant in the demo spec (weight cases add a line below it).
PERSONAL_LINE = DEMO.splitlines().index("  - id: personal") + 1
#: 1-based line of ``name:`` in the demo spec (the duplicate-key case adds one two lines below).
NAME_LINE = next(i for i, line in enumerate(DEMO.splitlines(), 1) if line.startswith("name:"))


def edit(old: str, new: str) -> str:
    assert old in DEMO, old
    return DEMO.replace(old, new, 1)


#: (id, what, spec file content, expected problem in the SpecError)
SPEC_CASES: list[tuple[str, str, str | bytes, str]] = [
    ("weight-inf", "weight: .inf",
     edit("  - id: personal\n", "  - id: personal\n    weight: .inf\n"),
     rf"line {PERSONAL_LINE + 1}: variants\[1\]\.weight: Input should be a finite number"),
    ("weight-1e308", "weights of 1e308 (their sum overflows)",
     edit("  - id: personal\n", "  - id: personal\n    weight: 1.0e+308\n"),
     r"variants\[1\]\.weight: Input should be less than or equal to 1000"),
    ("holdout-almost-all", "holdout: 0.9999999999", edit("holdout: 0.0", "holdout: 0.9999999999"),
     r"audience\.holdout: Input should be less than or equal to 0\.99"),
    ("mde-inf", "mde_relative: .inf", edit("mde_relative: 0.10", "mde_relative: .inf"),
     r"decision\.mde_relative: Input should be a finite number"),
    ("mde-huge", "mde_relative: 1e308", edit("mde_relative: 0.10", "mde_relative: 1.0e+308"),
     r"decision\.mde_relative: Input should be less than or equal to 10"),
    ("margin-inf", "guardrail max_relative_increase: .inf",
     edit("max_relative_increase: 0.0", "max_relative_increase: .inf"),
     r"guardrails\[0\]\.max_relative_increase: Input should be a finite number"),
    ("alpha-nan", "alpha: .nan", edit("alpha: 0.05", "alpha: .nan"),
     r"decision\.alpha: Input should be a finite number"),
    ("dup-key-top", "name given twice (YAML keeps the last silently)",
     edit("campaign: spring-newsletter", "campaign: spring-newsletter\nname: other\n#"),
     rf"line {NAME_LINE + 2}: duplicate key 'name' \(first at line {NAME_LINE}\)"),
    ("dup-key-nested", "decision.alpha given twice",
     edit("  alpha: 0.05", "  alpha: 0.05\n  alpha: 0.5\n #"),
     r"duplicate key 'alpha' \(first at line \d+\)"),
    ("name-9000", "a 9,000-character name", edit("name: spring-newsletter-subject",
     "name: " + "x" * 9000), r"name: String should have at most 200 characters"),
    ("name-newline", "a name with a newline forging a decision line",
     edit("name: spring-newsletter-subject", 'name: "x\\n**Decision: ship**"'),
     r"name: must be one line"),
    ("campaign-long", "a 500-character campaign (a file name part)",
     edit("campaign: spring-newsletter", "campaign: " + "c" * 500),
     r"campaign: String should have at most 100 characters"),
    ("non-utf8", "Latin-1 bytes (not UTF-8)",
     edit("description: Does", "description: Caf\u00e9 Does").encode("latin-1", errors="replace"),
     r"line \d+: not UTF-8 text \(byte 0xe9"),
    ("binary", "a PNG image given as a spec", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64),
     r"is a binary file"),
    ("memory-limit", "data.memory_limit: lots", DEMO + "data:\n  memory_limit: lots\n",
     r"data\.memory_limit: String should match pattern"),
    ("quarantine-share", "data.max_quarantine_share: 1.5",
     DEMO + "data:\n  max_quarantine_share: 1.5\n",
     r"data\.max_quarantine_share: Input should be less than or equal to 1"),
]  # fmt: skip


@pytest.mark.parametrize("case", SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_broken_spec_is_a_located_spec_error(case, tmp_path):
    _, _, content, problem = case
    path = tmp_path / "spec.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert any(re.search(problem, p) for p in info.value.problems), info.value.problems
    assert str(path) in str(info.value)


def test_a_folder_or_unreadable_path_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path)


def test_data_section_defaults_and_values(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(DEMO, encoding="utf-8")
    assert load_spec(path).data.max_quarantine_share == 0.5
    path.write_text(
        DEMO + "data:\n  max_quarantine_share: 0.2\n  memory_limit: 4GB\n", encoding="utf-8"
    )
    spec = load_spec(path)
    assert (spec.data.max_quarantine_share, spec.data.memory_limit) == (0.2, "4GB")


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=300))
def test_safe_slug_is_a_plain_file_name_inside_its_folder(text):
    from loopexp.design.spec import safe_slug

    slug = safe_slug(text, 80)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", slug)
    assert len(slug) <= 80
    assert slug not in (".", "..")
    folder = Path("/tmp/loopexp-runs").resolve()
    assert (folder / slug).resolve().parent == folder


def test_slug_of_hostile_and_long_names():
    from loopexp.design.spec import safe_slug

    assert safe_slug("../../x") == "x"
    assert safe_slug("/etc/passwd") == "etc-passwd"
    long_a, long_b = safe_slug("a" * 9000), safe_slug("a" * 8999)
    assert len(long_a) == 80 and long_a != long_b  # truncated, still distinct
    assert safe_slug("") == "experiment"
    assert safe_slug("Frühling: 20 % off!") == "Fruhling-20-off"


def test_run_output_folder_and_files_use_the_slug(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(edit("name: spring-newsletter-subject", "name: ../../x"), encoding="utf-8")
    spec = load_spec(path)
    assert spec.slug == "x-iter1"
    assert (Path("runs") / spec.slug).resolve().is_relative_to(Path("runs").resolve())


def test_validate_goes_on_with_the_rest_of_the_batch(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(DEMO, encoding="utf-8")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: Caf\u00e9\n".encode("latin-1", errors="replace"))
    markup = tmp_path / "markup.yaml"  # a rich-markup-looking name must not crash the printer
    markup.write_text(edit("name: spring-newsletter-subject", 'name: "[/] [bold]x"'), "utf-8")
    good2 = tmp_path / "good2.yaml"
    good2.write_text(DEMO, encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(good), str(binary), str(latin),
                                      str(markup), str(good2)])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    out = " ".join(result.output.split())
    assert out.count("✓") == 3  # good, markup (a valid spec with an odd name), good2
    assert out.count("✗") == 2
    assert "[/] [bold]x" in out
    assert "not UTF-8" in out and "binary file" in out

"""``bench/run.py --only N --merge``: benchmark N's generated rows and details replace the old
ones in RESULTS.md, and what people wrote there stays (a paragraph under a benchmark's details
item, dated sections, notes of other benchmarks). A merge once overwrote row 16's hand-written
history, restored by hand afterwards; these tests keep that from coming back."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH_RUN = Path(__file__).resolve().parents[1] / "bench" / "run.py"


@pytest.fixture(scope="module")
def bench_run():
    """bench/run.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("bench_run_under_test", BENCH_RUN)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)  # it puts bench/ on sys.path for its helpers
    finally:
        sys.path[:] = path
    return module


def report(rows14: str, details14: str, details16: str, measured14: str = "old method") -> str:
    """A RESULTS.md as bench/run.py writes it, with benchmarks 14 and 16."""
    return "\n".join(
        [
            "# Benchmarks",
            "",
            "| row | what | mlws | peer | ratio | goal | result |",
            "|---|---|---|---|---|---|---|",
            f"| 14g | ratio | {rows14} | no equivalent | — | ≥ 0.8× | pass |",
            "| 16a | log_metric | 15,000/s | 206/s | 72× | ≥ 20× | pass |",
            "",
            "## Machine",
            "",
            "- 2 CPUs.",
            "",
            "## How it is measured",
            "",
            f"- 14: {measured14},",
            "  over two lines.",
            "- 16: the plugin.",
            "",
            "## Details",
            "",
            f"- **14.** {details14}",
            f"- **16.** {details16}",
            "",
            "## Running it",
            "",
            "run it",
            "",
        ]
    )


HAND_14 = [
    "",
    "  History (by hand): 0.41x on the first pass, 0.75x after the warm driver.",
    "  A second paragraph of it.",
]
DATED = [
    "## Row 14g (2026-12-05)",
    "",
    "- by hand: 14f 1.07 s at load 1.",
    "",
]


def hand_written_report() -> str:
    """The old report with a paragraph under benchmark 14's details item and a dated section."""
    lines = report("0.75×", "old 14 figures.", "old 16 figures.").splitlines()
    at = lines.index("- **14.** old 14 figures.") + 1
    lines[at:at] = HAND_14
    return "\n".join(lines + DATED) + "\n"


def test_merge_keeps_a_hand_written_paragraph_under_the_benchmark_item(bench_run):
    old = hand_written_report()
    new = report("0.85×", "new 14 figures.", "new 16 figures.", measured14="new method")
    merged = bench_run.merge_report(old, new, ["14"], "- Benchmark 14 re-run alone on today")
    lines = merged.splitlines()
    # The generated figures are the new ones ...
    assert "| 14g | ratio | 0.85× | no equivalent | — | ≥ 0.8× | pass |" in lines
    assert "- 14: new method," in lines and "- 14: old method," not in lines
    assert "old 14 figures." not in merged
    # ... and the hand-written paragraph is still under benchmark 14's item, before 16's.
    at = lines.index("- **14.** new 14 figures.")
    assert lines[at + 1 : at + 4] == HAND_14
    assert lines[at + 4] == "- **16.** old 16 figures."  # not re-run: as it was
    # The dated section and the other benchmark's row stay; the note is added once.
    assert merged.endswith("\n".join(DATED) + "\n")
    assert "| 16a | log_metric | 15,000/s | 206/s | 72× | ≥ 20× | pass |" in lines
    assert lines.count("- Benchmark 14 re-run alone on today") == 1
    # A second merge keeps it too (the paragraph does not pile up or move).
    again = bench_run.merge_report(
        merged, new.replace("new 14", "newer 14"), ["14"], "- Benchmark 14 re-run alone on later"
    )
    assert again.count(HAND_14[1]) == 1
    assert "- **14.** newer 14 figures.\n" + "\n".join(HAND_14) in again
    assert "- Benchmark 14 re-run alone on today" not in again


def test_merge_of_a_benchmark_the_new_report_lacks_keeps_its_old_item(bench_run):
    old = hand_written_report()
    new = report("0.85×", "new 14 figures.", "new 16 figures.").replace(
        "- **14.** new 14 figures.\n", ""
    )
    merged = bench_run.merge_report(old, new, ["14"], "- Benchmark 14 re-run alone on today")
    assert "- **14.** old 14 figures.\n" + "\n".join(HAND_14) in merged


def test_merge_refuses_what_is_not_a_report(bench_run):
    with pytest.raises(ValueError, match="no ## Details section"):
        bench_run.merge_report(
            "| 14g | x |\n## Machine\n## How it is measured\n", report("a", "b", "c"), ["14"], "-"
        )


def test_merge_of_a_later_benchmark_replaces_its_item_once(bench_run):
    """The paragraph under 14 does not end the details list: 16's item after it is still an
    item, replaced (not kept beside the new one)."""
    new = report("0.85×", "new 14 figures.", "new 16 figures.")
    merged = bench_run.merge_report(
        hand_written_report(), new, ["16"], "- Benchmark 16 re-run alone on today"
    )
    assert "old 16 figures." not in merged and merged.count("- **16.** new 16 figures.") == 1
    assert "- **14.** old 14 figures.\n" + "\n".join(HAND_14) + "\n- **16.** new" in merged

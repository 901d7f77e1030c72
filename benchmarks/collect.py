"""Assemble benchmarks/RESULTS.md from the result files the benchmark scripts wrote.

    python benchmarks/collect.py
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["accuracy", "lm", "conflict", "tile", "search_faithful", "search", "search_groups",
         "search_swn", "search_settings", "search_families", "speed", "forms", "generate",
         "memory", "compile", "ensemble", "distill", "digits", "gpu"]
HEADER = """# ssnfx benchmark results

Every table below was produced by the command above it, on the machine, versions and date it
names (this project's CI-sized machine: 2 CPU cores, no GPU). Re-run a script to refresh its
section, then `python benchmarks/collect.py`. Findings are stated with their figures, including
where ssnfx does not win.
"""


def main() -> None:
    parts = [HEADER]
    notes = HERE / "NOTES.md"
    if notes.exists():
        parts.append(notes.read_text())
    for name in ORDER:
        path = HERE / "results" / f"{name}.md"
        if path.exists():
            parts.append(path.read_text())
    (HERE / "RESULTS.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()

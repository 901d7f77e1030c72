"""The results at a glance, from the committed benchmark output: one table and one picture for
the README and the docs, and the docs' benchmark page.

    python benchmarks/collect.py && python benchmarks/summary.py   # after any benchmark run
    python benchmarks/summary.py --check                             # what the tests run

Nothing here is typed by hand: every figure is read from a table in ``benchmarks/results/*.md``
(each written by its benchmark script, with the machine, versions and date it ran on), so the
README and the docs say what the benchmarks measured. ``--check`` fails where the README or the
docs no longer match those files.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
#: The picture, and the docs' copies of the benchmark pictures that RESULTS.md shows.
PICTURE = DOCS / "assets" / "accuracy_budget.png"
COPIES = DOCS / "assets" / "benchmarks"
#: The README's generated part lies between these lines.
BEGIN = "<!-- results: written by benchmarks/summary.py from benchmarks/results/; do not edit -->"
END = "<!-- /results -->"
#: The budgets of the table's rows (accuracy at the first three; costs where measured).
BUDGETS = ("1%", "5%", "10%", "100%")
#: The benchmark rows behind the accuracy columns: label -> the row's model name in accuracy.md.
SSN, SWN, REDUCED = "SSN WAvg, one group", "SWN, one cluster", \
    "reduced, interpolated at equal parameters"


@dataclass
class Table:
    """A Markdown table of a results file, and where it is: the text above it."""

    header: list[str]
    rows: list[dict[str, str]]
    above: str

    def cell(self, column: str, **where: str) -> str:
        """The ``column`` of the one row whose cells match ``where`` (a value ending in ``*``
        matches that prefix followed by nothing or by `` (...)``)."""
        found = [r for r in self.rows if all(_matches(r.get(k.replace("_", " "), ""), v)
                                             for k, v in where.items())]
        if len(found) != 1:
            raise SystemExit(f"summary: {len(found)} rows match {where} in the table under "
                             f"{self.above.strip().splitlines()[-1][:80]!r}; the benchmark's "
                             f"table changed: update benchmarks/summary.py")
        return found[0][column]


def _matches(value: str, wanted: str) -> bool:
    if wanted.endswith("*"):
        head = wanted[:-1]
        return value == head or value.startswith(head + " (")
    return value == wanted


def tables(text: str) -> list[Table]:
    """Every Markdown table in ``text``, each with all the text above it."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: "):
            header = _cells(lines[i])
            j = i + 2
            rows = []
            while j < len(lines) and lines[j].startswith("|"):
                rows.append(dict(zip(header, _cells(lines[j]))))
                j += 1
            out.append(Table(header, rows, "\n".join(lines[:i])))
            i = j
        else:
            i += 1
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def provenance(above: str) -> tuple[str, str]:
    """The machine and the date that the text above a table names last: the date of its
    section's heading or command line (prose may cite older dates)."""
    machines = re.findall(r"([A-Z][\w ]*?), (\d+) cores", above)
    dated = [line for line in above.splitlines() if line.startswith(("#", "`python"))]
    dates = re.findall(r"\d{4}-\d{2}-\d{2}", "\n".join(dated))
    if not machines or not dates:
        raise SystemExit("summary: a table without its machine and date above it")
    name, cores = machines[-1]
    return f"{name}, {cores} cores", dates[-1]


def _mean_std(text: str) -> tuple[float, float] | None:
    """``88.2 ± 0.2`` (or ``88.2``, or a seed note after it) as numbers; None for a refusal."""
    m = re.match(r"([\d.]+)(?: ± ([\d.]+))?", text)
    return (float(m.group(1)), float(m.group(2) or 0)) if m else None


def _table_under(text: str, marker: str) -> Table:
    """The first table after the line that contains ``marker``."""
    at = text.index(marker)
    return next(t for t in tables(text) if len(t.above) > at)


@dataclass
class Glance:
    """Everything the table, the picture and their notes say, read from the results files."""

    rows: list[list[str]]
    notes: dict[str, str]
    curves: dict[str, list[tuple[float, float, float]]]
    full: tuple[float, float]
    original: int
    title: str


def read_results() -> Glance:
    accuracy = (RESULTS / "accuracy.md").read_text()
    speed = (RESULTS / "speed.md").read_text()
    memory = (RESULTS / "memory.md").read_text()
    acc = tables(accuracy)[0]
    width, original = re.search(r"ResNetFM\(width=(\d+)\), ([\d,]+) parameters", accuracy).groups()
    full = re.search(r"full model ([\d.]+ ± [\d.]+|[\d.]+)% test accuracy", accuracy).group(1)
    seeds = int(re.search(r"(\d+) seed\(s\), (\d+) epoch", accuracy).group(1))
    epochs = int(re.search(r"(\d+) epoch\(s\)", accuracy).group(1))
    step = _table_under(speed, "### Under the defaults of")
    mem, checkpoint = tables(memory)[:2]

    rows = []
    for budget in BUDGETS:
        if budget in ("1%", "5%", "10%"):
            cells = [acc.cell("test accuracy %", budget=budget, model=label + "*")
                     for label in (SSN, SWN, REDUCED)]
            cells = [c if _mean_std(c) else "refused" for c in cells]
            best = max((_mean_std(c)[0] for c in cells if _mean_std(c)), default=None)
            cells = [f"**{c}**" if _mean_std(c) and _mean_std(c)[0] == best else c for c in cells]
            cells.append(full)
        else:
            cells = ["", "", "", ""]
        cost = [_get(lambda: step.cell("step vs unshared", model="vit_b_16, batch 2",
                                       budget=budget)),
                _get(lambda: " / ".join(mem.cell("peak vs unshared", model="vit_l_16",
                                                 allocator="default", budget=budget,
                                                 generation=g) + "x"
                                        for g in ("auto", "batched"))),
                _get(lambda: checkpoint.cell("vs unshared", model="vit_b_16",
                                             file=f"ssnfx.save at {budget}") + "x")]
        rows.append([budget, *cells, *cost])

    machine, date = provenance(acc.above)
    step_machine, step_date = provenance(step.above)
    mem_machine, mem_date = provenance(mem.above)
    notes = {
        "accuracy": f"Fashion-MNIST test accuracy %, ResNetFM({width}) of {original} "
                    f"parameters, {epochs} epochs, seeds {_seeds(seeds)} (mean ± std); "
                    f"{machine}, {date}",
        "speed": f"vit_b_16, batch 2, an Adam step against the unshared model's, the default "
                 f"generation and grouping (large weights just in time; depth bins at 100%), "
                 f"glibc's default allocator; {step_machine}, {step_date}",
        "memory": f"vit_l_16, batch 2, the peak RSS of an Adam step against the unshared "
                  f"model's, the default generation (large weights just in time) / batched; "
                  f"{mem_machine}, {mem_date}",
        "checkpoint": f"vit_b_16's ssnfx.save file against its unshared state_dict; "
                      f"{mem_machine}, {mem_date}",
    }
    curves: dict[str, list[tuple[float, float, float]]] = {
        "reduced width": [], "SSN (WAvg), one group": [], "SWN, one cluster": []}
    total = int(original.replace(",", ""))
    for row in acc.rows:
        value = _mean_std(row["test accuracy %"])
        if value is None or row["parameters"] == "-":
            continue
        fraction = int(row["parameters"].replace(",", "")) / total
        model = row["model"]
        label = ("reduced width" if model.startswith(("reduced baseline", "reduced, one"))
                 else "SSN (WAvg), one group" if _matches(model, SSN + "*")
                 else "SWN, one cluster" if _matches(model, SWN + "*") else None)
        if label:
            curves[label].append((fraction, *value))
    return Glance(rows, notes, {k: _merged(v) for k, v in curves.items()},
                  _mean_std(full), total,
                  f"Fashion-MNIST, ResNetFM({width}) ({original} parameters): "
                  f"accuracy at a budget")


def _merged(points: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """One point per parameter count (a width that is two budgets' baseline ran twice): the
    mean of their means, the larger spread."""
    by: dict[float, list[tuple[float, float, float]]] = {}
    for p in points:
        by.setdefault(p[0], []).append(p)
    return [(x, sum(p[1] for p in ps) / len(ps), max(p[2] for p in ps))
            for x, ps in sorted(by.items())]


def _get(read: Callable[[], str]) -> str:
    """A cell the benchmark did not measure (no such row) is '-'."""
    try:
        return read()
    except SystemExit:
        return "-"


def _seeds(n: int) -> str:
    return "0" if n == 1 else f"0-{n - 1}"


def markdown(g: Glance, link: Callable[[str, str], str], picture: str) -> str:
    """The table, its notes and the picture, with ``link(text, path)`` for the sources."""
    lines = ["| budget | SSN (WAvg), one group | SWN, one cluster | reduced width, equal "
             "parameters | full model | train step | peak memory | checkpoint |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(row) + " |" for row in g.rows]
    lines += [
        "",
        f"Accuracy: {g.notes['accuracy']} "
        f"({link('bench_accuracy.py', 'benchmarks/bench_accuracy.py')}; the table predates "
        f"linear coefficients, SSN's default since, which measured better). Train step: "
        f"{g.notes['speed']} ({link('bench_speed.py', 'benchmarks/bench_speed.py')}). "
        f"Peak memory: {g.notes['memory']}. Checkpoint: {g.notes['checkpoint']} "
        f"({link('bench_memory.py', 'benchmarks/bench_memory.py')}).",
        "",
        f"![accuracy against budget: ssnfx, the reduced-width network and the full model]"
        f"({picture})"]
    return "\n".join(lines)


def plot(g: Glance, path: Path) -> None:
    """Accuracy against the budget: ssnfx, the reduced-width network, the full model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    style = {"reduced width": ("--", "s", "tab:gray"),
             "SSN (WAvg), one group": ("-", "o", "tab:blue"),
             "SWN, one cluster": ("-", "^", "tab:orange")}
    for label, points in g.curves.items():
        x, y, e = zip(*points)
        line, marker, colour = style[label]
        ax.errorbar(x, y, yerr=e, linestyle=line, marker=marker, color=colour, capsize=3,
                    label=label)
    ax.errorbar([1.0], [g.full[0]], yerr=[g.full[1]], marker="*", markersize=10,
                color="black", linestyle="none", label="full model")
    ax.axhline(g.full[0], color="black", linewidth=0.8, alpha=0.4)
    ax.set_xscale("log")
    ax.set_xticks([0.005, 0.01, 0.05, 0.1, 0.25, 1.0])
    ax.set_xticklabels(["0.5%", "1%", "5%", "10%", "25%", "100%"])
    ax.set_xlabel("trainable parameters, fraction of the full model's")
    ax.set_ylabel("test accuracy %")
    ax.set_title(g.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.text(0.01, 0.01, g.notes["accuracy"], fontsize=6.5, color="#555555")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def readme_text(g: Glance) -> str:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"summary: README.md lacks the lines {BEGIN!r} and {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = markdown(g, lambda t, p: f"[{t}]({p})", "docs/assets/accuracy_budget.png")
    return f"{head}{BEGIN}\n{body}\n{END}{tail}"


def results_page(g: Glance) -> str:
    """docs/results.md: the table and picture, then every table of benchmarks/RESULTS.md."""
    full = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    body = full.split("\n", 1)[1]  # without its title
    body = re.sub(r"\]\(results/([\w.-]+\.png)\)", r"](assets/benchmarks/\1)", body)
    body = re.sub(r"^(#{2,5}) ", r"#\1 ", body, flags=re.M)  # its sections under "Every table"
    glance = markdown(g, lambda t, p: f"`{p}`", "assets/accuracy_budget.png")
    return (f"# Benchmark results\n\n<!-- written by benchmarks/summary.py from "
            f"benchmarks/RESULTS.md; do not edit -->\n\n## At a glance\n\n{glance}\n\n"
            f"## Every table\n{body}")


def pictures() -> list[str]:
    return re.findall(r"\]\(results/([\w.-]+\.png)\)",
                      (ROOT / "benchmarks" / "RESULTS.md").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing: fail if the README or docs/results.md is stale")
    args = parser.parse_args(argv)
    g = read_results()
    wanted = {README: readme_text(g), DOCS / "results.md": results_page(g)}
    if args.check:
        stale = [str(p.relative_to(ROOT)) for p, text in wanted.items()
                 if not p.exists() or p.read_text() != text]
        stale += [f"docs/assets/benchmarks/{name}" for name in pictures()
                  if not (COPIES / name).exists()
                  or (COPIES / name).read_bytes() != (RESULTS / name).read_bytes()]
        stale += [] if PICTURE.exists() else [str(PICTURE.relative_to(ROOT))]
        if stale:
            print(f"stale: {', '.join(stale)}; run python benchmarks/summary.py",
                  file=sys.stderr)
            return 1
        return 0
    for path, text in wanted.items():
        path.write_text(text)
    COPIES.mkdir(parents=True, exist_ok=True)
    for name in pictures():
        shutil.copyfile(RESULTS / name, COPIES / name)
    plot(g, PICTURE)
    print(f"wrote README.md's results, docs/results.md, {PICTURE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

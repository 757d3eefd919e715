"""The report's tables, as aligned text (the terminal) and as markdown (report.md): systems, comparisons, sweeps."""
from __future__ import annotations

from collections.abc import Sequence

from distill_ret import significance
from distill_ret.report import collect, compare


def _cell(system: collect.SystemResult, measure: str) -> str:
    if measure not in system.mean:
        return "-"
    if measure in system.spread:
        return f"{system.mean[measure]:.4f} ± {system.spread[measure]:.4f}"
    return f"{system.mean[measure]:.4f}"


def _rows(systems: Sequence[collect.SystemResult], measures: Sequence[str]) -> list[list[str]]:
    return [[system.label, str(len(system.seeds)), *(_cell(system, name) for name in measures)] for system in systems]


def _aligned(header: list[str], body: list[list[str]]) -> str:
    """An aligned text table: the first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(line[column]) for line in [header, *body]) for column in range(len(header))]

    def render(cells: list[str]) -> str:
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(rest, widths[1:]))])

    return "\n".join([render(header), "-" * len(render(header)), *map(render, body)])


def _markdown_grid(header: list[str], body: list[list[str]]) -> str:
    """A markdown table: the first column left-aligned, the others right-aligned; `|` in cells escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", *("---:" for _ in header[1:])]) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def format_table(systems: Sequence[collect.SystemResult], measures: Sequence[str]) -> str:
    """The aligned text table: system, seeds, then each measure (mean ± spread, four decimals)."""
    return _aligned(["system", "seeds", *measures], _rows(systems, measures))


def markdown_table(systems: Sequence[collect.SystemResult], measures: Sequence[str]) -> str:
    return _markdown_grid(["system", "seeds", *measures], _rows(systems, measures))


def _difference_cell(difference: significance.PairedDifference | None) -> str:
    """`+0.0053 ± 0.0083 (2/3) p=0.21`: mean difference ± spread, (pairs won / pairs), randomization p-value."""
    if difference is None:
        return "-"
    cell = f"{difference.mean:+.4f}"
    if difference.spread is not None:
        cell += f" ± {difference.spread:.4f}"
    cell += f" ({difference.wins}/{len(difference.pairs)})"
    if difference.p_value is not None:
        cell += f" p={difference.p_value:.2g}"
    return cell


def _comparison_rows(comparisons: Sequence[compare.Comparison], measures: Sequence[str]) -> list[list[str]]:
    return [[item.label, str(len(next(iter(item.differences.values())).pairs)) if item.differences else "0",
             *(_difference_cell(item.differences.get(name)) for name in measures)] for item in comparisons]


def format_comparisons(comparisons: Sequence[compare.Comparison], measures: Sequence[str]) -> str:
    """The aligned text table of the comparisons: system, pairs, then per measure `_difference_cell`."""
    return _aligned(["system", "pairs", *measures], _comparison_rows(comparisons, measures))


def comparisons_markdown(comparisons: Sequence[compare.Comparison], measures: Sequence[str]) -> str:
    return _markdown_grid(["system", "pairs", *measures], _comparison_rows(comparisons, measures))


def sweep_table(sweep: collect.Sweep, measures: Sequence[str]) -> str:
    """Markdown: one row per value of the swept setting (mean ± spread over seeds)."""
    lines = ["| " + " | ".join([sweep.setting, "seeds", *measures]) + " |",
             "|" + "|".join(["---:", "---:", *("---:" for _ in measures)]) + "|"]
    lines += ["| " + " | ".join([value, str(len(system.seeds)), *(_cell(system, name) for name in measures)]) + " |"
              for value, system in zip(sweep.values, sweep.systems)]
    return "\n".join(lines)

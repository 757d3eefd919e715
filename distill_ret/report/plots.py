"""The report's PNG plots (matplotlib's object API, no display needed): grouped bars per measure, training curves,
sweeps, and the score margins of FGD's Figure 4."""
from __future__ import annotations

import io
import math
import statistics
from collections.abc import Sequence

from matplotlib.figure import Figure

from distill_ret.report import collect


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def metrics_plot(systems: Sequence[collect.SystemResult], measures: Sequence[str]) -> bytes:
    """Grouped bars: one group per measure, one bar per system (its mean), error bars = spread over seeds."""
    width = 0.8 / len(systems)
    figure = Figure(figsize=(max(6.0, 3.0 + len(measures) * (0.4 + 0.25 * len(systems))), 4.5))
    axes = figure.add_subplot()
    for index, system in enumerate(systems):
        positions = [m + (index - (len(systems) - 1) / 2) * width for m in range(len(measures))]
        heights = [system.mean.get(name, math.nan) for name in measures]
        errors = [system.spread.get(name, 0.0) for name in measures]
        axes.bar(positions, heights, width, yerr=errors, capsize=2, label=system.label)
    axes.set_xticks(range(len(measures)), measures)
    axes.set_ylabel("value (mean over seeds)")
    axes.legend(fontsize="small", ncols=max(1, len(systems) // 8), loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def curves_plot(run: collect.TrainingRun) -> bytes:
    """The losses (train, and evaluators' `<name>/loss`; left) and the other evaluator measures (right) by step."""
    figure = Figure(figsize=(10.0, 4.0))
    loss_axes, eval_axes = figure.subplots(1, 2)
    losses = [name for name in run.curves if name.endswith("loss")]
    for axes, names, title in ((loss_axes, losses, "loss"),
                               (eval_axes, [name for name in run.curves if name not in losses], "evaluation")):
        for name in names:
            steps, values = zip(*run.curves[name])
            axes.plot(steps, values, marker="." if len(steps) < 50 else None, label=name)
        axes.set_title(f"{run.name}: {title}")
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize="small")
    figure.tight_layout()
    return _png(figure)


def sweep_plot(sweep: collect.Sweep, measures: Sequence[str]) -> bytes:
    """Every measure against the swept value: lines over numeric values, grouped bars over named ones; error bars
    = spread over seeds."""
    figure = Figure(figsize=(6.5, 4.0))
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(measures))
    for index, name in enumerate(measures):
        heights = [system.mean.get(name, math.nan) for system in sweep.systems]
        errors = [system.spread.get(name, 0.0) for system in sweep.systems]
        if sweep.numeric:
            axes.errorbar([float(value) for value in sweep.values], heights, yerr=errors, marker="o", capsize=3,
                          label=name)
        else:
            positions = [v + (index - (len(measures) - 1) / 2) * width for v in range(len(sweep.values))]
            axes.bar(positions, heights, width, yerr=errors, capsize=2, label=name)
    if not sweep.numeric:
        axes.set_xticks(range(len(sweep.values)), sweep.values)
    axes.set_xlabel(sweep.setting)
    axes.set_ylabel("value (mean over seeds)")
    axes.set_title(sweep.key)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return _png(figure)


def margins_plot(margins: collect.Margins) -> bytes:
    """Histogram of s(q, d+) - s(q, d-), with zero and the mean marked."""
    figure = Figure(figsize=(6.0, 4.0))
    axes = figure.add_subplot()
    axes.hist(margins.values, bins=min(50, max(10, len(margins.values) // 5)), alpha=0.8, label=margins.system)
    axes.axvline(0.0, color="black", linewidth=1)
    mean = statistics.fmean(margins.values)
    axes.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.3f}")
    axes.set_xlabel("s(q, d+) − s(q, d−)")
    axes.set_ylabel("count")
    axes.set_title(f"score margins: {margins.system}")
    axes.legend(fontsize="small")
    figure.tight_layout()
    return _png(figure)

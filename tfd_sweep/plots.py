"""PNG plots of runs and sweeps: learning curves, heatmaps, metric against a swept key.

Every function draws on its own `matplotlib.figure.Figure` with the Agg canvas, so the
package never selects a global backend or touches pyplot state, and plotting works in
worker processes and without a display. Non-finite values (diverged or failed runs) are
drawn as gaps or marked cells instead of raising. Plot text stays in English because the
default matplotlib font has no Hangul glyphs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tfd_sweep import metrics

logger = logging.getLogger(__name__)

# Size of one panel in inches, and the resolution of every PNG.
PANEL_SIZE = (5.2, 4.0)
DPI = 100
# Lines drawn in one panel before the legend is dropped for readability.
MAX_LEGEND_ENTRIES = 16
# Colour of heatmap cells whose value is non-finite or missing.
BAD_CELL_COLOUR = "#b0b0b0"
# Swept keys whose values span decades and read best on a log axis.
LOG_SCALE_KEYS = ("eps",)


def _new_figure(n_panels: int, n_rows: int = 1, layout: str | None = None):
    """Return (figure, axes list) with `n_panels` panels drawn by the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_cols = math.ceil(n_panels / n_rows)
    figure = Figure(figsize=(PANEL_SIZE[0] * n_cols, PANEL_SIZE[1] * n_rows), dpi=DPI,
                    layout=layout)
    FigureCanvasAgg(figure)
    axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel().tolist()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return figure, axes[:n_panels]


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    logger.debug("wrote %s", path)
    return path


def _finite(values) -> np.ndarray:
    """Return `values` as float64 with +-inf replaced by NaN, so lines show gaps."""
    array = np.asarray(values, dtype=np.float64).copy()
    array[~np.isfinite(array)] = np.nan
    return array


def _set_ce_scale(axis, values: np.ndarray) -> None:
    """Use a log y axis when the finite, positive cross-entropies span more than 100x."""
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size and finite.max() / finite.min() > 100:
        axis.set_yscale("log")


def _mark_empty(axis, message: str = "no finite values") -> None:
    axis.text(0.5, 0.5, message, ha="center", va="center", transform=axis.transAxes)


def format_value(value) -> str:
    """Format a hyperparameter value for labels: 0.001, 0.9, 100, [16, 32]."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _label(keys: Sequence[str], values: Sequence) -> str:
    return ", ".join(f"{key}={format_value(value)}" for key, value in zip(keys, values))


# --- a single run -------------------------------------------------------------------------


def plot_curves(history, path, title: str) -> Path:
    """Plot one run's train and validation cross-entropy and accuracy per epoch.

    `history` is a DataFrame or a dict of arrays with the columns metrics.HISTORY_COLUMNS
    (epoch, train_ce, train_acc, valid_ce, valid_acc), one entry per finished epoch. Writes a
    PNG with two panels (cross-entropy, accuracy) to `path` and returns the path.
    """
    frame = pd.DataFrame({column: np.asarray(history[column]) for column in metrics.HISTORY_COLUMNS})
    epochs = frame["epoch"].to_numpy()
    figure, (ce_axis, acc_axis) = _new_figure(2)
    figure.suptitle(title)

    for axis, measure, name in ((ce_axis, "ce", "cross-entropy"), (acc_axis, "acc", "accuracy")):
        all_values = []
        for split, style in (("train", "-"), ("valid", "--")):
            values = _finite(frame[f"{split}_{measure}"])
            all_values.append(values)
            axis.plot(epochs, values, style, marker="." if len(epochs) < 30 else None, label=split)
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.set_title(f"{name} per epoch")
        axis.grid(True, alpha=0.3)
        if measure == "ce":
            _set_ce_scale(axis, np.concatenate(all_values) if all_values else np.array([]))
        if len(epochs) == 0 or not np.isfinite(np.concatenate(all_values)).any():
            _mark_empty(axis)
        else:
            axis.legend()
    return _save(figure, path)


# --- sweeps -------------------------------------------------------------------------------


def plot_heatmaps(
    results: pd.DataFrame,
    x_key: str,
    y_key: str,
    path,
    title: str,
    panel_key: str | None = None,
    metric: str = "valid_ce",
) -> Path:
    """Draw `metric` as heatmaps over `x_key` (columns) and `y_key` (rows).

    One panel per value of `panel_key` (or a single panel). Runs with the same cell are
    averaged (seed repeats). Cells without a finite value are grey and annotated with the
    reason (the run's status, "non-finite" or "not run"); all panels share one colour scale.
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    panel_values = _sorted_unique(results[panel_key]) if panel_key else [None]
    x_values = _sorted_unique(results[x_key])
    y_values = _sorted_unique(results[y_key])
    values = _finite(results[results["status"] == metrics.STATUS_OK][metric])
    finite = values[np.isfinite(values)]
    norm = Normalize(finite.min(), finite.max()) if finite.size else Normalize(0.0, 1.0)
    if finite.size and finite.min() == finite.max():
        norm = Normalize(finite.min() - 0.5, finite.max() + 0.5)
    colour_map = colormaps["viridis_r"].with_extremes(bad=BAD_CELL_COLOUR)

    n_rows = 1 if len(panel_values) <= 3 else math.ceil(len(panel_values) / 3)
    figure, axes = _new_figure(len(panel_values), n_rows=n_rows, layout="constrained")
    figure.suptitle(title)
    image = None
    for axis, panel_value in zip(axes, panel_values):
        rows = results if panel_key is None else results[_equals(results[panel_key], panel_value)]
        grid, notes = _heatmap_grid(rows, x_key, y_key, x_values, y_values, metric)
        image = axis.imshow(np.ma.masked_invalid(grid), cmap=colour_map, norm=norm, aspect="auto")
        for (i, j), note in np.ndenumerate(notes):
            colour = "black" if not np.isfinite(grid[i, j]) or norm(grid[i, j]) < 0.5 else "white"
            axis.text(j, i, note, ha="center", va="center", fontsize=8, color=colour)
        axis.set_xticks(range(len(x_values)), [format_value(v) for v in x_values])
        axis.set_yticks(range(len(y_values)), [format_value(v) for v in y_values])
        axis.set_xlabel(x_key)
        axis.set_ylabel(y_key)
        axis.set_title(metric if panel_key is None else f"{panel_key}={format_value(panel_value)}")
    figure.colorbar(image, ax=axes, label=metric, shrink=0.9)
    # The constrained layout makes room for the colorbar that all panels share.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _heatmap_grid(rows, x_key, y_key, x_values, y_values, metric):
    """Return (values, annotations), both of shape (len(y_values), len(x_values))."""
    grid = np.full((len(y_values), len(x_values)), np.nan)
    notes = np.full(grid.shape, "not run", dtype=object)
    for i, y_value in enumerate(y_values):
        for j, x_value in enumerate(x_values):
            cell = rows[_equals(rows[x_key], x_value) & _equals(rows[y_key], y_value)]
            if cell.empty:
                continue
            # Only ok runs give a colour: a diverged run may still have a finite valid_ce.
            ok = cell["status"] == metrics.STATUS_OK
            cell_values = _finite(cell[ok][metric])
            if np.isfinite(cell_values).any():
                grid[i, j] = np.nanmean(cell_values)
                notes[i, j] = f"{grid[i, j]:.3g}"
            else:
                statuses = [s for s in cell["status"].astype(str) if s != metrics.STATUS_OK]
                notes[i, j] = statuses[0] if statuses else "non-finite"
    return grid, notes


def plot_learning_curves(
    results: pd.DataFrame,
    history: pd.DataFrame,
    swept_keys: Sequence[str],
    path,
    title: str,
    panel_key: str | None = None,
) -> Path:
    """Plot validation (solid) and train (dashed) cross-entropy per epoch for every run.

    `history` is the long-format history (job_num, epoch, split, ce, acc). Each run has its
    own colour, labelled by its swept-key values; `panel_key` splits the runs into panels.
    """
    from matplotlib import colormaps

    label_keys = [key for key in swept_keys if key != panel_key]
    panel_values = _sorted_unique(results[panel_key]) if panel_key else [None]
    n_rows = 1 if len(panel_values) <= 3 else math.ceil(len(panel_values) / 3)
    figure, axes = _new_figure(len(panel_values), n_rows=n_rows)
    figure.suptitle(f"{title} (valid solid, train dashed)")
    for axis, panel_value in zip(axes, panel_values):
        rows = results if panel_key is None else results[_equals(results[panel_key], panel_value)]
        rows = rows.sort_values(label_keys) if label_keys else rows
        colours = colormaps["tab20" if len(rows) > 10 else "tab10"]
        drawn = []
        for index, (_, run) in enumerate(rows.iterrows()):
            run_history = history[history["job_num"] == run["job_num"]]
            colour = colours(index % colours.N)
            label = _label(label_keys, [run[key] for key in label_keys]) or f"run {run['job_num']}"
            for split, style in (("valid", "-"), ("train", "--")):
                split_rows = run_history[run_history["split"] == split].sort_values("epoch")
                values = _finite(split_rows["ce"])
                drawn.append(values)
                axis.plot(split_rows["epoch"], values, style, color=colour,
                          label=label if split == "valid" else None)
        axis.set_xlabel("epoch")
        axis.set_ylabel("cross-entropy")
        axis.set_title("all runs" if panel_key is None else f"{panel_key}={format_value(panel_value)}")
        axis.grid(True, alpha=0.3)
        all_values = np.concatenate(drawn) if drawn else np.array([])
        _set_ce_scale(axis, all_values)
        if not np.isfinite(all_values).any():
            _mark_empty(axis)
        elif len(rows) <= MAX_LEGEND_ENTRIES:
            axis.legend(fontsize=7)
    return _save(figure, path)


def plot_metric_vs_key(
    results: pd.DataFrame,
    key: str,
    path,
    title: str,
    group_keys: Sequence[str] = (),
) -> Path:
    """Plot final cross-entropy and accuracy against one swept key, in two panels.

    With no `group_keys` the panels show train, valid and test; otherwise one valid line per
    combination of `group_keys`. Repeats at the same point are averaged. `eps` uses a log x
    axis.
    """
    figure, (ce_axis, acc_axis) = _new_figure(2)
    figure.suptitle(title)
    group_keys = list(group_keys)
    groups = [((), results)] if not group_keys else list(results.groupby(group_keys, sort=True))
    splits = metrics.SPLITS if not group_keys else ("valid",)

    for axis, measure, name in ((ce_axis, "ce", "cross-entropy"), (acc_axis, "acc", "accuracy")):
        drawn = []
        for group_value, rows in groups:
            x_values = _sorted_unique(rows[key])
            for split in splits:
                column = f"{split}_{measure}"
                y_values = [_finite(rows[_equals(rows[key], x)][column]).mean() for x in x_values]
                drawn.extend(y_values)
                label = split if not group_keys else _label(
                    group_keys, group_value if isinstance(group_value, tuple) else (group_value,))
                axis.plot(x_values, y_values, marker="o", label=label)
        if key in LOG_SCALE_KEYS:
            axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.set_ylabel(f"final {name}" if not group_keys else f"final valid {name}")
        axis.set_title(f"{name} against {key}")
        axis.grid(True, alpha=0.3)
        if not np.isfinite(np.asarray(drawn, dtype=float)).any():
            _mark_empty(axis)
        elif len(groups) * len(splits) <= MAX_LEGEND_ENTRIES:
            axis.legend(fontsize=8)
    return _save(figure, path)


def plot_hidden_size(results: pd.DataFrame, path, title: str) -> Path:
    """Plot train and validation accuracy and cross-entropy against the hidden sizes.

    The x axis lists the `num_hiddens` values, ordered by their total number of units, with
    the mean over runs at each size and the standard deviation as error bars.
    """
    sizes = sorted(_sorted_unique(results["num_hiddens"]), key=_total_units)
    positions = np.arange(len(sizes))
    figure, (acc_axis, ce_axis) = _new_figure(2)
    figure.suptitle(title)
    for axis, measure, name in ((acc_axis, "acc", "accuracy"), (ce_axis, "ce", "cross-entropy")):
        drawn = []
        for split, marker in (("train", "o"), ("valid", "s")):
            column = f"{split}_{measure}"
            samples = [_finite(results[_equals(results["num_hiddens"], s)][column]) for s in sizes]
            means = np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in samples])
            stds = np.array([np.nanstd(v) if np.isfinite(v).sum() > 1 else 0.0 for v in samples])
            drawn.append(means)
            axis.errorbar(positions, means, yerr=stds, marker=marker, capsize=3, label=split)
        axis.set_xticks(positions, [format_value(s) for s in sizes])
        axis.set_xlabel("num_hiddens (hidden units per layer)")
        axis.set_ylabel(f"final {name}")
        axis.set_title(f"{name} against hidden size")
        axis.grid(True, alpha=0.3)
        if not np.isfinite(np.concatenate(drawn)).any():
            _mark_empty(axis)
        else:
            axis.legend()
    return _save(figure, path)


# --- helpers for columns that contain floats, ints or "[16, 32]" strings -----------------------


def _sorted_unique(column: pd.Series) -> list:
    """Return the distinct non-missing values of a column, in ascending order."""
    values = [value for value in column.dropna().unique().tolist()]
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _equals(column: pd.Series, value) -> pd.Series:
    return column == value


def _total_units(num_hiddens) -> float:
    """Return the total hidden units of "[16, 32]" or [16, 32], for ordering sizes."""
    if isinstance(num_hiddens, str):
        numbers = [part for part in num_hiddens.strip("[]() ").split(",") if part.strip()]
        try:
            return float(sum(int(part) for part in numbers))
        except ValueError:
            return math.inf
    if isinstance(num_hiddens, (list, tuple)):
        return float(sum(num_hiddens))
    return float(num_hiddens)


__all__ = [
    "plot_curves",
    "plot_heatmaps",
    "plot_learning_curves",
    "plot_metric_vs_key",
    "plot_hidden_size",
    "format_value",
]

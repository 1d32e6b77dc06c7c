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
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tfd_sweep import metrics
from tfd_sweep.runfiles import atomic_write
from tfd_sweep.tables import count_parameters

logger = logging.getLogger(__name__)

# Size of one panel in inches, and the resolution of every PNG.
PANEL_SIZE = (5.2, 4.0)
DPI = 100
# Lines in a metric-against-key panel before the other swept keys are averaged over.
MAX_LINES = 6
# Colour of heatmap cells whose value is non-finite or missing.
BAD_CELL_COLOUR = "#b0b0b0"
# Swept keys whose values span decades and read best on a log axis (when all are positive).
LOG_SCALE_KEYS = ("eps", "batch_size")
# Line styles that tell the values of a learning-curve figure's style key apart.
LINE_STYLES = ("-", "--", ":", "-.")
# Width in inches kept free on the right of a figure for a figure-level legend.
LEGEND_WIDTH = 2.2
# Estimated mean width of a title character, as a fraction of the font size, for
# matplotlib's default DejaVu Sans. _save checks the wrapped result with clipped_texts.
TITLE_CHAR_WIDTH = 0.62


def _new_figure(n_panels: int, n_rows: int = 1, extra_width: float = 0.0,
                panel_size: tuple[float, float] = PANEL_SIZE, sharey: bool | str = False):
    """Return (figure, axes list) with `n_panels` panels drawn by the Agg canvas.

    The figure uses matplotlib's constrained layout, which keeps titles, labels, colour
    bars and figure legends inside the canvas. `extra_width` (inches) leaves room for a
    legend on the right.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_cols = math.ceil(n_panels / n_rows)
    figure = Figure(figsize=(panel_size[0] * n_cols + extra_width, panel_size[1] * n_rows),
                    dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(n_rows, n_cols, squeeze=False, sharey=sharey).ravel().tolist()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return figure, axes[:n_panels]


def _suptitle(figure, title: str) -> None:
    """Set the figure title, wrapped onto several lines when it is wider than the figure."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    size_points = FontProperties(size=rcParams["figure.titlesize"]).get_size_in_points()
    width_points = figure.get_figwidth() * 72.0 * 0.95
    max_chars = max(20, int(width_points / (TITLE_CHAR_WIDTH * size_points)))
    figure.suptitle("\n".join(textwrap.wrap(title, max_chars)) or title)


def clipped_texts(figure) -> list[str]:
    """Return the visible, non-empty texts of `figure` that reach outside its canvas.

    Draws the figure first, so the constrained layout has placed everything. Matplotlib
    keeps undrawn tick labels beyond the axis limits, so tick labels are checked through
    each panel's tight bounding box instead. Such a panel is reported as "tick labels of
    <panel title>".
    """
    from matplotlib.text import Text

    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    canvas = figure.bbox

    def outside(box) -> bool:
        # One pixel of tolerance for anti-aliasing at the canvas edge.
        return (box.x0 < canvas.x0 - 1 or box.x1 > canvas.x1 + 1
                or box.y0 < canvas.y0 - 1 or box.y1 > canvas.y1 + 1)

    tick_labels = set()
    clipped = []
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            tick_labels.update(id(label) for label in axis.get_ticklabels(which="both"))
        if axes.get_visible() and outside(axes.get_tightbbox(renderer)):
            clipped.append(f"tick labels of {axes.get_title() or 'a panel'}")
    for text in figure.findobj(Text):
        if id(text) in tick_labels or not text.get_visible() or not text.get_text().strip():
            continue
        if text.axes is not None and not text.axes.get_visible():
            continue
        if outside(text.get_window_extent(renderer)):
            clipped.append(text.get_text())
    return clipped


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clipped = clipped_texts(figure)
    if clipped:
        logger.warning("%s: text reaches outside the figure: %s", path.name, clipped)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
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


def _set_key_scale(axis, key: str, values: Sequence) -> None:
    """Use a log x axis for LOG_SCALE_KEYS when every value is positive (batch_size -1 is not)."""
    numbers = pd.to_numeric(pd.Series(list(values)), errors="coerce")
    if key in LOG_SCALE_KEYS and len(numbers) and bool((numbers > 0).all()):
        axis.set_xscale("log")


def _integer_epochs(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def _mark_empty(axis, message: str = "no finite values") -> None:
    axis.text(0.5, 0.5, message, ha="center", va="center", transform=axis.transAxes)


def format_value(value) -> str:
    """Format a hyperparameter value for labels: 0.001, 0.9, 100, [16, 32]."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _label(keys: Sequence[str], values: Sequence) -> str:
    return ", ".join(f"{key}={format_value(value)}" for key, value in zip(keys, values))


def _colours(n_values: int) -> list:
    """Return `n_values` colours: tab10 up to 10 values, else evenly spaced viridis."""
    from matplotlib import colormaps

    if n_values <= 10:
        return [colormaps["tab10"](index) for index in range(n_values)]
    return [colormaps["viridis"](0.9 * index / max(1, n_values - 1)) for index in range(n_values)]


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
    _suptitle(figure, title)

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
        _integer_epochs(axis)
        if measure == "ce":
            _set_ce_scale(axis, np.concatenate(all_values) if all_values else np.array([]))
        if len(epochs) == 0 or not np.isfinite(np.concatenate(all_values)).any():
            _mark_empty(axis)
        else:
            axis.legend()
    return _save(figure, path)


# --- sweeps -------------------------------------------------------------------------------


def format_heatmap_value(value: float) -> str:
    """Format a heatmap cell with 3 decimals, so that neighbouring cells differ visibly."""
    return f"{value:.3f}"


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
    figure, axes = _new_figure(len(panel_values), n_rows=n_rows)
    _suptitle(figure, title)
    image = None
    for axis, panel_value in zip(axes, panel_values):
        rows = results if panel_key is None else results[_equals(results[panel_key], panel_value)]
        grid, notes = heatmap_cells(rows, x_key, y_key, x_values, y_values, metric)
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
    return _save(figure, path)


def heatmap_cells(rows, x_key, y_key, x_values, y_values, metric):
    """Return (values, annotations), both of shape (len(y_values), len(x_values)).

    A cell's value is the mean `metric` of its ok runs, annotated by format_heatmap_value.
    A cell without a finite value is NaN, annotated with the status of its runs, or
    "non-finite" or "not run".
    """
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
                notes[i, j] = format_heatmap_value(grid[i, j])
            else:
                statuses = [s for s in cell["status"].astype(str) if s != metrics.STATUS_OK]
                notes[i, j] = statuses[0] if statuses else "non-finite"
    return grid, notes


# --- learning curves of a sweep ---------------------------------------------------------------


@dataclass(frozen=True)
class CurveRoles:
    """Assignment of swept keys to the panels, colours and line styles of learning curves.

    One row of panels per value of `panel_key`, one colour per combination of
    `colour_keys`, one line style per value of `style_key`. Runs that differ only in keys
    without a role (seed) share colour and style.
    """

    panel_key: str | None
    colour_keys: tuple[str, ...]
    style_key: str | None


def curve_roles(results: pd.DataFrame, swept_keys: Sequence[str]) -> CurveRoles:
    """Assign the swept keys to colour (eps first), line style (momentum first) and panels.

    A key can only get the line style when it has at most len(LINE_STYLES) values. Panels
    go to batch_size when it was swept, else to the next key. Keys left over after that are
    combined into the colour.
    """
    keys = [key for key in swept_keys if key != "seed" and key in results]
    if not keys:
        return CurveRoles(None, (), None)
    colour = "eps" if "eps" in keys else keys[0]
    rest = [key for key in keys if key != colour]

    def n_values(key: str) -> int:
        return len(_sorted_unique(results[key]))

    style_choices = [key for key in rest if n_values(key) <= len(LINE_STYLES)]
    style = None
    if style_choices:
        style = "momentum" if "momentum" in style_choices else style_choices[0]
        rest.remove(style)
    panel = None
    if rest:
        panel = "batch_size" if "batch_size" in rest else rest[0]
        rest.remove(panel)
    return CurveRoles(panel, (colour, *rest), style)


def plot_learning_curves(
    results: pd.DataFrame,
    history: pd.DataFrame,
    swept_keys: Sequence[str],
    path,
    title: str,
) -> Path:
    """Plot validation (left) and train (right) cross-entropy per epoch for every run.

    `history` is the long-format history (job_num, epoch, split, ce, acc). curve_roles
    decides the panels, colours and line styles from `swept_keys`; one legend on the right
    lists them. Panels in a row share their y axis.
    """
    from matplotlib.lines import Line2D

    roles = curve_roles(results, swept_keys)
    runs = results[results["job_num"].isin(history["job_num"].unique())]
    panel_values = _sorted_unique(runs[roles.panel_key]) if roles.panel_key else [None]
    colour_keys = list(roles.colour_keys)
    colour_values = _combinations(runs, colour_keys) if colour_keys else [(num,) for num in runs["job_num"]]
    colours = _colours(len(colour_values))
    style_values = _sorted_unique(runs[roles.style_key]) if roles.style_key else [None]

    height = PANEL_SIZE[1] if len(panel_values) <= 2 else 3.3
    figure, axes = _new_figure(2 * len(panel_values), n_rows=len(panel_values),
                               extra_width=LEGEND_WIDTH, panel_size=(PANEL_SIZE[0], height),
                               sharey="row")
    _suptitle(figure, title)
    by_run = {num: rows for num, rows in history.groupby("job_num")}
    for row_index, panel_value in enumerate(panel_values):
        valid_axis, train_axis = axes[2 * row_index], axes[2 * row_index + 1]
        rows = runs if roles.panel_key is None else runs[_equals(runs[roles.panel_key], panel_value)]
        drawn = []
        for _, run in rows.iterrows():
            key = tuple(run[k] for k in colour_keys) if colour_keys else (run["job_num"],)
            colour = colours[_index_of(colour_values, key)]
            style = LINE_STYLES[_index_of(style_values, run[roles.style_key]) % len(LINE_STYLES)] \
                if roles.style_key else "-"
            run_history = by_run[run["job_num"]]
            for axis, split in ((valid_axis, "valid"), (train_axis, "train")):
                split_rows = run_history[run_history["split"] == split].sort_values("epoch")
                values = _finite(split_rows["ce"])
                drawn.append(values)
                marker = "." if len(split_rows) <= 10 else None
                axis.plot(split_rows["epoch"], values, linestyle=style, marker=marker,
                          color=colour, linewidth=1.2, alpha=0.9)
        all_values = np.concatenate(drawn) if drawn else np.array([])
        suffix = "" if roles.panel_key is None else f", {roles.panel_key}={format_value(panel_value)}"
        for axis, split in ((valid_axis, "validation"), (train_axis, "train")):
            axis.set_xlabel("epoch")
            axis.set_ylabel("cross-entropy")
            axis.set_title(f"{split} cross-entropy{suffix}")
            axis.grid(True, alpha=0.3)
            _integer_epochs(axis)
            _set_ce_scale(axis, all_values)
            if not np.isfinite(all_values).any():
                _mark_empty(axis)

    handles = [Line2D([], [], color=colours[index], label=_label(colour_keys, value) if colour_keys
                      else f"run {value[0]}") for index, value in enumerate(colour_values)]
    if roles.style_key:
        handles += [Line2D([], [], color="grey", linestyle=LINE_STYLES[index % len(LINE_STYLES)],
                           label=_label([roles.style_key], [value]))
                    for index, value in enumerate(style_values)]
    _figure_legend(figure, handles)
    return _save(figure, path)


def _combinations(rows: pd.DataFrame, keys: list[str]) -> list[tuple]:
    """Return the distinct value combinations of `keys` in `rows`, sorted key by key."""
    combos = {tuple(values) for values in rows[keys].itertuples(index=False, name=None)}

    def order(combo: tuple) -> tuple:
        # Hidden sizes such as "[16, 32]" sort by their total units, not as text.
        return tuple(_total_units(value) if key == "num_hiddens" else value
                     for key, value in zip(keys, combo))

    try:
        return sorted(combos, key=order)
    except TypeError:
        return sorted(combos, key=str)


def _index_of(values: list, value) -> int:
    for index, candidate in enumerate(values):
        if candidate == value or str(candidate) == str(value):
            return index
    raise ValueError(f"{value!r} is not one of {values!r}")


def _figure_legend(figure, handles: list, below: bool = False) -> None:
    """Add one legend to the right of the panels (columns of at most 20 entries) or below them."""
    if not handles:
        return
    if below:
        figure.legend(handles=handles, loc="outside lower center", fontsize=9,
                      ncols=min(len(handles), 6))
        return
    figure.legend(handles=handles, loc="outside right upper", fontsize=8,
                  ncols=math.ceil(len(handles) / 20))


def plot_accuracy_curves(
    results: pd.DataFrame,
    history: pd.DataFrame,
    swept_keys: Sequence[str],
    path,
    title: str,
) -> Path:
    """Plot train (dashed) and validation (solid) accuracy per epoch, one panel per hidden size.

    Each panel names its hidden size and number of trainable parameters; all panels share
    the y axis, so the gap between train and validation accuracy compares across sizes. A
    dotted vertical line marks each run's best epoch by validation cross-entropy. Runs
    differing in other swept keys (except seed) get their own colour.
    """
    from matplotlib.lines import Line2D

    runs = results[results["job_num"].isin(history["job_num"].unique())]
    sizes = sorted(_sorted_unique(runs["num_hiddens"]), key=_total_units)
    other_keys = [key for key in swept_keys if key not in ("num_hiddens", "seed") and key in runs]
    combos = _combinations(runs, other_keys) if other_keys else [()]
    colours = _colours(len(combos))
    # Colours show the combinations of other swept keys when there are any, and then train
    # and valid differ by line style only. Otherwise each split gets its own colour.
    split_colours = {"valid": "tab:blue", "train": "tab:orange"}

    n_rows = math.ceil(len(sizes) / 3)
    # Narrower panels than elsewhere keep three sizes readable at the report's width.
    figure, axes = _new_figure(len(sizes), n_rows=n_rows, panel_size=(4.0, 3.6), sharey=True)
    _suptitle(figure, title)
    by_run = {num: rows for num, rows in history.groupby("job_num")}
    for axis, size in zip(axes, sizes):
        for _, run in runs[_equals(runs["num_hiddens"], size)].iterrows():
            colour = colours[_index_of(combos, tuple(run[key] for key in other_keys))]
            run_history = by_run[run["job_num"]]
            for split, style in (("valid", "-"), ("train", "--")):
                split_rows = run_history[run_history["split"] == split].sort_values("epoch")
                axis.plot(split_rows["epoch"], _finite(split_rows["acc"]), linestyle=style,
                          color=colour if other_keys else split_colours[split], linewidth=1.2)
            if pd.notna(run["best_epoch"]):
                axis.axvline(int(run["best_epoch"]), color=colour if other_keys else "grey",
                             linestyle=":", linewidth=1)
        axis.set_title(f"num_hiddens={format_value(size)}\n"
                       f"{_parameter_text(size)}")
        axis.set_xlabel("epoch")
        axis.set_ylabel("accuracy")
        axis.grid(True, alpha=0.3)
        _integer_epochs(axis)
        axis.tick_params(labelleft=True)

    split_colours = split_colours if not other_keys else {"valid": "black", "train": "black"}
    handles = [Line2D([], [], color=split_colours["valid"], linestyle="-", label="validation"),
               Line2D([], [], color=split_colours["train"], linestyle="--", label="train"),
               Line2D([], [], color="grey" if not other_keys else "black", linestyle=":",
                      label="best epoch (lowest valid_ce)")]
    if other_keys:
        handles += [Line2D([], [], color=colours[index], label=_label(other_keys, combo))
                    for index, combo in enumerate(combos)]
    _figure_legend(figure, handles, below=True)
    return _save(figure, path)


def _parameter_text(num_hiddens) -> str:
    try:
        return f"{count_parameters(num_hiddens):,} parameters"
    except ValueError:
        return "parameters unknown"


# --- final metrics against swept keys ---------------------------------------------------------


def plot_metric_vs_key(
    results: pd.DataFrame,
    key: str,
    path,
    title: str,
    group_keys: Sequence[str] = (),
) -> Path:
    """Plot final cross-entropy and accuracy of the ok runs against one swept key, in two panels.

    With no `group_keys` the panels show train, valid and test. With at most MAX_LINES
    combinations of `group_keys`, one valid line per combination. With more, one valid line
    per value of the group key with the fewest values (if it has at most MAX_LINES), showing
    the mean over the other group keys with a band from their minimum to their maximum.
    Repeats at the same point are averaged. eps and positive batch sizes use a log x axis.
    """
    group_keys = [other for other in group_keys if other != key]
    ok_runs = results[results["status"] == metrics.STATUS_OK]
    line_keys, averaged_keys = metric_line_keys(ok_runs, group_keys)
    if line_keys:
        groups = list(ok_runs.groupby(line_keys, sort=True))
    else:
        groups = [((), ok_runs)]
    splits = metrics.SPLITS if not group_keys else ("valid",)
    x_values = _sorted_unique(results[key])

    figure, (ce_axis, acc_axis) = _new_figure(2, extra_width=LEGEND_WIDTH if group_keys else 0.0)
    _suptitle(figure, title)
    colours = _colours(max(len(groups) * len(splits), 1))
    handles = []
    for axis, measure, name in ((ce_axis, "ce", "cross-entropy"), (acc_axis, "acc", "accuracy")):
        drawn = []
        for index, (group_value, rows) in enumerate(groups):
            values = group_value if isinstance(group_value, tuple) else (group_value,)
            for split_index, split in enumerate(splits):
                column = f"{split}_{measure}"
                samples = [_finite(rows[_equals(rows[key], x)][column]) for x in x_values]
                means = np.array([np.nanmean(s) if np.isfinite(s).any() else np.nan for s in samples])
                drawn.extend(means)
                colour = colours[index * len(splits) + split_index]
                if not group_keys:
                    label = split
                elif line_keys:
                    label = _label(line_keys, values)
                else:
                    label = "all runs"
                line, = axis.plot(x_values, means, marker="o", color=colour, label=label)
                if averaged_keys:
                    lows = np.array([np.nanmin(s) if np.isfinite(s).any() else np.nan for s in samples])
                    highs = np.array([np.nanmax(s) if np.isfinite(s).any() else np.nan for s in samples])
                    axis.fill_between(x_values, lows, highs, color=colour, alpha=0.15, linewidth=0)
                if measure == "ce":
                    handles.append(line)
        _set_key_scale(axis, key, x_values)
        axis.set_xlabel(key)
        axis.set_ylabel(f"final {name}" if not group_keys else f"final valid {name}")
        axis.set_title(f"{name} against {key}")
        axis.grid(True, alpha=0.3)
        if not np.isfinite(np.asarray(drawn, dtype=float)).any():
            _mark_empty(axis)
        elif not group_keys:
            axis.legend(fontsize=8)
    if averaged_keys:
        ce_axis.set_title(f"cross-entropy against {key}\n"
                          f"(mean over {', '.join(averaged_keys)}; band: min to max)")
        acc_axis.set_title(f"accuracy against {key}\n"
                           f"(mean over {', '.join(averaged_keys)}; band: min to max)")
    if group_keys:
        _figure_legend(figure, handles)
    return _save(figure, path)


def metric_line_keys(rows: pd.DataFrame, group_keys: list[str]) -> tuple[list[str], list[str]]:
    """Return (keys drawn as one line per combination, keys averaged over) for plot_metric_vs_key."""
    if not group_keys or len(_combinations(rows, group_keys)) <= MAX_LINES:
        return group_keys, []
    counts = {key: len(_sorted_unique(rows[key])) for key in group_keys}
    fewest = min(group_keys, key=lambda key: counts[key])
    if counts[fewest] > MAX_LINES:
        return [], group_keys
    return [fewest], [key for key in group_keys if key != fewest]


def plot_hidden_size(results: pd.DataFrame, path, title: str) -> Path:
    """Plot train and validation accuracy and cross-entropy against the hidden sizes.

    The x axis lists the `num_hiddens` values with their number of trainable parameters,
    ordered by total hidden units, with the mean over runs at each size and the standard
    deviation as error bars.
    """
    sizes = sorted(_sorted_unique(results["num_hiddens"]), key=_total_units)
    positions = np.arange(len(sizes))
    figure, (acc_axis, ce_axis) = _new_figure(2)
    _suptitle(figure, title)
    for axis, measure, name in ((acc_axis, "acc", "accuracy"), (ce_axis, "ce", "cross-entropy")):
        drawn = []
        for split, marker in (("train", "o"), ("valid", "s")):
            column = f"{split}_{measure}"
            samples = [_finite(results[_equals(results["num_hiddens"], s)][column]) for s in sizes]
            means = np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in samples])
            stds = np.array([np.nanstd(v) if np.isfinite(v).sum() > 1 else 0.0 for v in samples])
            drawn.append(means)
            axis.errorbar(positions, means, yerr=stds, marker=marker, capsize=3, label=split)
        axis.set_xticks(positions, [f"{format_value(s)}\n{_parameter_text(s).replace(' parameters', ' params')}"
                                    for s in sizes], fontsize=8)
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
    "plot_accuracy_curves",
    "curve_roles",
    "metric_line_keys",
    "heatmap_cells",
    "clipped_texts",
    "format_value",
]

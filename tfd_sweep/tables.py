"""Summary tables of a sweep's results and the ranking that picks the best run.

All functions take the results DataFrame of `tfd_sweep.results` (one row per planned run)
and return new DataFrames; none of them reads or writes files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from tfd_sweep import metrics
from tfd_sweep.errors import UserError
from tfd_sweep.model import NUM_CLASSES, NUM_INPUTS
from tfd_sweep.results import parse_num_hiddens

MODES = ("min", "max")
# Final metrics plus the best epoch, shown in the architecture and seed tables.
SUMMARY_METRICS = metrics.FINAL_METRICS + ("best_epoch", "best_valid_ce")
RANKING_COLUMNS = ("rank", "job_num", "status") + metrics.FINAL_METRICS + (
    "best_epoch", "best_valid_ce", "epochs_run", "diverged_epoch", "wall_time", "error")


@dataclass
class SummaryTable:
    """One summary table: `name` gives the CSV file summary_<name>.csv."""

    name: str
    kind: str            # "optimization", "architecture", "seeds" or "by_key": picks the heading
    frame: pd.DataFrame
    detail: dict         # values for the heading, such as {"batch_size": 100}
    display: pd.DataFrame | None = None   # strings for the report, when they differ from frame


def check_metric(results: pd.DataFrame, metric: str, mode: str) -> None:
    """Raise UserError unless `metric` is a numeric results column and `mode` is min or max."""
    choices = metrics.FINAL_METRICS + metrics.BEST_METRICS[1:]
    if metric not in choices:
        raise UserError(f"report.metric={metric!r} is not a metric; expected one of "
                        f"{', '.join(choices)}, for example report.metric=valid_ce.")
    if mode not in MODES:
        raise UserError(f"report.mode={mode!r} is invalid; expected min or max, for example "
                        "report.mode=max with report.metric=valid_acc.")


def eligible(results: pd.DataFrame, metric: str) -> pd.Series:
    """Return a boolean mask of the runs that may be ranked: status ok and a finite metric."""
    values = pd.to_numeric(results[metric], errors="coerce").astype(float)
    return (results["status"] == metrics.STATUS_OK) & np.isfinite(values)


def rank_runs(results: pd.DataFrame, swept_keys: Sequence[str], metric: str = "valid_ce",
              mode: str = "min") -> pd.DataFrame:
    """Rank runs by `metric`; diverged, failed, non-finite and not-run rows always come last.

    Ranked rows get rank 1, 2, ...; the rows after them have no rank (<NA>).
    """
    check_metric(results, metric, mode)
    mask = eligible(results, metric)
    ranked = results[mask].sort_values([metric, "job_num"], ascending=[mode == "min", True],
                                       kind="stable")
    rest = results[~mask].sort_values("job_num", kind="stable")
    ranking = pd.concat([ranked, rest], ignore_index=True)
    ranking["rank"] = pd.array(list(range(1, len(ranked) + 1)) + [pd.NA] * len(rest), dtype="Int64")
    columns = list(RANKING_COLUMNS[:3]) + [k for k in swept_keys if k in results] + [
        column for column in RANKING_COLUMNS[3:] if column not in swept_keys]
    if metric not in columns:
        columns.insert(3 + len(swept_keys), metric)
    return ranking[columns]


def best_run(results: pd.DataFrame, metric: str = "valid_ce", mode: str = "min") -> pd.Series | None:
    """Return the results row of the best eligible run, or None if no run is eligible."""
    check_metric(results, metric, mode)
    candidates = results[eligible(results, metric)]
    if candidates.empty:
        return None
    ordered = candidates.sort_values([metric, "job_num"], ascending=[mode == "min", True],
                                     kind="stable")
    return ordered.iloc[0]


def summary_tables(results: pd.DataFrame, swept_keys: Sequence[str]) -> list[SummaryTable]:
    """Choose the summary tables that fit the keys that were swept.

    - eps and momentum swept: valid_ce by eps (rows) x momentum (columns), one table per
      batch_size (the optimization question);
    - num_hiddens swept: final and best metrics by hidden size (the architecture question);
    - runs that differ only by seed: mean and standard deviation of the metrics;
    - any other swept key: metrics by that key.
    """
    swept = [key for key in swept_keys if key in results]
    tables: list[SummaryTable] = []
    covered = set()
    if "eps" in swept and "momentum" in swept:
        tables += _optimization_tables(results)
        covered |= {"eps", "momentum", "batch_size"}
    if "num_hiddens" in swept:
        tables.append(_architecture_table(results, swept))
        covered.add("num_hiddens")
    seeds = seed_summary(results)
    if seeds is not None:
        tables.append(SummaryTable("seeds", "seeds", seeds, {}))
    covered.add("seed")
    for key in swept:
        if key not in covered:
            tables.append(SummaryTable(f"by_{key}", "by_key", _metrics_by(results, [key]),
                                       {"key": key}))
    return tables


def _optimization_tables(results: pd.DataFrame) -> list[SummaryTable]:
    tables = []
    for batch_size, rows in results.groupby("batch_size", sort=True, dropna=False):
        eps_values = sorted(rows["eps"].dropna().unique())
        momentum_values = sorted(rows["momentum"].dropna().unique())
        frame = pd.DataFrame(math.nan, index=pd.Index(eps_values, name="eps"),
                             columns=pd.Index(momentum_values, name="momentum"))
        display = pd.DataFrame(metrics.STATUS_NOT_RUN, index=frame.index, columns=frame.columns)
        for (eps, momentum), cell in rows.groupby(["eps", "momentum"]):
            # Only ok runs count: a diverged run may still report a finite valid_ce.
            value = _mean_if_finite(cell[cell["status"] == metrics.STATUS_OK]["valid_ce"])
            frame.loc[eps, momentum] = value
            if math.isfinite(value):
                display.loc[eps, momentum] = f"{value:.4f}"
            else:
                statuses = sorted(set(cell["status"]) - {metrics.STATUS_OK}) or ["non-finite"]
                display.loc[eps, momentum] = ", ".join(statuses)
        tables.append(SummaryTable(f"valid_ce_eps_momentum_batch_size_{batch_size}",
                                   "optimization", frame, {"batch_size": batch_size}, display))
    return tables


def count_parameters(num_hiddens) -> int:
    """Return the trainable parameters of the MLP with hidden sizes [H1, H2] ("[16, 32]" or a list).

    D*H1 + H1 + H1*H2 + H2 + H2*C + C, with D = NUM_INPUTS and C = NUM_CLASSES. Raises
    ValueError unless there are exactly two hidden sizes.
    """
    sizes = parse_num_hiddens(num_hiddens) if isinstance(num_hiddens, str) else [int(s) for s in num_hiddens]
    if len(sizes) != 2:
        raise ValueError(f"num_hiddens={num_hiddens!r}: expected two hidden sizes [H1, H2]")
    hidden1, hidden2 = sizes
    return (NUM_INPUTS * hidden1 + hidden1 + hidden1 * hidden2 + hidden2
            + hidden2 * NUM_CLASSES + NUM_CLASSES)


def _architecture_table(results: pd.DataFrame, swept: Sequence[str]) -> SummaryTable:
    """Return metrics by hidden size, with n_params and acc_gap (train_acc - valid_acc)."""
    keys = ["num_hiddens"] + [key for key in swept if key not in ("num_hiddens", "seed")]
    frame = _metrics_by(results, keys)
    frame = frame.sort_values(by="num_hiddens", key=lambda column: column.map(_total_units),
                              kind="stable").reset_index(drop=True)
    n_params = []
    for size in frame["num_hiddens"]:
        try:
            n_params.append(count_parameters(size))
        except (TypeError, ValueError):
            n_params.append(pd.NA)
    frame.insert(1, "n_params", pd.array(n_params, dtype="Int64"))
    # The gap between train and validation accuracy shows how much a size overfits.
    frame.insert(frame.columns.get_loc("valid_acc") + 1, "acc_gap",
                 frame["train_acc"] - frame["valid_acc"])
    return SummaryTable("architecture", "architecture", frame, {})


def seed_summary(results: pd.DataFrame) -> pd.DataFrame | None:
    """Return mean and std of each metric over runs that differ only by seed, or None.

    Only groups with two or more runs are listed. Non-finite values are left out of the
    mean, and `n_finite` counts the runs in the mean.
    """
    keys = [key for key in metrics.HYPERPARAMETERS + ("max_ce",)
            if key != "seed" and key in results and results[key].notna().any()]
    finished = results[results["status"] != metrics.STATUS_NOT_RUN]
    if finished.empty or not keys:
        return None
    sizes = finished.groupby(keys, dropna=False)["seed"].nunique()
    repeated = sizes[sizes > 1]
    if repeated.empty:
        return None
    rows = []
    for group_values, group in finished.groupby(keys, dropna=False):
        if group["seed"].nunique() < 2:
            continue
        row = dict(zip(keys, group_values if isinstance(group_values, tuple) else (group_values,)))
        row["n_runs"] = len(group)
        row["n_finite"] = int(np.isfinite(group["valid_ce"].astype(float)).sum())
        for metric in metrics.FINAL_METRICS:
            values = group[metric].astype(float)
            values = values[np.isfinite(values)]
            row[f"{metric}_mean"] = values.mean() if len(values) else math.nan
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _metrics_by(results: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Return the mean of SUMMARY_METRICS per combination of `keys`, with counts of runs."""
    finished = results[results["status"] != metrics.STATUS_NOT_RUN]
    rows = []
    for group_values, group in results.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, group_values if isinstance(group_values, tuple) else (group_values,)))
        done = finished.loc[finished.index.intersection(group.index)]
        row["n_runs"] = len(done)
        row["n_ok"] = int((done["status"] == metrics.STATUS_OK).sum())
        for metric in SUMMARY_METRICS:
            row[metric] = _mean_if_finite(done[metric].astype(float))
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_if_finite(values: pd.Series) -> float:
    """Return the mean of the finite values, or NaN when there are none."""
    values = pd.to_numeric(values, errors="coerce").astype(float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else math.nan


def _total_units(num_hiddens) -> int:
    try:
        return sum(parse_num_hiddens(num_hiddens))
    except ValueError:
        return 0

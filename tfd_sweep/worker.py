"""What a worker process does with one group of runs: load data, train, write each run's files.

Everything here runs in joblib's loky workers, in the launching process when n_jobs=1, or on a
Dask worker, and must behave the same in all three. It receives plain data and does not use
Hydra. With Dask on several machines, the sweep directory and the data file must be reachable at
the same paths on every machine (a shared file system).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfd_sweep.errors import DataError, UserError
from tfd_sweep.metrics import STATUS_FAILED
from tfd_sweep.trainer import RunResult, RunSpec

RUNNING_MARKER = ".running"  # a run directory with this file and no result.json is in flight


@dataclass(frozen=True)
class RunTask:
    """One run as a worker receives it."""

    num: int
    overrides: tuple[str, ...]
    run_dir: str
    spec: RunSpec
    config: dict[str, Any]  # the composed config without Hydra's section, recorded in result.json


@dataclass(frozen=True)
class GroupTask:
    """One group of runs and everything a worker needs to train it."""

    runs: tuple[RunTask, ...]
    data_path: str | None   # absolute path of the data file, or None for the built-in data
    start_dir: str
    data_sha256: str        # as seen by the launching process; a worker seeing other bytes fails
    blas_threads: int
    kernel: str
    backend: str
    save_weights: bool


@functools.lru_cache(maxsize=2)
def _load_dataset_cached(data_path: str | None, start_dir: str, dtype: str) -> Any:
    # One load per worker process and data file, not one per run: loky and Dask reuse their
    # worker processes. The arrays are read-only, so no run can change the data of the next one.
    from tfd_sweep.data import load_dataset

    # The launching process already warned about built-in data; workers load it quietly.
    data_log = logging.getLogger("tfd_sweep.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)
    try:
        return load_dataset(data_path, Path(start_dir)).astype(dtype)
    finally:
        data_log.setLevel(level)


def load_group_data(task: GroupTask, dtype: str) -> Any:
    dataset = _load_dataset_cached(task.data_path, task.start_dir, dtype)
    if dataset.sha256 != task.data_sha256:
        raise DataError(
            f"Data file {dataset.source} on worker {socket.gethostname()} has sha256 {dataset.sha256[:12]}..., "
            f"but the launching machine read {task.data_sha256[:12]}.... Give every machine the same file."
        )
    return dataset


def run_group(task: GroupTask) -> list[dict[str, Any]]:
    """Train every run of a group and write its files; return one summary per run.

    A run that raises is recorded as failed and the others go on; KeyboardInterrupt leaves the
    unfinished runs without a result, so a resumed sweep trains them again.
    """
    from threadpoolctl import threadpool_limits

    started = dt.datetime.now()
    for run in task.runs:
        _write_marker(Path(run.run_dir))

    extra = {"blas_threads": task.blas_threads, "group_size": len(task.runs), "backend": task.backend,
             "worker_pid": os.getpid()}
    summaries: dict[int, dict[str, Any]] = {}
    dataset = None
    try:
        with threadpool_limits(limits=task.blas_threads):
            dataset = load_group_data(task, task.runs[0].spec.dtype)
            results = _train(task, dataset)
        for run, result in zip(task.runs, results):
            if isinstance(result, Exception):
                summaries[run.num] = _record_failure(run, result, dataset, started, extra)
            else:
                summaries[run.num] = _record(run, result, dataset, started, extra, task.save_weights)
    except KeyboardInterrupt:
        for run in task.runs:
            _remove_marker(Path(run.run_dir))
        raise
    except Exception as exc:  # noqa: BLE001 - one bad group must not stop the sweep
        for run in task.runs:
            if run.num not in summaries:
                summaries[run.num] = _record_failure(run, exc, dataset, started, extra)
    return [summaries[run.num] for run in task.runs]


def _train(task: GroupTask, dataset: Any) -> list[RunResult | Exception]:
    """Train a group's runs; a run that raised alone is returned as its exception, traceback included."""
    from tfd_sweep import trainer

    specs = [run.spec for run in task.runs]
    if len(specs) == 1:
        return [trainer.train(specs[0], dataset)]

    from tfd_sweep import stacked

    try:
        return stacked.train_group(specs, dataset, kernel=task.kernel)
    except Exception:  # noqa: BLE001
        # NOTE: a stacked group that raises is trained again run by run, so that one bad run
        # is isolated rather than failing its whole group.
        return [_train_alone(spec, dataset) for spec in specs]


def _train_alone(spec: RunSpec, dataset: Any) -> RunResult | Exception:
    from tfd_sweep import trainer

    try:
        return trainer.train(spec, dataset)
    except Exception as exc:  # noqa: BLE001 - recorded as this run's failure by run_group
        return exc


def _record(run: RunTask, result: RunResult, dataset: Any, started: dt.datetime, extra: dict[str, Any],
            save_weights: bool) -> dict[str, Any]:
    from tfd_sweep import runfiles

    record = runfiles.write_run(Path(run.run_dir), config=run.config, overrides=run.overrides, job_num=run.num,
                                result=result, dataset=dataset, started=started, extra=extra,
                                save_weights=save_weights)
    _remove_marker(Path(run.run_dir))
    return summarize(run.num, record)


def _record_failure(run: RunTask, exc: BaseException, dataset: Any, started: dt.datetime,
                    extra: dict[str, Any]) -> dict[str, Any]:
    from tfd_sweep import runfiles

    try:
        record = runfiles.write_failure(Path(run.run_dir), config=run.config, overrides=run.overrides,
                                        job_num=run.num, exc=exc, started=started, dataset=dataset, extra=extra)
    except UserError as write_error:
        # The failure itself cannot be written (a full disk, say): report it to the launcher
        # only. Without result.json the run counts as not run, so a resumed sweep retries it.
        record = {"status": STATUS_FAILED,
                  "error": f"{type(exc).__name__}: {exc} (not recorded in {run.run_dir}: {write_error})"}
    _remove_marker(Path(run.run_dir))
    return summarize(run.num, record)


def summarize(num: int, record: dict[str, Any]) -> dict[str, Any]:
    """Return the few fields of a result record that the launcher logs and counts."""
    metrics = record.get("metrics") or {}
    return {
        "num": num,
        "status": record["status"],
        "error": record.get("error"),
        "diverged_epoch": record.get("diverged_epoch"),
        "valid_ce": metrics.get("valid_ce"),
        "valid_acc": metrics.get("valid_acc"),
        "wall_time": record.get("wall_time"),
    }


def _write_marker(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUNNING_MARKER).write_text(f"{os.getpid()} {socket.gethostname()}\n", encoding="utf-8")


def _remove_marker(run_dir: Path) -> None:
    try:
        (run_dir / RUNNING_MARKER).unlink()
    except FileNotFoundError:
        pass

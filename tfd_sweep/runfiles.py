"""Write and read the files of one run directory.

result.json is written last and atomically (a temporary file renamed over the target), so its
presence means that the run finished, whatever its status, and that every other file of the run
is complete. A run interrupted before that point is treated as not run.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import socket
import tempfile
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from tfd_sweep import __version__
from tfd_sweep.errors import UserError
from tfd_sweep.metrics import (
    CURVES_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    RESULT_FILE,
    STATUS_DIVERGED,
    STATUS_OK,
    TRACEBACK_FILE,
    WEIGHTS_FILE,
)

RESULT_FORMAT = 1
REUSABLE_STATUSES = (STATUS_OK, STATUS_DIVERGED)
VERSIONED_PACKAGES = ("numpy", "hydra-core", "omegaconf", "pandas", "matplotlib", "joblib", "numba")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file beside path, then rename it over path.

    A crash or a full disk leaves either the old file or none, never half a file. OSError is
    turned into a UserError that names the path and the OS error.
    """
    path = Path(path)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        # mkstemp creates the file readable by its owner only. Give it the mode that open()
        # would, because results in a shared directory must stay readable by the group.
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"Cannot write {path}: {exc.strerror or exc}. Free some space or choose a "
                        f"writable output directory (hydra.run.dir=... or hydra.sweep.dir=...).") from exc
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def remove_temporary_files(directory: Path) -> None:
    """Delete the temporary files that atomic_write leaves when its process is killed mid-write."""
    for path in Path(directory).glob(".*.tmp"):
        path.unlink(missing_ok=True)


def _umask() -> int:
    # NOTE: os.umask can only be read by setting it; another thread creating a file in between
    # would get mode 0o022 for that file.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_writable(directory: Path) -> None:
    """Raise UserError unless files can be created in directory (made if missing)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(
            f"Output directory {directory} is not writable: {exc.strerror or exc}. Choose another "
            f"location, for example hydra.run.dir=/tmp/tfd_run or hydra.sweep.dir=/tmp/tfd_sweep."
        ) from exc


def _finite_or_none(value: Any) -> Any:
    """Make a value JSON-safe: numpy scalars to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def package_versions() -> dict[str, str]:
    versions = {"tfd_sweep": __version__, "python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def dataset_info(dataset: Any) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "source": dataset.source,
        "sha256": dataset.sha256,
        "synthetic": bool(dataset.synthetic),
        "sizes": dataset.sizes(),
    }


def write_history(path: Path, history: dict[str, np.ndarray]) -> None:
    """Write the per-epoch history as CSV with the columns of metrics.HISTORY_COLUMNS."""
    columns = [np.asarray(history[name]) for name in HISTORY_COLUMNS]
    lines = [",".join(HISTORY_COLUMNS)]
    for row in zip(*columns):
        epoch, *values = row
        lines.append(",".join([str(int(epoch))] + [repr(float(v)) for v in values]))
    write_text(path, "\n".join(lines) + "\n")


def write_run(
    run_dir: Path,
    *,
    config: dict[str, Any],
    overrides: Iterable[str],
    job_num: int | None,
    result: Any,
    dataset: Any | None,
    started: dt.datetime,
    extra: dict[str, Any] | None = None,
    save_weights: bool = True,
    plot: bool = True,
) -> dict[str, Any]:
    """Write every file of a finished run (any status) and return the result record.

    result is a trainer.RunResult, or None for a run that failed before training started, in
    which case extra must hold "error" and may hold "traceback".
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    tb = extra.pop("traceback", None)

    record: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "status": result.status if result is not None else "failed",
        "error": (result.error if result is not None else None) or extra.pop("error", None),
        "diverged_epoch": result.diverged_epoch if result is not None else None,
        "config": config,
        "overrides": list(overrides),
        "job_num": job_num,
        "metrics": {},
        "grad_check": None,
        "wall_time": None,
        "dataset": dataset_info(dataset) if dataset is not None else None,
        "versions": package_versions(),
        "host": socket.gethostname(),
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
    }
    record.update(extra)

    if result is not None:
        metrics = dict(result.final)
        metrics.update(result.best)
        metrics["epochs_run"] = len(result.history["epoch"])
        record["metrics"] = metrics
        record["grad_check"] = result.grad_check
        record["wall_time"] = result.wall_time
        write_history(run_dir / HISTORY_FILE, result.history)
        if save_weights and result.params:
            atomic_write(run_dir / WEIGHTS_FILE, lambda tmp: _save_npz(tmp, result.params))
        if plot and len(result.history["epoch"]) > 0:
            _plot_curves(run_dir, result, config, dataset)

    if tb:
        write_text(run_dir / TRACEBACK_FILE, tb)
    record = _finite_or_none(record)
    write_text(run_dir / RESULT_FILE, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return record


def _save_npz(path: Path, params: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **{name: np.asarray(value) for name, value in params.items()})


def _plot_curves(run_dir: Path, result: Any, config: dict[str, Any], dataset: Any | None) -> None:
    from tfd_sweep.plots import plot_curves

    name = dataset.name if dataset is not None else "unknown data"
    title = (f"{name}: eps={config.get('eps')} momentum={config.get('momentum')} "
             f"batch_size={config.get('batch_size')} num_hiddens={config.get('num_hiddens')}")
    atomic_write(run_dir / CURVES_FILE, lambda tmp: plot_curves(result.history, tmp, title))


def write_failure(run_dir: Path, *, config: dict[str, Any], overrides: Iterable[str], job_num: int | None,
                  exc: BaseException, started: dt.datetime, dataset: Any | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record a run that raised: status failed, the error, and its traceback in traceback.txt."""
    info = dict(extra or {})
    info["error"] = f"{type(exc).__name__}: {exc}"
    info["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return write_run(run_dir, config=config, overrides=overrides, job_num=job_num, result=None,
                     dataset=dataset, started=started, extra=info)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """Return the run's result record, or None when the run has not finished."""
    path = Path(run_dir) / RESULT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # NOTE: result.json is written atomically, so a bad one was edited or damaged by hand;
        # the run is treated as not run and trained again.
        return None

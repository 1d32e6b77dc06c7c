"""Read a sweep directory (sweep.json, multirun.yaml and run directories) into DataFrames.

This module reads only files, so a report can be rebuilt at any time from what the runs
wrote, also for an interrupted sweep. Notebook use:

    from tfd_sweep.results import load_results, load_history
    results = load_results("outputs/sweeps/2026-12-04_20-30-00")   # one row per planned job
    history = load_history("outputs/sweeps/2026-12-04_20-30-00")   # job_num, epoch, split, ce, acc
"""

from __future__ import annotations

import json
import logging
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tfd_sweep import metrics
from tfd_sweep.errors import UserError

logger = logging.getLogger(__name__)

# Status of a planned job without result.json: never started, still running or interrupted.
STATUS_NOT_RUN = metrics.STATUS_NOT_RUN
MULTIRUN_FILE = "multirun.yaml"

# Config keys kept as results.csv columns besides metrics.HYPERPARAMETERS.
EXTRA_CONFIG_KEYS = ("max_ce", "check_grad")
# Keys that may be swept, in the order used for tables and plot labels.
SWEEPABLE_KEYS = metrics.HYPERPARAMETERS + ("max_ce",)
EXTRA_METRICS = ("epochs_run",)
# Integer columns that may be missing (not run, failed), stored as pandas' nullable Int64.
NULLABLE_INT_COLUMNS = ("best_epoch", "epochs_run", "diverged_epoch", "hidden1", "hidden2")

RESULT_COLUMNS = (
    ("job_num", "status")
    + metrics.HYPERPARAMETERS
    + ("hidden1", "hidden2")
    + EXTRA_CONFIG_KEYS
    + metrics.FINAL_METRICS
    + metrics.BEST_METRICS
    + EXTRA_METRICS
    + ("diverged_epoch", "error", "wall_time", "dataset", "dataset_synthetic",
       "dataset_sha256", "dataset_source", "data_path", "run_dir", "overrides")
)
LONG_HISTORY_COLUMNS = ("job_num", "epoch", "split", "ce", "acc")


@dataclass
class Job:
    """One planned job of a sweep: its number, run directory and Hydra overrides."""

    num: int
    dir: Path
    overrides: list[str] = field(default_factory=list)


@dataclass
class Sweep:
    """Everything the report needs from a sweep directory."""

    sweep_dir: Path
    command: str
    swept_keys: list[str]
    jobs: list[Job]
    results: pd.DataFrame      # RESULT_COLUMNS, one row per job, ordered by job_num
    history: pd.DataFrame      # LONG_HISTORY_COLUMNS
    raw: dict[int, dict]       # job_num -> parsed result.json, for finished runs


# --- public API -----------------------------------------------------------------------------


def load_sweep(sweep_dir) -> Sweep:
    """Read a sweep directory: the plan, every run's result and history, the swept keys."""
    sweep_dir = Path(sweep_dir).resolve()
    if not sweep_dir.is_dir():
        raise UserError(f"sweep directory {sweep_dir} not found: pass the directory that "
                        f"contains {metrics.SWEEP_FILE} or {MULTIRUN_FILE} and the numbered run "
                        "directories, such as outputs/sweeps/<time>.")
    sweep_info = _read_sweep_json(sweep_dir)
    multirun = _read_multirun(sweep_dir)
    jobs = planned_jobs(sweep_dir, sweep_info, multirun)
    base_config = _base_config(multirun)

    rows, raw, histories = [], {}, []
    for job in jobs:
        result = _read_result(job.dir)
        if result is None:
            rows.append(_not_run_row(job, base_config))
            continue
        raw[job.num] = result
        rows.append(_result_row(job, result))
        history = _read_run_history(job)
        if history is not None:
            histories.append(history)

    results = _to_frame(rows)
    history = (pd.concat(histories, ignore_index=True) if histories
               else pd.DataFrame(columns=list(LONG_HISTORY_COLUMNS)))
    swept_keys = list(sweep_info.get("swept_keys") or []) or infer_swept_keys(results)
    command = sweep_info.get("command") or _command_from_multirun(multirun)
    logger.info("read %d planned runs from %s (%d finished)", len(jobs), sweep_dir, len(raw))
    return Sweep(sweep_dir, command, swept_keys, jobs, results, history, raw)


def load_results(sweep_dir) -> pd.DataFrame:
    """Return one row per planned run of a sweep, with the columns RESULT_COLUMNS."""
    return load_sweep(sweep_dir).results


def load_history(sweep_dir) -> pd.DataFrame:
    """Return the per-epoch history of every run in long format: job_num, epoch, split, ce, acc."""
    return load_sweep(sweep_dir).history


def infer_swept_keys(results: pd.DataFrame) -> list[str]:
    """Return the config keys whose values differ between the sweep's runs."""
    swept = []
    for key in SWEEPABLE_KEYS:
        if key in results and results[key].dropna().astype(str).nunique() > 1:
            swept.append(key)
    return swept


def format_num_hiddens(num_hiddens) -> str | None:
    """Format hidden sizes the way results.csv stores them: "[16, 32]"."""
    if num_hiddens is None:
        return None
    return "[" + ", ".join(str(int(size)) for size in num_hiddens) + "]"


def parse_num_hiddens(text: str) -> list[int]:
    """Parse "[16, 32]" (a results.csv cell) back into [16, 32]."""
    return [int(part) for part in str(text).strip("[]() ").split(",") if part.strip()]


# --- the plan: which jobs the sweep meant to run ---------------------------------------------


def planned_jobs(sweep_dir: Path, sweep_info: dict, multirun: dict | None) -> list[Job]:
    """List the sweep's jobs from sweep.json, else multirun.yaml, plus numbered run dirs."""
    jobs: dict[int, Job] = {}
    if sweep_info.get("jobs"):
        for entry in sweep_info["jobs"]:
            num = int(entry["num"])
            jobs[num] = Job(num, sweep_dir / str(entry.get("dir", num)), list(entry.get("overrides", [])))
    elif multirun is not None:
        for num, overrides in enumerate(_expand_multirun(multirun)):
            jobs[num] = Job(num, sweep_dir / str(num), overrides)

    # Run directories that the plan does not list (an older plan, Hydra's own launcher).
    for path in sorted(sweep_dir.iterdir()):
        if path.is_dir() and path.name.isdigit() and int(path.name) not in jobs:
            if (path / metrics.RESULT_FILE).exists() or (path / ".hydra").is_dir():
                jobs[int(path.name)] = Job(int(path.name), path, _read_overrides(path))

    if not jobs:
        raise UserError(f"{sweep_dir} contains no sweep: expected {metrics.SWEEP_FILE}, "
                        f"{MULTIRUN_FILE} or numbered run directories (0/, 1/, ...). Pass the "
                        "directory of a multirun, such as outputs/sweeps/<time>.")
    for job in jobs.values():
        if not job.overrides:
            job.overrides = _read_overrides(job.dir)
    return [jobs[num] for num in sorted(jobs)]


def _expand_multirun(multirun: dict) -> list[list[str]]:
    """Expand the grid of multirun.yaml the way Hydra's basic sweeper numbers its jobs."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_node = multirun.get("hydra") or {}
    params = (hydra_node.get("sweeper") or {}).get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list((hydra_node.get("overrides") or {}).get("task") or [])
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(overrides, None)
    except Exception as error:  # Hydra raises several exception types for bad overrides
        logger.warning("could not expand the sweep overrides %s of %s (%s); listing run "
                       "directories only", arguments, MULTIRUN_FILE, error)
        return []
    return [list(job) for job in batches[0]]


def _command_from_multirun(multirun: dict | None) -> str:
    if multirun is None:
        return ""
    task = ((multirun.get("hydra") or {}).get("overrides") or {}).get("task") or []
    return " ".join(["python -m tfd_sweep -m"] + [shlex.quote(str(item)) for item in task])


def _base_config(multirun: dict | None) -> dict:
    """Return the sweep's config values shared by all jobs, from multirun.yaml."""
    if multirun is None:
        return {}
    return {key: value for key, value in multirun.items() if key != "hydra"}


# --- one run ----------------------------------------------------------------------------------


def _result_row(job: Job, result: dict) -> dict:
    config = result.get("config") or {}
    dataset = result.get("dataset") or {}
    values = result.get("metrics") or {}
    row = _config_columns(config)
    row.update({name: to_number(values.get(name)) for name in
                metrics.FINAL_METRICS + metrics.BEST_METRICS + EXTRA_METRICS})
    row.update(
        job_num=job.num,
        status=result.get("status", metrics.STATUS_FAILED),
        error=result.get("error"),
        diverged_epoch=result.get("diverged_epoch"),
        wall_time=to_number(result.get("wall_time")),
        dataset=dataset.get("name"),
        dataset_synthetic=dataset.get("synthetic"),
        dataset_sha256=dataset.get("sha256"),
        dataset_source=dataset.get("source"),
        run_dir=str(job.dir),
        overrides=" ".join(result.get("overrides") or job.overrides),
    )
    return row


def _not_run_row(job: Job, base_config: dict) -> dict:
    config = {key: base_config.get(key) for key in SWEEPABLE_KEYS + EXTRA_CONFIG_KEYS}
    config["data"] = dict(base_config.get("data") or {})
    hydra_config = _read_run_config(job.dir)
    if hydra_config:
        config.update({key: hydra_config.get(key, config.get(key)) for key in config})
    else:
        config.update(_parse_overrides(job.overrides))
    row = _config_columns(config)
    row.update(job_num=job.num, status=STATUS_NOT_RUN, run_dir=str(job.dir),
               overrides=" ".join(job.overrides))
    return row


def _config_columns(config: dict) -> dict:
    row = {key: config.get(key) for key in metrics.HYPERPARAMETERS + EXTRA_CONFIG_KEYS}
    hiddens = config.get("num_hiddens")
    if isinstance(hiddens, (list, tuple)):
        row["num_hiddens"] = format_num_hiddens(hiddens)
        row["hidden1"] = int(hiddens[0]) if len(hiddens) > 0 else None
        row["hidden2"] = int(hiddens[1]) if len(hiddens) > 1 else None
    data = config.get("data") or {}
    row["data_path"] = data.get("path") if isinstance(data, dict) else None
    return row


def _parse_overrides(overrides: list[str]) -> dict:
    """Return {key: value} for the plain `key=value` overrides of a job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = {}
    try:
        for override in OverridesParser.create().parse_overrides(overrides):
            if override.is_sweep_override():
                continue
            value = override.value()
            key = override.key_or_group
            if key == "data.path":
                parsed["data"] = {"path": value}
            else:
                parsed[key] = list(value) if isinstance(value, (list, tuple)) else value
    except Exception as error:  # Hydra raises several exception types for bad overrides
        logger.warning("could not parse the overrides %s (%s)", overrides, error)
    return parsed


def _read_run_history(job: Job) -> pd.DataFrame | None:
    path = job.dir / metrics.HISTORY_FILE
    if not path.exists():
        return None
    try:
        wide = pd.read_csv(path)
    except (OSError, ValueError) as error:
        logger.warning("skipping unreadable %s: %s", path, error)
        return None
    missing = [column for column in metrics.HISTORY_COLUMNS if column not in wide]
    if missing:
        logger.warning("skipping %s: missing columns %s (expected %s)", path, missing,
                       list(metrics.HISTORY_COLUMNS))
        return None
    parts = []
    for split in ("train", "valid"):
        part = pd.DataFrame({
            "job_num": job.num,
            "epoch": wide["epoch"].astype(int),
            "split": split,
            "ce": pd.to_numeric(wide[f"{split}_ce"], errors="coerce"),
            "acc": pd.to_numeric(wide[f"{split}_acc"], errors="coerce"),
        })
        parts.append(part)
    return pd.concat(parts, ignore_index=True).sort_values(["epoch", "split"], kind="stable")


# --- files ------------------------------------------------------------------------------------


def _read_result(run_dir: Path) -> dict | None:
    """Return the parsed result.json, None if absent, or a failed stand-in if unreadable."""
    path = run_dir / metrics.RESULT_FILE
    if not path.exists():
        return None
    try:
        with open(path, encoding="utf-8") as file:
            result = json.load(file)
        if not isinstance(result, dict):
            raise ValueError(f"expected a JSON object, found {type(result).__name__}")
        return result
    except (OSError, ValueError) as error:
        logger.warning("unreadable %s: %s", path, error)
        return {"status": metrics.STATUS_FAILED, "error": f"unreadable {path.name}: {error}",
                "config": _read_run_config(run_dir) or {}}


def _read_sweep_json(sweep_dir: Path) -> dict:
    path = sweep_dir / metrics.SWEEP_FILE
    if not path.exists():
        return {}
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        logger.warning("ignoring unreadable %s: %s", path, error)
        return {}


def _read_multirun(sweep_dir: Path) -> dict | None:
    path = sweep_dir / MULTIRUN_FILE
    if not path.exists():
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as error:  # OmegaConf and YAML raise several exception types
        logger.warning("ignoring unreadable %s: %s", path, error)
        return None


def _read_run_config(run_dir: Path) -> dict | None:
    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as error:  # OmegaConf and YAML raise several exception types
        logger.warning("ignoring unreadable %s: %s", path, error)
        return None


def _read_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    from omegaconf import OmegaConf

    try:
        return [str(item) for item in OmegaConf.load(path)]
    except Exception as error:  # OmegaConf and YAML raise several exception types
        logger.warning("ignoring unreadable %s: %s", path, error)
        return []


def to_number(value) -> float:
    """Return a float, with null (how result.json stores NaN and inf) as NaN."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _to_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    for column in NULLABLE_INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in metrics.FINAL_METRICS + metrics.BEST_METRICS[1:] + ("wall_time",):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame.sort_values("job_num", kind="stable").reset_index(drop=True)

"""Write sweep directories by hand, in the run-directory format, for the report tests.

The numbers are made up but deterministic: valid_ce is lowest at eps=0.1, momentum=0.9.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tfd_sweep import metrics

BASE_CONFIG = {
    "eps": 0.01, "momentum": 0.0, "batch_size": 100, "num_epochs": 5,
    "num_hiddens": [16, 32], "seed": 0, "dtype": "float64", "check_grad": False,
    "max_ce": 100.0, "data": {"path": None},
}
SYNTHETIC_DATASET = {
    "name": "synthetic-faces", "source": "built-in", "sha256": "ab" * 32, "synthetic": True,
    "sizes": {"train": 3374, "valid": 419, "test": 385},
}


def fake_valid_ce(config: dict) -> float:
    """Return a made-up final valid_ce, lowest at eps=0.1 and momentum=0.9."""
    hidden_penalty = 0.3 / math.sqrt(sum(config["num_hiddens"]))
    return (1.0 + 0.2 * abs(math.log10(config["eps"]) + 1.0) + 0.3 * (0.9 - config["momentum"])
            + hidden_penalty + 0.01 * config["seed"])


def write_run(run_dir: Path, job_num: int, config: dict, overrides: list[str],
              status: str = metrics.STATUS_OK, dataset: dict | None = None) -> dict:
    """Write result.json, history.csv (and traceback.txt if failed) like a finished run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    epochs = config["num_epochs"]
    final_ce = fake_valid_ce(config)
    history = {
        "epoch": np.arange(1, epochs + 1),
        "train_ce": np.linspace(2.0, final_ce - 0.1, epochs),
        "train_acc": np.linspace(0.2, 0.7, epochs),
        "valid_ce": np.linspace(2.0, final_ce, epochs),
        "valid_acc": np.linspace(0.2, 0.6, epochs),
    }
    final = {"train_ce": final_ce - 0.1, "train_acc": 0.7, "valid_ce": final_ce,
             "valid_acc": 0.6, "test_ce": final_ce + 0.05, "test_acc": 0.58}
    best = {"best_epoch": epochs, "best_valid_ce": final_ce, "best_valid_acc": 0.6,
            "best_train_ce": final_ce - 0.1, "best_train_acc": 0.7}
    error, diverged_epoch = None, None

    if status == metrics.STATUS_DIVERGED:
        diverged_epoch = 2
        for column in metrics.HISTORY_COLUMNS[1:]:
            history[column] = history[column][:diverged_epoch].copy()
        history["epoch"] = history["epoch"][:diverged_epoch]
        history["train_ce"][-1] = math.inf
        history["valid_ce"][-1] = math.nan
        final = {name: None for name in metrics.FINAL_METRICS}
        best = {"best_epoch": 1, "best_valid_ce": 2.0, "best_valid_acc": 0.2,
                "best_train_ce": 2.0, "best_train_acc": 0.2}
    elif status == metrics.STATUS_FAILED:
        history = None
        final = {name: None for name in metrics.FINAL_METRICS}
        best = {name: None for name in metrics.BEST_METRICS}
        error = "ValueError: injected failure for the test"
        (run_dir / metrics.TRACEBACK_FILE).write_text("Traceback ...\n" + error + "\n")

    if history is not None:
        lines = [",".join(metrics.HISTORY_COLUMNS)]
        for i in range(len(history["epoch"])):
            lines.append(",".join(str(history[c][i]) for c in metrics.HISTORY_COLUMNS))
        (run_dir / metrics.HISTORY_FILE).write_text("\n".join(lines) + "\n")
    epochs_run = 0 if history is None else len(history["epoch"])
    result = {
        "format": 1, "status": status, "error": error, "diverged_epoch": diverged_epoch,
        "config": config, "overrides": overrides, "job_num": job_num,
        "metrics": {**final, **best, "epochs_run": epochs_run},
        "grad_check": None, "wall_time": 1.5 + job_num,
        "dataset": dataset or SYNTHETIC_DATASET,
        "versions": {"tfd_sweep": "0.1.0"}, "blas_threads": 1, "group_size": 1,
        "backend": "loky", "host": "test", "started": "2026-01-01T00:00:00",
        "finished": "2026-01-01T00:00:02",
    }
    (run_dir / metrics.RESULT_FILE).write_text(json.dumps(result, indent=2))
    return result


def _override_text(key: str, value) -> str:
    if isinstance(value, list):
        return f"{key}=[{','.join(str(v) for v in value)}]"
    return f"{key}={value}"


def make_sweep(sweep_dir: Path, grid: dict[str, list], statuses: dict[int, str] | None = None,
               not_run: tuple[int, ...] = (), with_sweep_json: bool = True,
               base: dict | None = None, dataset: dict | None = None,
               constant_overrides: tuple[str, ...] = ()) -> list[dict]:
    """Write a sweep over the product of `grid` (first key slowest) and return the jobs.

    `statuses` maps job numbers to diverged or failed; jobs in `not_run` get no run
    directory. `constant_overrides` (such as "+sweep=hidden") are appended to every job's
    overrides, as the launcher records them. Returns [{"num", "dir", "overrides", "config"}]
    for every planned job.
    """
    import itertools

    sweep_dir.mkdir(parents=True, exist_ok=True)
    statuses = statuses or {}
    keys = list(grid)
    jobs = []
    for num, values in enumerate(itertools.product(*(grid[key] for key in keys))):
        config = json.loads(json.dumps(base or BASE_CONFIG))
        config.update(dict(zip(keys, values)))
        overrides = [_override_text(key, value) for key, value in zip(keys, values)]
        overrides += list(constant_overrides)
        jobs.append({"num": num, "dir": str(num), "overrides": overrides, "config": config})
        if num not in not_run:
            write_run(sweep_dir / str(num), num, config, overrides,
                      statuses.get(num, metrics.STATUS_OK), dataset)

    sweep_overrides = [f"{key}={','.join(_override_text('', v)[1:] for v in grid[key])}"
                       for key in keys] + list(constant_overrides)
    if with_sweep_json:
        info = {
            "command": "python -m tfd_sweep -m " + " ".join(f"'{o}'" for o in sweep_overrides),
            "argv": ["-m"] + sweep_overrides, "swept_keys": keys,
            "jobs": [{k: job[k] for k in ("num", "dir", "overrides")} for job in jobs],
        }
        (sweep_dir / metrics.SWEEP_FILE).write_text(json.dumps(info, indent=2))
    _write_multirun(sweep_dir, sweep_overrides, base or BASE_CONFIG)
    return jobs


def _write_multirun(sweep_dir: Path, task_overrides: list[str], base: dict) -> None:
    from omegaconf import OmegaConf

    config = dict(base)
    config["hydra"] = {"overrides": {"task": task_overrides, "hydra": []},
                       "sweeper": {"params": None}, "sweep": {"dir": str(sweep_dir)}}
    OmegaConf.save(OmegaConf.create(config), sweep_dir / "multirun.yaml")


# A 2 x 3 optimization sweep over eps x momentum at one batch size, with one diverged
# run (job 5: eps=1.0, momentum=0.9), one failed run (job 4) and one job never run (job 1).
OPTIMIZATION_GRID = {"eps": [0.1, 1.0], "momentum": [0.0, 0.5, 0.9]}


def make_optimization_sweep(sweep_dir: Path, **options) -> list[dict]:
    return make_sweep(sweep_dir, OPTIMIZATION_GRID,
                      statuses={5: metrics.STATUS_DIVERGED, 4: metrics.STATUS_FAILED},
                      not_run=(1,), **options)

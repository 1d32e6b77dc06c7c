"""The Hydra application: `python -m tfd_sweep [overrides]` trains one run.

With -m (multirun), Hydra hands the expanded sweep to the tfd_sweep launcher
(tfd_sweep/launcher.py), which trains the runs itself through the plain-Python trainer and
never calls the task function below.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tfd_sweep.errors import UserError

log = logging.getLogger("tfd_sweep")

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1


def config_dir() -> Path:
    """Return the conf/ directory beside the package (a source checkout or editable install)."""
    path = Path(__file__).resolve().parent.parent / "conf"
    if not (path / "config.yaml").is_file():
        sys.exit(f"tfd_sweep: configuration directory {path} not found. Install tfd_sweep from its "
                 f"source tree with `pip install -e .` so that conf/ stays beside the package.")
    return path


class EpochLogger:
    """Log one progress line every `interval` seconds of a single run, and the last epoch."""

    def __init__(self, num_epochs: int, interval: float = 5.0) -> None:
        self.num_epochs = num_epochs
        self.interval = interval
        self.start = time.perf_counter()
        self.last = self.start

    def __call__(self, epoch: int, row: dict[str, float]) -> None:
        now = time.perf_counter()
        if now - self.last < self.interval and epoch != self.num_epochs:
            return
        self.last = now
        elapsed = now - self.start
        left = elapsed / epoch * (self.num_epochs - epoch)
        log.info(
            "epoch %d/%d  train_ce %.4f  train_acc %.3f  valid_ce %.4f  valid_acc %.3f  (%.0f s, ~%.0f s left)",
            epoch, self.num_epochs, row["train_ce"], row["train_acc"], row["valid_ce"], row["valid_acc"],
            elapsed, left,
        )


def large_batch_note(batch_size: int, train_size: int) -> str | None:
    """Return the warning for a batch_size above the training set size, else None."""
    if batch_size <= train_size:
        return None
    return (f"batch_size={batch_size} is larger than the {train_size} training images: each epoch is one "
            f"full batch, the same as batch_size=-1.")


def train_single(cfg: DictConfig) -> int:
    """Train one run described by a composed config and write its run directory; return the exit code."""
    from hydra.core.hydra_config import HydraConfig

    from tfd_sweep import config as schema
    from tfd_sweep import data, runfiles, trainer
    from tfd_sweep.metrics import STATUS_DIVERGED, STATUS_FAILED

    started = dt.datetime.now()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    start_dir = Path(hydra_cfg.runtime.cwd)
    overrides = list(hydra_cfg.overrides.task)
    job_num = hydra_cfg.job.get("num") if hydra_cfg.mode.name == "MULTIRUN" else None

    schema.validate(cfg)
    spec = schema.run_spec(cfg)
    plain: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    runfiles.check_writable(run_dir)

    dataset = data.load_dataset(plain["data"]["path"], start_dir)
    log.info("dataset %s (%s): %s", dataset.name, dataset.source,
             ", ".join(f"{k} {v}" for k, v in dataset.sizes().items()))
    log.info("eps=%g momentum=%g batch_size=%d num_epochs=%d num_hiddens=%s seed=%d dtype=%s",
             spec.eps, spec.momentum, spec.batch_size, spec.num_epochs, list(spec.num_hiddens), spec.seed,
             spec.dtype)
    note = large_batch_note(spec.batch_size, dataset.sizes()["train"])
    if note:
        log.warning("%s", note)

    try:
        result = trainer.train(spec, dataset, on_epoch=EpochLogger(spec.num_epochs))
    except Exception as exc:  # a bug or an unexpected numerical failure: record it, then show it
        runfiles.write_failure(run_dir, config=plain, overrides=overrides, job_num=job_num, exc=exc,
                               started=started, dataset=dataset)
        raise
    record = runfiles.write_run(run_dir, config=plain, overrides=overrides, job_num=job_num, result=result,
                                dataset=dataset, started=started, save_weights=plain["save_weights"],
                                extra={"blas_threads": None, "group_size": 1, "backend": "in-process"})

    metrics = result.final
    if result.status == STATUS_FAILED:
        log.error("run failed: %s", result.error)
    elif result.status == STATUS_DIVERGED:
        log.warning("run diverged at epoch %s (train cross-entropy non-finite or above max_ce=%g)",
                    result.diverged_epoch, spec.max_ce)
    log.info("final  train_ce %.4f  train_acc %.3f | valid_ce %.4f  valid_acc %.3f | test_ce %.4f  test_acc %.3f",
             *(metrics[k] for k in ("train_ce", "train_acc", "valid_ce", "valid_acc", "test_ce", "test_acc")))
    log.info("best epoch %s: valid_ce %.4f  valid_acc %.3f", result.best.get("best_epoch"),
             result.best.get("best_valid_ce", float("nan")), result.best.get("best_valid_acc", float("nan")))
    log.info("wall time %.1f s; files in %s", record["wall_time"] or 0.0, run_dir)
    if dataset.synthetic:
        log.warning("These numbers are for the built-in synthetic faces, not the course data. "
                    "Point data.path at toronto_face.npz for real results.")
    return EXIT_RUN_FAILED if result.status == STATUS_FAILED else 0


def task(cfg: DictConfig) -> None:
    """Hydra's task function: train one run and exit with a message, not a traceback, on user errors."""
    try:
        code = train_single(cfg)
    except UserError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_USER_ERROR)
    if code:
        sys.exit(code)


def check_output_location(argv: list[str]) -> tuple[Path | None, bool]:
    """Raise UserError when the run or sweep directory of a command line cannot be created.

    Hydra creates that directory before any tfd_sweep code runs and shows a traceback when it
    fails, so the check runs first. A directory named with an interpolation such as
    ${now:...} is checked up to its fixed part (outputs/sweeps for the default). Returns the
    directory when its name has no interpolation, else None, and whether this check created it.
    """
    from tfd_sweep import runfiles
    from tfd_sweep.overrides import INFO_FLAGS, is_multirun, last_value

    if any(arg in INFO_FLAGS or arg.split("=", 1)[0] in INFO_FLAGS for arg in argv):
        return None, False
    key = "hydra.sweep.dir" if is_multirun(argv) else "hydra.run.dir"
    value = last_value(argv, key)
    if value is None:
        value = _default_output_dir(key)
    if value is None:
        return None, False
    fixed = value.split("${", 1)[0]
    if "${" in value:
        fixed = fixed.rpartition("/")[0]  # a partly written name such as "run_${now:...}" is not checked
    if not fixed:
        return None, False  # the name starts with an interpolation such as ${oc.env:HOME}: Hydra resolves it
    directory = Path(fixed)
    created = not directory.exists()
    try:
        runfiles.check_writable(directory)
    except UserError as exc:
        raise UserError(f"{key}={value}: {exc}") from exc
    if "${" in value:
        return None, False
    return directory, created


def _default_output_dir(key: str) -> str | None:
    raw = OmegaConf.to_container(OmegaConf.load(config_dir() / "config.yaml"), resolve=False)
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, str) else None


def main() -> None:
    """Entry point of `python -m tfd_sweep` and of the `tfd-sweep` command."""
    import hydra

    from contextlib import nullcontext

    from tfd_sweep import config as schema
    from tfd_sweep.launcher import SweepLock
    from tfd_sweep.overrides import check_command_line, is_multirun

    problems = check_command_line(sys.argv[1:])
    if problems:
        print("tfd_sweep: invalid command line:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    named_dir, created = None, False
    try:
        named_dir, created = check_output_location(sys.argv[1:])
        # Hydra writes multirun.yaml into the sweep directory before the launcher locks it, so
        # a sweep directory named on the command line is locked here, before Hydra starts.
        lock = SweepLock(named_dir) if named_dir is not None and is_multirun(sys.argv[1:]) else nullcontext()
        with lock:
            schema.register_schema()
            app = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(task)
            app()
    except UserError as exc:
        print(f"tfd_sweep: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except SystemExit as exc:
        # A rejected sweep (status 2) trained nothing: leave no empty directory named after it.
        if exc.code == EXIT_USER_ERROR and named_dir is not None and created:
            try:
                named_dir.rmdir()
            except OSError:
                pass  # not empty: keep it
        raise

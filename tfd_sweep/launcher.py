"""The sweep launcher: check the whole sweep, plan groups, dispatch them with joblib or Dask.

Hydra's sweeper expands the command line into one override list per job and calls launch().
The steps, in order:
  1. compose every job's config and check every value; report all problems together, before
     any directory is created or anything is trained;
  2. find the runs that an earlier attempt in the same sweep directory already finished;
  3. write sweep.json and each new run's .hydra/ files, group the runs, log the plan;
  4. dispatch the groups to workers (joblib's loky processes, or Dask), log each run as it
     starts and ends, show progress, stop early after launcher.max_failures failures;
  5. return one Hydra JobReturn per job; the report callback then builds the sweep report and
     sets the exit code.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from tfd_sweep.compose import SweepComposer
from tfd_sweep.errors import UserError
from tfd_sweep.grouping import Group, Job, make_groups
from tfd_sweep.metrics import STATUS_DIVERGED, STATUS_FAILED, STATUS_NOT_RUN, SWEEP_FILE
from tfd_sweep.progress import SweepProgress

log = logging.getLogger("tfd_sweep.launcher")

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
EXIT_TERMINATED = 143   # 128 + SIGTERM
LOCK_FILE = ".sweep.lock"


def launch(config: DictConfig, hydra_context: Any, job_overrides: Sequence[Sequence[str]],
           initial_job_idx: int) -> list[Any]:
    """Run one batch of a Hydra sweep and return a JobReturn per job (Hydra's launcher contract)."""
    from hydra.core.utils import configure_log, setup_globals

    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    try:
        return _launch(config, hydra_context, job_overrides, initial_job_idx)
    except UserError as exc:
        log.error("%s", exc)
        sys.exit(EXIT_USER_ERROR)


def _launch(config: DictConfig, hydra_context: Any, job_overrides: Sequence[Sequence[str]],
            initial_job_idx: int) -> list[Any]:
    from tfd_sweep import config as schema
    from tfd_sweep import runfiles

    settings = OmegaConf.to_container(config.launcher, resolve=True)
    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    start_dir = Path(str(config.hydra.runtime.cwd))

    # 1. Compose and check every job before anything else happens.
    tic = time.perf_counter()
    jobs, job_configs, plain_by_num = compose_jobs(config, hydra_context, job_overrides, initial_job_idx)
    log.info("checked %d runs in %.1f s", len(jobs), time.perf_counter() - tic)
    plain_configs = list(plain_by_num.values())

    # 2. Data: read it once here, so that a missing or bad file stops the sweep before launch.
    from tfd_sweep.data import BUILTIN, find_data_file, load_dataset

    data_paths = {c["data"]["path"] for c in plain_configs}
    if len(data_paths) > 1:
        raise UserError(f"data.path takes one value per sweep, got {sorted(map(str, data_paths))}. "
                        f"Run one sweep per data file.")
    data_path = data_paths.pop()
    dataset = load_dataset(data_path, start_dir)
    resolved = None
    if data_path != BUILTIN and not dataset.synthetic:
        resolved = str(find_data_file(data_path, start_dir))
    elif data_path == BUILTIN:
        resolved = BUILTIN
    log.info("dataset %s (%s): %s", dataset.name, dataset.source,
             ", ".join(f"{k} {v}" for k, v in dataset.sizes().items()))
    from tfd_sweep.app import large_batch_note

    for batch_size in sorted({c["batch_size"] for c in plain_configs}):
        note = large_batch_note(batch_size, dataset.sizes()["train"])
        if note:
            log.warning("%s", note)

    # 3. Resume: reuse finished runs of an earlier attempt in this sweep directory.
    runfiles.check_writable(sweep_dir)
    with SweepLock(sweep_dir):
        reused, to_run = find_finished(jobs, sweep_dir)
        write_sweep_file(sweep_dir, jobs, config)
        for job in to_run:
            write_hydra_files(sweep_dir / job.subdir, job_configs[job.num], plain_by_num[job.num], job.overrides)
            clear_unfinished_run(sweep_dir / job.subdir)  # left by a worker of an interrupted attempt

        n_workers = worker_count(settings)
        groups = make_groups(to_run, stack=bool(settings["stack"]), max_group_size=int(settings["max_group_size"]),
                             n_workers=n_workers)
        log_plan(jobs, reused, groups, n_workers, settings, sweep_dir)

        summaries = dict(reused)
        if groups:
            blas_threads = settings["blas_threads"] or max(1, (os.cpu_count() or 1) // max(1, min(n_workers, len(groups))))
            save_weights = bool(plain_configs[0]["save_weights"])
            tasks = [make_group_task(group, sweep_dir, plain_by_num, resolved, start_dir, dataset.sha256,
                                     blas_threads, settings, save_weights) for group in groups]
            summaries.update(run_dispatch(groups, tasks, settings, n_workers, jobs, reused, sweep_dir))

    log_summary(jobs, summaries, dataset)
    return job_returns(jobs, job_configs, summaries, sweep_dir)


def compose_jobs(config: DictConfig, hydra_context: Any, job_overrides: Sequence[Sequence[str]],
                 initial_job_idx: int) -> tuple[list[Job], dict[int, DictConfig], dict[int, dict[str, Any]]]:
    """Compose and check every job's config; raise one ConfigError listing every problem."""
    from omegaconf.errors import OmegaConfBaseException
    from hydra.errors import HydraException

    from tfd_sweep import config as schema
    from tfd_sweep.errors import ConfigError

    jobs: list[Job] = []
    job_configs: dict[int, DictConfig] = {}
    plain_by_num: dict[int, dict[str, Any]] = {}
    problems: dict[str, list[int]] = {}
    composer = SweepComposer(config, hydra_context.config_loader)
    for idx, overrides in enumerate(job_overrides):
        num = initial_job_idx + idx
        try:
            job_cfg = composer.compose(overrides, num)
        except (HydraException, OmegaConfBaseException) as exc:
            problems.setdefault(str(exc).splitlines()[0], []).append(num)
            continue
        plain = task_config(job_cfg)
        messages = schema.check_values(plain)
        for message in messages:
            problems.setdefault(message, []).append(num)
        if messages:
            continue
        job_configs[num] = job_cfg
        plain_by_num[num] = plain
        jobs.append(Job(num=num, overrides=tuple(overrides), subdir=str(job_cfg.hydra.sweep.subdir),
                        spec=schema.run_spec(plain)))

    if problems:
        lines = [f"{message} ({'runs' if len(nums) > 1 else 'run'} {', '.join(map(str, nums))})"
                 if len(job_overrides) > 1 else message
                 for message, nums in problems.items()]
        raise ConfigError(f"Invalid sweep: {len(problems)} problem(s) found, nothing was run:\n  "
                          + "\n  ".join(lines))
    return jobs, job_configs, plain_by_num


def task_config(job_cfg: DictConfig) -> dict[str, Any]:
    """Return a job's config as plain data without Hydra's section."""
    raw = OmegaConf.to_container(job_cfg, resolve=False)
    raw.pop("hydra", None)
    return OmegaConf.to_container(OmegaConf.create(raw), resolve=True)


def find_finished(jobs: Sequence[Job], sweep_dir: Path) -> tuple[dict[int, dict[str, Any]], list[Job]]:
    """Split jobs into the ones finished earlier in sweep_dir (ok or diverged) and the rest.

    Raises UserError when a run directory contains a run with other overrides, because the sweep
    directory then belongs to another sweep and training would overwrite its results.
    """
    from tfd_sweep.runfiles import REUSABLE_STATUSES, read_result
    from tfd_sweep.worker import summarize

    reused: dict[int, dict[str, Any]] = {}
    to_run: list[Job] = []
    conflicts: list[str] = []
    for job in jobs:
        record = read_result(sweep_dir / job.subdir)
        if record is None:
            to_run.append(job)
        elif list(record.get("overrides", [])) != list(job.overrides):
            conflicts.append(f"{job.subdir}/ holds a run of {' '.join(record.get('overrides', []))!r}, "
                             f"not {' '.join(job.overrides)!r}")
        elif record.get("status") in REUSABLE_STATUSES:
            reused[job.num] = summarize(job.num, record)
        else:
            to_run.append(job)
    if conflicts:
        raise UserError(
            f"Sweep directory {sweep_dir} belongs to a different sweep: " + "; ".join(conflicts[:3])
            + (f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else "")
            + ". Nothing was overwritten. Choose a new directory with hydra.sweep.dir=... or drop it to get a "
              "fresh one."
        )
    return reused, to_run


class SweepLock:
    """An exclusive lock on a file in the sweep directory, so two sweeps never write into one directory.

    The lock is an flock(2) lock, which the kernel releases when its process ends, however it
    ends, so a killed sweep leaves at most an unlocked file behind. The file contains the
    owner's process id, used only in the error message.
    """

    def __init__(self, sweep_dir: Path) -> None:
        self.path = sweep_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "SweepLock":
        import fcntl

        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = self._owner()
                if owner == os.getpid():
                    return self  # locked by this process already, before Hydra started
                raise UserError(f"Another sweep{f' (process {owner})' if owner else ''} is writing into "
                                f"{self.path.parent}. Wait for it to finish, or choose another directory with "
                                f"hydra.sweep.dir=...") from None
            # The owner before us may have removed the file between our open and our lock:
            # then we hold a lock on a deleted file and must lock the new one instead.
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def clear_unfinished_run(run_dir: Path) -> None:
    """Remove the in-flight marker and half-written temporary files of a run that has no result."""
    from tfd_sweep.runfiles import remove_temporary_files
    from tfd_sweep.worker import RUNNING_MARKER

    (run_dir / RUNNING_MARKER).unlink(missing_ok=True)
    remove_temporary_files(run_dir)


def swept_keys(job_overrides: Sequence[Sequence[str]]) -> list[str]:
    """Return the keys whose value differs between jobs, in command-line order."""
    values: dict[str, set[str]] = {}
    order: list[str] = []
    for overrides in job_overrides:
        for override in overrides:
            key, _, value = override.partition("=")
            key = key.lstrip("+~")
            if key not in values:
                values[key] = set()
                order.append(key)
            values[key].add(value)
    return [key for key in order if len(values[key]) > 1]


def sweep_command(config: DictConfig) -> str:
    """Return the command that starts this sweep, rebuilt from Hydra's record of the overrides."""
    task = list(config.hydra.overrides.task)
    return "python -m tfd_sweep -m " + " ".join(shlex.quote(o) for o in task)


def write_sweep_file(sweep_dir: Path, jobs: Sequence[Job], config: DictConfig) -> None:
    import json

    from tfd_sweep.runfiles import write_text

    record = {
        "command": sweep_command(config),
        "argv": list(sys.argv),
        "swept_keys": swept_keys([job.overrides for job in jobs]),
        "jobs": [{"num": job.num, "dir": job.subdir, "overrides": list(job.overrides)} for job in jobs],
    }
    write_text(sweep_dir / SWEEP_FILE, json.dumps(record, indent=2) + "\n")


def write_hydra_files(run_dir: Path, job_cfg: DictConfig, plain: dict[str, Any], overrides: Sequence[str]) -> None:
    """Write the .hydra/ folder Hydra writes for its own jobs: config, hydra config, overrides."""
    import yaml

    from tfd_sweep.runfiles import write_text

    # PyYAML's C dumper on plain data is about ten times faster than OmegaConf.to_yaml, which
    # matters for sweeps of hundreds of runs.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    hydra_plain = {"hydra": OmegaConf.to_container(job_cfg.hydra, resolve=False, enum_to_str=True)}
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    write_text(hydra_dir / "config.yaml", yaml.dump(plain, Dumper=dumper, sort_keys=False))
    write_text(hydra_dir / "hydra.yaml", yaml.dump(hydra_plain, Dumper=dumper, sort_keys=False))
    write_text(hydra_dir / "overrides.yaml", yaml.dump(list(overrides), Dumper=dumper, sort_keys=False))


def worker_count(settings: dict[str, Any]) -> int:
    cores = os.cpu_count() or 1
    if settings["backend"] == "dask":
        return int(settings["n_workers"] or (cores if settings["n_jobs"] == -1 else settings["n_jobs"]))
    return cores if settings["n_jobs"] == -1 else int(settings["n_jobs"])


def log_plan(jobs: Sequence[Job], reused: dict[int, Any], groups: Sequence[Group], n_workers: int,
             settings: dict[str, Any], sweep_dir: Path) -> None:
    to_run = sum(len(g.jobs) for g in groups)
    log.info("sweep of %d runs into %s", len(jobs), sweep_dir)
    if reused:
        log.info("reusing %d runs finished earlier in this directory; %d left to train", len(reused), to_run)
    if not groups:
        log.info("nothing to train: every run has finished")
        return
    costs = [g.cost for g in groups]
    total = sum(costs)
    log.info("plan: %d runs in %d groups on %d %s workers (stacking %s)", to_run, len(groups), n_workers,
             settings["backend"], "on" if settings["stack"] else "off")
    # A group is flagged when it costs more than twice an even share of the work.
    expensive = [g for g in groups if len(groups) > 2 and g.cost > 2 * total / len(groups)]
    for group in groups[:5]:
        spec = group.jobs[0].spec
        nums = ", ".join(f"#{job.num}" for job in group.jobs[:6]) + (", ..." if len(group.jobs) > 6 else "")
        flag = "  <- expensive" if group in expensive else ""
        log.info("  %s %s: batch_size=%d num_hiddens=%s num_epochs=%d, %.0f%% of the work%s",
                 "runs" if len(group.jobs) > 1 else "run", nums, spec.batch_size, list(spec.num_hiddens),
                 spec.num_epochs, 100 * group.cost / total, flag)
    if len(groups) > 5:
        log.info("  ... and %d smaller groups", len(groups) - 5)
    if any(g.jobs[0].spec.batch_size == 1 for g in groups):
        log.info("batch_size=1 runs take 3374 steps per epoch and dominate the sweep's time")


def make_group_task(group: Group, sweep_dir: Path, plain_by_num: dict[int, dict[str, Any]], data_path: str | None,
                    start_dir: Path, sha256: str, blas_threads: int, settings: dict[str, Any],
                    save_weights: bool) -> Any:
    from tfd_sweep.worker import GroupTask, RunTask

    runs = tuple(RunTask(num=job.num, overrides=job.overrides, run_dir=str(sweep_dir / job.subdir), spec=job.spec,
                         config=plain_by_num[job.num]) for job in group.jobs)
    return GroupTask(runs=runs, data_path=data_path, start_dir=str(start_dir), data_sha256=sha256,
                     blas_threads=blas_threads, kernel=settings["kernel"], backend=settings["backend"],
                     save_weights=save_weights)


class Terminated(KeyboardInterrupt):
    """SIGTERM during a sweep (kill, a batch system's time limit): handled like Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def run_dispatch(groups: Sequence[Group], tasks: Sequence[Any], settings: dict[str, Any], n_workers: int,
                 jobs: Sequence[Job], reused: dict[int, Any], sweep_dir: Path) -> dict[int, dict[str, Any]]:
    """Dispatch the groups; on Ctrl-C or SIGTERM keep what finished, write the partial report and exit.

    Without the SIGTERM handler the main process would die at once and leave its workers
    training on, unseen, into the sweep directory.
    """
    import signal
    import threading

    from tfd_sweep.dispatch import dispatch

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return dispatch(groups, tasks, settings, n_workers, float(settings["progress_interval"]),
                        swept=swept_keys([job.overrides for job in jobs]))
    except KeyboardInterrupt as exc:
        stopped_by = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        _stop_interrupted(jobs, sweep_dir, stopped_by)
        sys.exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_interrupted(jobs: Sequence[Job], sweep_dir: Path, stopped_by: str) -> None:
    """Log what an interrupted sweep kept and left, and write its partial report."""
    from tfd_sweep.runfiles import read_result

    finished = [job for job in jobs if read_result(sweep_dir / job.subdir) is not None]
    missing = [job for job in jobs if job not in finished]
    for job in missing:
        clear_unfinished_run(sweep_dir / job.subdir)  # its worker was stopped with the pool
    log.error("interrupted by %s: %d of %d runs finished and are kept; %d did not run: %s", stopped_by,
              len(finished), len(jobs), len(missing),
              ", ".join(f"#{job.num}" for job in missing[:20]) + (" ..." if len(missing) > 20 else ""))
    try:
        _write_partial_report(sweep_dir)
    except KeyboardInterrupt:
        log.error("partial report skipped; rebuild it with: python -m tfd_sweep.report %s", sweep_dir)
    log.error("to finish the sweep, run the same command again with hydra.sweep.dir=%s", sweep_dir)


def _write_partial_report(sweep_dir: Path) -> None:
    try:
        from tfd_sweep import report
    except ImportError:
        return
    try:
        report.build_report(sweep_dir)
        log.info("partial report written to %s", sweep_dir / "report.html")
    except Exception as exc:  # noqa: BLE001 - the runs are safe on disk; the report can be rebuilt
        log.error("could not write the partial report (%s); rebuild it with: python -m tfd_sweep.report %s", exc,
                  sweep_dir)


def log_summary(jobs: Sequence[Job], summaries: dict[int, dict[str, Any]], dataset: Any) -> None:
    from tfd_sweep.dispatch import run_label

    swept = swept_keys([job.overrides for job in jobs])
    counts = Counter(summary["status"] for summary in summaries.values())
    not_run = len(jobs) - len(summaries)
    log.info("sweep finished: %d ok, %d diverged, %d failed%s", counts.get("ok", 0), counts.get(STATUS_DIVERGED, 0),
             counts.get(STATUS_FAILED, 0), f", {not_run} not run" if not_run else "")
    for job in jobs:
        summary = summaries.get(job.num)
        if summary is not None and summary["status"] == STATUS_FAILED:
            log.error("  failed #%d %s: %s", job.num, run_label(job.overrides, swept), summary["error"])
    if dataset.synthetic:
        log.warning("These runs trained on the built-in synthetic faces, not the course data. "
                    "Point data.path at toronto_face.npz for real results.")


def job_returns(jobs: Sequence[Job], job_configs: dict[int, DictConfig], summaries: dict[int, dict[str, Any]],
                sweep_dir: Path) -> list[Any]:
    """Return one Hydra JobReturn per job, each marked completed with the run's summary as its value.

    Failed runs are not marked failed, because Hydra's sweeper raises at the first failed job,
    before the report callback runs. The callback reads the run directories and sets the exit code.
    """
    from hydra.core.utils import JobReturn, JobStatus

    returns = []
    for job in jobs:
        cfg = job_configs[job.num]
        ret = JobReturn(overrides=list(job.overrides), cfg=cfg, hydra_cfg=None,
                        working_dir=str(sweep_dir / job.subdir), task_name=str(cfg.hydra.job.name),
                        status=JobStatus.COMPLETED)
        ret.return_value = summaries.get(job.num, {"num": job.num, "status": STATUS_NOT_RUN})
        returns.append(ret)
    return returns

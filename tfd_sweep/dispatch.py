"""Run groups of runs on joblib workers (loky processes, or a Dask cluster) and follow them.

Each group is one joblib task, and results arrive as groups finish, in any order. Each run is
logged when its group starts and when it ends. A progress line shows the sweep as a whole.

Failures are contained at three levels. A run that raises is recorded by the worker, and the
sweep goes on. A worker process that dies (killed, out of memory) fails the runs it was
training, and the runs other workers had in flight are trained again in a fresh pool. Ctrl-C
stops the workers, keeps every finished run, and leaves the rest for a resumed sweep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from tfd_sweep.grouping import Group
from tfd_sweep.metrics import STATUS_FAILED
from tfd_sweep.progress import SweepProgress

log = logging.getLogger("tfd_sweep.launcher")


class WorkerDiedError(RuntimeError):
    """The process training a run ended before the run finished (killed by a signal, out of memory)."""


def run_label(overrides: Sequence[str], swept: Sequence[str]) -> str:
    """Return a run's overrides of the swept keys, such as "eps=0.1 momentum=0.9", for log lines.

    A sweep without swept keys (one run) shows every override.
    """
    shown = [o for o in overrides if o.partition("=")[0].lstrip("+~") in swept]
    return " ".join(shown or overrides)


def run_indexed(index: int, task: Any) -> tuple[int, list[dict[str, Any]]]:
    """Worker entry point: train group `index` and return its index with the run summaries."""
    from tfd_sweep.worker import run_group

    return index, run_group(task)


class WorkerDeathWatch:
    """Tell which worker process died first, from the pids that in-flight runs record.

    loky kills every worker of its pool once one dies, so the pool's error does not name the
    worker whose run was lost. This thread waits on a pidfd (Linux 5.3+) of each worker that has
    a run in flight and records the first to exit. Its runs are failed, and the other in-flight
    runs are retried.
    """

    def __init__(self, run_dirs: dict[int, list[Path]]) -> None:
        self.run_dirs = run_dirs              # group index -> its run directories
        self.in_flight: set[int] = set()      # group indexes dispatched and not yet returned
        self.first_dead: set[int] = set()
        self.enabled = hasattr(os, "pidfd_open")
        self._fds: dict[int, int] = {}        # pid -> pidfd
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="tfd-sweep-worker-watch", daemon=True)

    def __enter__(self) -> "WorkerDeathWatch":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        for fd in self._fds.values():
            os.close(fd)

    def dispatched(self, index: int) -> None:
        with self._lock:
            self.in_flight.add(index)

    def returned(self, index: int) -> None:
        with self._lock:
            self.in_flight.discard(index)

    def pid_of(self, index: int) -> int | None:
        from tfd_sweep.worker import RUNNING_MARKER

        for run_dir in self.run_dirs[index]:
            try:
                return int((run_dir / RUNNING_MARKER).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return None

    def _watch(self) -> None:
        while not self._stop.is_set() and not self.first_dead:
            with self._lock:
                indexes = list(self.in_flight)
            for index in indexes:
                pid = self.pid_of(index)
                if pid is not None and pid not in self._fds and pid != os.getpid():
                    try:
                        self._fds[pid] = os.pidfd_open(pid)
                    except OSError:
                        pass
            if not self._fds:
                time.sleep(0.1)
                continue
            readable, _, _ = select.select(list(self._fds.values()), [], [], 0.1)
            if readable:
                self.first_dead = {pid for pid, fd in self._fds.items() if fd in readable}


@contextlib.contextmanager
def parallel_backend(settings: dict[str, Any], n_workers: int) -> Iterator[Any]:
    """Yield a joblib Parallel factory for the configured backend (starting Dask when asked)."""
    import joblib

    if settings["backend"] != "dask":
        yield lambda: joblib.Parallel(n_jobs=n_workers, backend="loky", return_as="generator_unordered",
                                      pre_dispatch="n_jobs", batch_size=1)
        return

    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        from tfd_sweep.errors import UserError

        raise UserError("launcher.backend=dask needs Dask: pip install -e '.[dask]' (dask and distributed).") from exc

    if settings["address"]:
        log.info("connecting to the Dask scheduler at %s", settings["address"])
        client = Client(settings["address"], timeout="30s")
        cluster = None
    else:
        log.info("starting a local Dask cluster of %d worker processes", n_workers)
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        client = Client(cluster)
    try:
        with joblib.parallel_config(backend="dask"):
            yield lambda: joblib.Parallel(n_jobs=n_workers, return_as="generator_unordered",
                                          pre_dispatch="n_jobs", batch_size=1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def dispatch(groups: Sequence[Group], tasks: Sequence[Any], settings: dict[str, Any], n_workers: int,
             interval: float, swept: Sequence[str] = ()) -> dict[int, dict[str, Any]]:
    """Train every group; return a summary per run number. Stops early after max_failures failures.

    Log lines name each run by its overrides of the swept keys.
    """
    from joblib import delayed

    total_cost = sum(group.cost for group in groups)
    progress = SweepProgress(total=sum(len(g.jobs) for g in groups), total_cost=total_cost, interval=interval)
    summaries: dict[int, dict[str, Any]] = {}
    max_failures = settings["max_failures"]
    state = {"failures": 0, "stop": False}
    pending = list(range(len(groups)))
    run_dirs = {i: [Path(run.run_dir) for run in task.runs] for i, task in enumerate(tasks)}
    lock = threading.Lock()

    def say(level: int, message: str, *args: Any) -> None:
        with lock:
            progress.clear()
            log.log(level, message, *args)
            progress.show(force=False)

    with parallel_backend(settings, n_workers) as make_parallel:
        while pending:
            with WorkerDeathWatch(run_dirs) as watch:

                def calls() -> Iterator[Any]:
                    for index in list(pending):
                        if state["stop"]:
                            return
                        watch.dispatched(index)
                        for job in groups[index].jobs:
                            say(logging.INFO, "#%d start: %s%s", job.num, run_label(job.overrides, swept),
                                f" (stacked, group of {len(groups[index].jobs)})" if len(groups[index].jobs) > 1 else "")
                        with lock:
                            progress.started(len(groups[index].jobs))
                        yield delayed(run_indexed)(index, tasks[index])

                try:
                    for index, results in make_parallel()(calls()):
                        watch.returned(index)
                        pending.remove(index)
                        failed = 0
                        for summary in results:
                            summaries[summary["num"]] = summary
                            failed += summary["status"] == STATUS_FAILED
                            say(*_end_line(summary, groups[index], swept))
                        with lock:
                            progress.finished(len(results), failed, groups[index].cost)
                        state["failures"] += failed
                        if max_failures is not None and state["failures"] >= max_failures and not state["stop"]:
                            state["stop"] = True
                            say(logging.ERROR, "%d runs failed (launcher.max_failures=%d): no new runs start; "
                                "waiting for the runs in flight", state["failures"], max_failures)
                    if state["stop"]:
                        break
                except KeyboardInterrupt:
                    progress.close()
                    raise
                except Exception as exc:  # noqa: BLE001 - a worker died or the cluster failed
                    lost = _handle_pool_failure(exc, watch, groups, tasks, pending, summaries, say, swept)
                    with lock:
                        progress.finished(lost, lost, 0.0)
                        progress.running = 0
                    state["failures"] += lost
                    if max_failures is not None and state["failures"] >= max_failures:
                        state["stop"] = True
                        break
    progress.close()
    return summaries


def _end_line(summary: dict[str, Any], group: Group, swept: Sequence[str]) -> tuple[Any, ...]:
    """Return the log level, format and arguments of a run's end line."""
    job = next(j for j in group.jobs if j.num == summary["num"])
    overrides = run_label(job.overrides, swept)
    num = job.num
    if summary["status"] == STATUS_FAILED:
        return logging.ERROR, "#%d failed: %s: %s", num, overrides, summary["error"]
    ce = summary.get("valid_ce")
    acc = summary.get("valid_acc")
    metric = (f"valid_ce {ce:.4f} valid_acc {acc:.3f}" if ce is not None and acc is not None
              else "valid_ce non-finite")
    status = summary["status"]
    if status == "diverged":
        status = f"diverged at epoch {summary.get('diverged_epoch')}"
    return logging.INFO, "#%d %s: %s, %s (%.1f s of training)", num, overrides, status, metric, summary.get("wall_time") or 0.0


def _handle_pool_failure(exc: Exception, watch: WorkerDeathWatch, groups: Sequence[Group], tasks: Sequence[Any],
                         pending: list[int], summaries: dict[int, dict[str, Any]], say: Any,
                         swept: Sequence[str]) -> int:
    """Record the runs lost with a dead worker as failed; leave the other in-flight runs pending."""
    import datetime as dt

    from tfd_sweep import runfiles
    from tfd_sweep.worker import RUNNING_MARKER, summarize

    in_flight = [i for i in pending if i in watch.in_flight]
    dead_pids = watch.first_dead
    if dead_pids:
        victims = [i for i in in_flight if watch.pid_of(i) in dead_pids]
    else:
        victims = in_flight  # without a pidfd the dead worker is unknown, so every run in flight fails
    say(logging.ERROR, "a worker process died (%s); %d run(s) it was training are recorded as failed, "
        "%d other run(s) in flight will be trained again", _first_line(exc),
        sum(len(groups[i].jobs) for i in victims), sum(len(groups[i].jobs) for i in in_flight if i not in victims))
    lost = 0
    for index in victims:
        pid = watch.pid_of(index)
        for run in tasks[index].runs:
            error = WorkerDiedError(
                f"the worker process{f' {pid}' if pid else ''} training this run died (killed by a signal or "
                f"out of memory) before the run finished; rerun the sweep into the same directory to retry it"
            )
            record = runfiles.write_failure(Path(run.run_dir), config=run.config, overrides=run.overrides,
                                            job_num=run.num, exc=error, started=dt.datetime.now())
            (Path(run.run_dir) / RUNNING_MARKER).unlink(missing_ok=True)
            runfiles.remove_temporary_files(Path(run.run_dir))
            summaries[run.num] = summarize(run.num, record)
            say(logging.ERROR, "#%d failed: %s: %s", run.num, run_label(run.overrides, swept), record["error"])
            lost += 1
        pending.remove(index)
    return lost


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"

"""Fault injection: each test injects one real fault into the real `python -m tfd_sweep` command.

Sweeps run as subprocesses in their own session, so that a test can signal the main process or
one worker, and can kill whatever is left of the session when it fails. Runs are kept short
(batch_size=1 takes 1 to 4 s per epoch on 3374 images), so that the whole file runs in a few
minutes; the tests that start several sweeps are also marked slow.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from conftest import FER_FILE, tfd_env
from data_faults import SMALL_SIZES, small_arrays, write_npz, write_pickled, write_truncated

pytestmark = pytest.mark.faults

# Settings shared by the sweeps below: two workers, no gradient check (it adds seconds per run).
SWEEP_SETTINGS = ("launcher.n_jobs=2", "check_grad=false")
# Runs of 2 to 8 seconds, each trained alone, so that a test can catch runs in flight.
SLOW_RUNS = ("batch_size=1", "num_epochs=2", "launcher.stack=false")
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_USER_ERROR = 2


# --- data and running the command ---------------------------------------------------------------


@pytest.fixture(scope="session")
def course_file(tmp_path_factory) -> Path:
    """Return the real data file when present, else the built-in synthetic faces saved as a course file.

    CI machines do not have the real file, and the sweeps below must run there too. A saved
    file loads in a fraction of a second, where generating the faces takes seconds per process.
    """
    if FER_FILE.is_file():
        return FER_FILE
    from tfd_sweep.synthetic import make_synthetic_dataset

    dataset = make_synthetic_dataset()
    arrays = {}
    for split in ("train", "valid", "test"):
        arrays[f"inputs_{split}"] = np.round(getattr(dataset, f"x_{split}") * 255).astype(np.uint8)
        arrays[f"target_{split}"] = getattr(dataset, f"y_{split}")
    path = tmp_path_factory.mktemp("data") / "synthetic_faces.npz"
    np.savez(path, **arrays)
    return path


class Command:
    """A `python -m tfd_sweep` process started in its own session, with its output in a log file."""

    def __init__(self, args: list[str], cwd: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-m", "tfd_sweep", *args], cwd=cwd, env=tfd_env(),
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def kill_session(self) -> None:
        """Kill every process left in the command's session (the main process and its workers)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._log.close()


@pytest.fixture
def start_tfd(tmp_path: Path):
    """Call as start_tfd(args, name) to start the real command in tmp_path without waiting."""
    started: list[Command] = []

    def start(args: list[str], name: str = "sweep") -> Command:
        command = Command(args, tmp_path, tmp_path / f"{name}.log")
        started.append(command)
        return command

    yield start
    for command in started:
        command.kill_session()


def sweep_args(sweep_dir: Path, data_file: Path | str, *overrides: str) -> list[str]:
    return ["-m", *overrides, *SWEEP_SETTINGS, f"data.path={data_file}", f"hydra.sweep.dir={sweep_dir}"]


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def wait_for(condition: Callable[[], Any], timeout: float, command: Command | None, what: str) -> Any:
    """Poll condition until it returns a true value; fail with the command's output after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if command is not None and command.proc.poll() is not None:
            pytest.fail(f"the command exited ({command.proc.returncode}) before {what}:\n{command.output()}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}:\n{command.output() if command else ''}")


def descendants(pid: int) -> set[int]:
    """Return the process ids of every child, grandchild, ... of pid, read from /proc."""
    parents: dict[int, int] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat_file.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Return True while pid runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --- reading a sweep directory -----------------------------------------------------------------


def finished_runs(sweep_dir: Path) -> list[str]:
    return sorted(path.parent.name for path in sweep_dir.glob("*/result.json"))


def runs_in_flight(sweep_dir: Path) -> list[str]:
    return sorted(path.parent.name for path in sweep_dir.glob("*/.running")
                  if not (path.parent / "result.json").exists())


def planned_runs(sweep_dir: Path) -> list[str]:
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    return sorted(job["dir"] for job in sweep["jobs"])


def read_record(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "result.json").read_text())


def digests(run_dir: Path) -> dict[str, str]:
    return {str(path.relative_to(run_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(run_dir.rglob("*")) if path.is_file()}


def temporary_files(directory: Path) -> list[Path]:
    """Return the leftovers of interrupted atomic writes (runfiles writes .<name>.<random>.tmp)."""
    return sorted(directory.rglob(".*.tmp"))


def results_table(sweep_dir: Path) -> dict[str, dict[str, str]]:
    with open(sweep_dir / "results.csv", newline="", encoding="utf-8") as file:
        return {row["job_num"]: row for row in csv.DictReader(file)}


def started_runs(output: str) -> set[str]:
    return set(re.findall(r"#(\d+) start:", output))


# --- 1. Ctrl-C -----------------------------------------------------------------------------------


# (signal, sent to, exit code, name in the log): kill -INT, Ctrl-C in a terminal (the whole
# foreground process group), and kill or a batch system's time limit.
INTERRUPTS = {
    "SIGINT to main process": (signal.SIGINT, "main", EXIT_INTERRUPTED, "Ctrl-C"),
    "SIGINT to process group": (signal.SIGINT, "group", EXIT_INTERRUPTED, "Ctrl-C"),
    "SIGTERM to main process": (signal.SIGTERM, "main", EXIT_TERMINATED, "SIGTERM"),
}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", list(INTERRUPTS))
def test_interrupt_keeps_finished_runs_and_resumes(tmp_path, course_file, start_tfd, tfd, case):
    signum, target, exit_code, stopped_by = INTERRUPTS[case]
    sweep_dir = tmp_path / "sweep"
    args = sweep_args(sweep_dir, course_file, "eps=0.01,0.02,0.03,0.04,0.05,0.06", *SLOW_RUNS)
    sweep = start_tfd(args)
    wait_for(lambda: finished_runs(sweep_dir) and runs_in_flight(sweep_dir), 180, sweep,
             "one run finished and another in flight")
    kept = {name: digests(sweep_dir / name) for name in finished_runs(sweep_dir)}
    workers = descendants(sweep.proc.pid)
    assert workers, "the sweep has no worker processes"

    if target == "main":
        sweep.proc.send_signal(signum)
    else:
        os.killpg(sweep.proc.pid, signum)
    tic = time.monotonic()
    code = sweep.wait(timeout=60)
    output = sweep.output()
    assert code == exit_code, output
    assert time.monotonic() - tic < 30, output
    wait_for(lambda: not any(alive(pid) for pid in workers), 10, None, f"workers {sorted(workers)} to end")
    assert "Traceback" not in output

    # Finished runs are intact; every other run left nothing a resumed sweep could mistake for a result.
    finished = finished_runs(sweep_dir)
    not_run = sorted(set(planned_runs(sweep_dir)) - set(finished), key=int)
    assert set(kept) <= set(finished)
    for name, digest in kept.items():
        assert digests(sweep_dir / name) == digest
    for name in finished:
        assert read_record(sweep_dir / name)["status"] == "ok"
    assert not_run
    assert temporary_files(sweep_dir) == []
    assert list(sweep_dir.glob("*/.running")) == []

    # The log and the partial report name the runs that did not run.
    assert f"interrupted by {stopped_by}: {len(finished)} of 6 runs finished and are kept; {len(not_run)} did not " \
           f"run: {', '.join('#' + run for run in not_run)}" in output
    assert f"hydra.sweep.dir={sweep_dir}" in output
    assert (sweep_dir / "report.html").is_file()
    table = results_table(sweep_dir)
    assert {num for num, row in table.items() if row["status"] == "not run"} == set(not_run)

    # The same command again trains only the runs that did not finish.
    resumed = tfd(args, tmp_path)
    resumed_output = output_of(resumed)
    assert resumed.returncode == 0, resumed_output
    assert f"reusing {len(finished)} runs finished earlier" in resumed_output
    assert started_runs(resumed_output) == set(not_run)
    assert finished_runs(sweep_dir) == planned_runs(sweep_dir)
    for name, digest in kept.items():
        assert digests(sweep_dir / name) == digest


# --- 2. a worker killed --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_of_worker_fails_only_its_run(tmp_path, course_file, start_tfd):
    sweep_dir = tmp_path / "sweep"
    # Three epochs leave a few seconds between the kill and the end of the victim's run.
    sweep = start_tfd(sweep_args(sweep_dir, course_file, "eps=0.01,0.02,0.03,0.04", "batch_size=1", "num_epochs=3",
                                 "launcher.stack=false"))
    wait_for(lambda: len(runs_in_flight(sweep_dir)) >= 2, 180, sweep, "two runs in flight")
    time.sleep(0.3)  # the launcher watches a worker from its first look at the run's .running marker
    victim = runs_in_flight(sweep_dir)[0]
    pid = int((sweep_dir / victim / ".running").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    assert not (sweep_dir / victim / "result.json").exists(), "the victim's run ended before the kill"

    code = sweep.wait(timeout=240)
    output = sweep.output()
    assert code != 0, output
    assert "Traceback" not in output
    assert "a worker process died" in output
    assert finished_runs(sweep_dir) == planned_runs(sweep_dir)
    for name in planned_runs(sweep_dir):
        record = read_record(sweep_dir / name)
        if name == victim:
            assert record["status"] == "failed"
            assert f"worker process {pid} training this run died" in record["error"]
            assert f"#{victim} failed:" in output
        else:
            assert record["status"] == "ok", record["error"]
    assert list(sweep_dir.glob("*/.running")) == []
    assert temporary_files(sweep_dir) == []
    assert f"1 failed, 0 not run" in output


# --- 3. two sweeps at once -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_simultaneous_sweeps_write_separate_dirs(tmp_path, course_file, start_tfd):
    """Two sweeps started together into the default location, distinguished by their seed."""
    common = ["-m", "eps=0.01,0.1", "num_epochs=1", *SWEEP_SETTINGS, f"data.path={course_file}"]
    sweeps = {seed: start_tfd([*common, f"seed={seed}"], f"seed{seed}") for seed in (1, 2)}
    for sweep in sweeps.values():
        assert sweep.wait(timeout=240) == 0, sweep.output()

    umask = os.umask(0o022)
    os.umask(umask)
    sweep_dirs = sorted((tmp_path / "outputs" / "sweeps").iterdir())
    assert len(sweep_dirs) == 2
    seeds = set()
    for sweep_dir in sweep_dirs:
        record = json.loads((sweep_dir / "sweep.json").read_text())
        seed = int(re.search(r"seed=(\d)", record["command"]).group(1))
        seeds.add(seed)
        assert str(sweep_dir) in sweeps[seed].output()
        assert f"seed={seed}" in (sweep_dir / "multirun.yaml").read_text()
        assert finished_runs(sweep_dir) == ["0", "1"]
        for name in ("0", "1"):
            run = read_record(sweep_dir / name)
            assert run["config"]["seed"] == seed
            assert f"seed={seed}" in run["overrides"]
            # Atomic writes keep the mode a plain open() gives, so results stay readable by others.
            assert stat.S_IMODE((sweep_dir / name / "result.json").stat().st_mode) == 0o666 & ~umask
        assert not (sweep_dir / ".sweep.lock").exists()
    assert seeds == {1, 2}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_second_sweep_into_busy_dir_is_rejected(tmp_path, course_file, start_tfd, tfd):
    sweep_dir = tmp_path / "sweep"
    first = start_tfd(sweep_args(sweep_dir, course_file, "eps=0.01,0.02,0.03,0.04", *SLOW_RUNS))
    wait_for(lambda: (sweep_dir / "sweep.json").exists(), 120, first, "the first sweep to start")

    second = tfd(sweep_args(sweep_dir, course_file, "eps=0.5,0.6", "num_epochs=1"), tmp_path)
    message = output_of(second)
    assert second.returncode == EXIT_USER_ERROR, message
    assert f"Another sweep (process {first.proc.pid}) is writing into {sweep_dir}" in message
    assert "Traceback" not in message

    assert first.wait(timeout=240) == 0, first.output()
    assert "eps=0.5" not in (sweep_dir / "multirun.yaml").read_text()
    assert [read_record(sweep_dir / name)["config"]["eps"] for name in planned_runs(sweep_dir)] == \
        [0.01, 0.02, 0.03, 0.04]


# --- 4. unwritable or full output location -------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_output_dir_under_a_file_is_rejected(tmp_path, tfd, key):
    """A path through a regular file fails for root too, unlike a directory without write permission."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a directory\n")
    multirun = ["-m", "eps=0.01,0.1"] if key == "hydra.sweep.dir" else []
    proc = tfd([*multirun, "num_epochs=1", "data.path=builtin", f"{key}={blocker}/out"], tmp_path)
    message = output_of(proc)
    assert proc.returncode == EXIT_USER_ERROR, message
    assert f"{key}={blocker}/out: Output directory {blocker}/out is not writable: Not a directory." in message
    assert "Traceback" not in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


@pytest.fixture
def tmpfs(tmp_path: Path):
    """Call as tmpfs(options) to mount a tmpfs under tmp_path; skip where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.mark.timeout(120)
def test_read_only_output_dir_is_rejected(tmp_path, tfd, tmpfs):
    read_only = tmpfs("size=1m,ro")
    proc = tfd(["-m", "eps=0.01,0.1", "num_epochs=1", "data.path=builtin", f"hydra.sweep.dir={read_only}/sweep"],
               tmp_path)
    message = output_of(proc)
    assert proc.returncode == EXIT_USER_ERROR, message
    assert f"Output directory {read_only}/sweep is not writable: Read-only file system." in message
    assert "Traceback" not in message


# A tmpfs with room for the .hydra files and results but not for weights.npz of a [16, 32] network
# (300 kB).
FULL_DISK = "size=256k"


@pytest.mark.timeout(180)
def test_full_disk_fails_runs_with_os_error(tmp_path, course_file, tfd, tmpfs):
    disk = tmpfs(FULL_DISK)
    sweep_dir = disk / "sweep"
    proc = tfd(sweep_args(sweep_dir, course_file, "eps=0.01,0.1", "num_epochs=1"), tmp_path)
    output = output_of(proc)
    assert proc.returncode != 0, output
    training, _, reporting = output.partition("building the sweep report")
    assert "Traceback" not in training
    for name in ("0", "1"):
        record = read_record(sweep_dir / name)
        assert record["status"] == "failed"
        assert f"Cannot write {sweep_dir / name / 'weights.npz'}: No space left on device." in record["error"]
        assert f"#{name} failed:" in output
        assert not (sweep_dir / name / "weights.npz").exists()
    assert temporary_files(disk) == []
    assert "Traceback" not in reporting
    assert "could not build the sweep report: Cannot write" in reporting
    assert not (sweep_dir / "report.html").exists() or (sweep_dir / "report.html").stat().st_size > 0


@pytest.mark.timeout(180)
def test_full_disk_single_run_exits_with_path(tmp_path, course_file, tfd, tmpfs):
    run_dir = tmpfs(FULL_DISK) / "run"
    proc = tfd(["num_epochs=1", "check_grad=false", f"data.path={course_file}", f"hydra.run.dir={run_dir}"], tmp_path)
    output = output_of(proc)
    assert proc.returncode == EXIT_USER_ERROR, output
    assert f"Cannot write {run_dir / 'weights.npz'}: No space left on device." in output
    assert "Traceback" not in output
    assert not (run_dir / "result.json").exists()
    assert temporary_files(run_dir) == []


# --- 5. divergence -------------------------------------------------------------------------------


def assert_png(path: Path) -> None:
    import matplotlib.pyplot as plt

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    assert plt.imread(path).size > 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_divergent_runs_stop_early_and_are_never_best(tmp_path, course_file, tfd):
    """eps=1.0 at batch size 1 and momentum 0.9: [100, 100] units diverge in the first epoch on the
    real and on the built-in data, where [16, 32] saturates instead (cross-entropy near 5)."""
    sweep_dir = tmp_path / "sweep"
    args = sweep_args(sweep_dir, course_file, "eps=0.01,1.0", "dtype=float64,float32", "batch_size=1", "momentum=0.9",
                      "num_hiddens=[100,100]", "num_epochs=2")
    proc = tfd(args, tmp_path)
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert "Warning" not in output
    assert "overflow" not in output
    assert "Traceback" not in output

    records = {name: read_record(sweep_dir / name) for name in planned_runs(sweep_dir)}
    assert len(records) == 4
    for record in records.values():
        if record["config"]["eps"] == 1.0:
            assert record["status"] == "diverged"
            assert record["diverged_epoch"] == 1
            assert record["metrics"]["epochs_run"] == 1
        else:
            assert record["status"] == "ok"
            assert np.isfinite(record["metrics"]["valid_ce"])

    best_config = (sweep_dir / "best_config.yaml").read_text()
    assert re.search(r"^eps: 0\.01$", best_config, re.MULTILINE), best_config
    assert "eps=0.01" in (sweep_dir / "best_command.txt").read_text()
    for png in [*sweep_dir.glob("*.png"), *sweep_dir.glob("*/curves.png")]:
        assert_png(png)
    assert len(list(sweep_dir.glob("*/curves.png"))) == 4


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_divergent_single_run_stops_early(tmp_path, course_file, tfd):
    run_dir = tmp_path / "run"
    proc = tfd(["eps=1.0", "batch_size=1", "momentum=0.9", "num_hiddens=[100,100]", "num_epochs=3",
                "check_grad=false", f"data.path={course_file}", f"hydra.run.dir={run_dir}"], tmp_path)
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert "run diverged at epoch 1" in output
    assert "Warning" not in output
    assert "overflow" not in output
    record = read_record(run_dir)
    assert record["status"] == "diverged"
    assert record["metrics"]["epochs_run"] == 1
    assert_png(run_dir / "curves.png")


# --- 6. bad data files ---------------------------------------------------------------------------


def _float_pixels(split: str, bad_value: float) -> dict[str, np.ndarray]:
    pixels = small_arrays()[f"inputs_{split}"] / 255.0
    pixels[3, 100] = bad_value
    return {f"inputs_{split}": pixels}


def _labels(split: str, values: list[int]) -> dict[str, np.ndarray]:
    labels = small_arrays()[f"target_{split}"].copy()
    labels[: len(values)] = values
    return {f"target_{split}": labels}


# Each case: a writer of the bad file at `path`, and the fragments the message must contain
# (the key at fault and the fix). The file's own path is checked for every case.
BAD_FILES: dict[str, tuple[Callable[[Path], Any], tuple[str, ...]]] = {
    "missing file": (lambda path: None, ("Data file not found: data.path=", "Check the path")),
    "not a zip": (lambda path: path.write_text("inputs_train,target_train\n1,2\n"),
                  ("not an .npz archive (not a zip file", "save the arrays with np.savez")),
    "truncated": (lambda path: write_truncated(path, 0.5), ("probably truncated", "Copy or download it again")),
    "missing key": (lambda path: write_npz(path, drop=("target_valid",)),
                    ("missing key(s) target_valid", "Save the arrays under these names")),
    "wrong pixel count": (lambda path: write_npz(path, inputs_train=np.zeros((30, 1000), np.uint8)),
                          ("inputs_train has shape (30, 1000)", "Resize the images to 48x48")),
    "one image per column": (lambda path: write_npz(path, inputs_train=small_arrays()["inputs_train"].T.copy()),
                             ("inputs_train has shape (2304, 30), which looks like one image per column",
                              "Store the transpose")),
    "labels 1..7": (lambda path: write_npz(path, target_train=small_arrays()["target_train"] + 1),
                    ("target_train has labels 1..7", "Subtract 1")),
    "labels out of range": (lambda path: write_npz(path, **_labels("valid", [9, -1])),
                            ("target_valid has labels outside 0..6 (found -1, 9)", "0 anger")),
    "NaN pixels": (lambda path: write_npz(path, **_float_pixels("test", np.nan)),
                   ("inputs_test has 1 NaN and 0 infinite pixel values", "Repair or drop those images")),
    "infinite pixels": (lambda path: write_npz(path, **_float_pixels("train", np.inf)),
                        ("inputs_train has 0 NaN and 1 infinite pixel values", "Repair or drop those images")),
    "empty split": (lambda path: write_npz(path, inputs_valid=np.zeros((0, 2304), np.uint8),
                                           target_valid=np.zeros(0, np.int64)),
                    ("inputs_valid is empty", "expected at least one image")),
    "mismatched counts": (lambda path: write_npz(path, target_test=small_arrays()["target_test"][:5]),
                          (f"inputs_test has {SMALL_SIZES['test']} images but target_test has 5 labels",
                           "Store matching arrays")),
}


def check_data_rejected(proc: subprocess.CompletedProcess, path: Path, fragments: tuple[str, ...]) -> str:
    message = output_of(proc)
    assert proc.returncode == EXIT_USER_ERROR, message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    assert message.count("[ERROR]") == 1, message
    assert "Traceback" not in message
    assert "epoch 1/" not in message
    assert " start:" not in message
    return message


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_data_file_stops_single_run(tmp_path, tfd, case):
    write, fragments = BAD_FILES[case]
    path = tmp_path / "toronto_face.npz"
    write(path)
    proc = tfd(["num_epochs=1", f"data.path={path}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    check_data_rejected(proc, path, fragments)
    assert not (tmp_path / "run" / "result.json").exists()


@pytest.mark.timeout(120)
def test_pickled_data_file_is_never_unpickled(tmp_path, tfd):
    path = tmp_path / "toronto_face.npz"
    marker = tmp_path / "unpickled.txt"
    write_pickled(path, marker)
    for multirun in ([], ["-m", "eps=0.01,0.1"]):
        proc = tfd([*multirun, "num_epochs=1", f"data.path={path}"], tmp_path)
        check_data_rejected(proc, path, ("target_train is an object array", "pickles are not loaded",
                                         "Store it as a numeric array"))
        assert not marker.exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["missing file", "labels 1..7", "empty split"])
def test_bad_data_file_stops_sweep_before_launch(tmp_path, tfd, case):
    write, fragments = BAD_FILES[case]
    path = tmp_path / "toronto_face.npz"
    write(path)
    sweep_dir = tmp_path / "sweep"
    proc = tfd(sweep_args(sweep_dir, path, "eps=0.01,0.1", "num_epochs=1"), tmp_path)
    check_data_rejected(proc, path, fragments)
    assert not (sweep_dir / "0").exists()
    assert not (sweep_dir / "sweep.json").exists()


# --- 7. bad configuration ------------------------------------------------------------------------


# Every value rule, as bad override -> the start of its message.
BAD_VALUES = {
    "eps=0": "eps=0.0 is invalid: the learning rate must be > 0. Example: eps=0.01",
    "momentum=1": "momentum=1.0 is invalid: momentum must be in [0, 1)",
    "batch_size=-2": "batch_size=-2 is invalid: batch_size must be >= 1, or -1 for the full training set",
    "num_hiddens=[16,0,4]": "num_hiddens=[16,0,4] is invalid: num_hiddens must list 2 hidden-layer sizes, each >= 1",
    "num_epochs=0": "num_epochs=0 is invalid: num_epochs must be >= 1",
    "dtype=float16": "dtype=float16 is invalid: dtype must be one of float64, float32",
    "max_ce=-1": "max_ce=-1.0 is invalid: the divergence bound on cross-entropy must be > 0",
    "launcher.n_jobs=0": "launcher.n_jobs=0 is invalid: n_jobs must be >= 1, or -1 for all cores",
    "launcher.backend=mpi": "launcher.backend=mpi is invalid: backend must be one of loky, dask",
    "launcher.max_failures=0": "launcher.max_failures=0 is invalid: max_failures must be >= 1, or null",
    "launcher.max_group_size=0": "launcher.max_group_size=0 is invalid: max_group_size must be >= 1",
    "launcher.blas_threads=0": "launcher.blas_threads=0 is invalid: blas_threads must be >= 1, or null",
    "launcher.kernel=cuda": "launcher.kernel=cuda is invalid: kernel must be one of auto, numpy, numba",
    "report.lang=fr": "report.lang=fr is invalid: lang must be one of en, ko",
    "report.metric=loss": "report.metric=loss is invalid: metric must be one of train_ce",
    "report.mode=best": "report.mode=best is invalid: mode must be min or max",
}

# Every type rule of the schema and every unknown-key case, as bad override -> its message.
BAD_KEYS_AND_TYPES = {
    "momentun=0.5": "momentun=0.5: unknown key 'momentun'. Did you mean 'momentum'?",
    "epochs=3": "epochs=3: unknown key 'epochs'. Did you mean 'num_epochs'?",
    "launcher.njobs=2": "launcher.njobs=2: unknown key 'launcher.njobs'. Did you mean 'launcher.n_jobs'?",
    "data=x": "data=x is invalid: data is a section; set one of its keys, such as data.path=...",
    "eps=[0.1,0.01]": "eps=[0.1,0.01] is invalid: eps takes one value, not a list.",
    "eps=0.1,0.01": "eps=0.1,0.01 lists several values, which makes a sweep: add -m",
    "seed=1.5": "seed=1.5 is invalid: seed takes a whole number such as seed=100.",
    "batch_size=abc": "batch_size=abc is invalid: batch_size takes a whole number",
    "momentum=fast": "momentum=fast is invalid: momentum takes a number such as momentum=0.01.",
    "check_grad=maybe": "check_grad=maybe is invalid: check_grad takes true or false.",
    "num_hiddens=16": "num_hiddens=16 is invalid: num_hiddens takes a list of whole numbers",
    "launcher.max_failures=many": "launcher.max_failures=many is invalid: launcher.max_failures takes a whole number",
    "+sweep=optimisation": "+sweep=optimisation: unknown sweep preset 'optimisation'; choose one of hidden, "
                           "optimization, seeds",
}


@pytest.mark.timeout(120)
def test_every_value_rule_reported_at_once(tmp_path, tfd):
    run_dir = tmp_path / "run"
    proc = tfd([*BAD_VALUES, "data.path=builtin", f"hydra.run.dir={run_dir}"], tmp_path)
    message = output_of(proc)
    assert proc.returncode == EXIT_USER_ERROR, message
    for expected in BAD_VALUES.values():
        assert expected in message
    assert message.count(" is invalid: ") == len(BAD_VALUES)
    assert "Traceback" not in message
    assert not (run_dir / "result.json").exists()


@pytest.mark.timeout(120)
def test_every_key_and_type_rule_reported_before_hydra(tmp_path, tfd):
    proc = tfd(list(BAD_KEYS_AND_TYPES), tmp_path)
    message = output_of(proc)
    assert proc.returncode == EXIT_USER_ERROR, message
    assert message.startswith("tfd_sweep: invalid command line:")
    for expected in BAD_KEYS_AND_TYPES.values():
        assert expected in message
    assert "Traceback" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
def test_sweep_override_typo_suggests_key(tmp_path, tfd):
    proc = tfd(["-m", "eps=0.01,0.1", "momentun=0.5,0.9", "hydra.sweeper.params.bach_size=1,10",
                "hydra.sweep.dir=sweep"], tmp_path)
    message = output_of(proc)
    assert proc.returncode == EXIT_USER_ERROR, message
    assert "momentun=0.5,0.9: unknown key 'momentun'. Did you mean 'momentum'?" in message
    assert "hydra.sweeper.params.bach_size=1,10: unknown key 'bach_size'. Did you mean 'batch_size'?" in message
    assert "Traceback" not in message
    assert not (tmp_path / "sweep").exists()


@pytest.mark.timeout(120)
def test_sweep_list_where_number_belongs(tmp_path, tfd):
    proc = tfd(["-m", "eps=[0.1,0.01]", "batch_size=10,[1,2]", "hydra.sweep.dir=sweep"], tmp_path)
    message = output_of(proc)
    assert proc.returncode == EXIT_USER_ERROR, message
    assert "eps=[0.1,0.01] is invalid: eps takes one value, not a list." in message
    assert "python -m tfd_sweep -m eps=a,b,c" in message
    assert "batch_size=10,[1,2] is invalid: batch_size takes one value, not a list." in message
    assert not (tmp_path / "sweep").exists()


@pytest.mark.timeout(120)
def test_whole_grid_checked_before_any_run(tmp_path, tfd):
    sweep_dir = tmp_path / "sweep"
    proc = tfd(sweep_args(sweep_dir, "builtin", "eps=0.01,0", "momentum=0.5,1.0", "num_hiddens=[16,32],[0,4]",
                          "num_epochs=1"), tmp_path)
    message = output_of(proc)
    assert proc.returncode == EXIT_USER_ERROR, message
    assert "Invalid sweep: 3 problem(s) found, nothing was run:" in message
    # Hydra numbers the 8 runs of the grid in command-line order, the last key changing fastest.
    assert "eps=0.0 is invalid: the learning rate must be > 0. Example: eps=0.01 (runs 4, 5, 6, 7)" in message
    assert "momentum=1.0 is invalid: momentum must be in [0, 1), 0 for plain SGD. Example: momentum=0.9 " \
           "(runs 2, 3, 6, 7)" in message
    assert "num_hiddens=[0,4] is invalid" in message
    assert "(runs 1, 3, 5, 7)" in message
    assert "Traceback" not in message
    assert not (sweep_dir / "0").exists()
    assert not (sweep_dir / "sweep.json").exists()


@pytest.mark.timeout(180)
def test_batch_size_above_train_set_trains_full_batch(tmp_path, course_file, tfd):
    """batch_size=5000 on 3374 training images warns and trains exactly as batch_size=-1."""
    sweep_dir = tmp_path / "sweep"
    proc = tfd(sweep_args(sweep_dir, course_file, "batch_size=5000,-1", "num_epochs=2"), tmp_path)
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert ("batch_size=5000 is larger than the 3374 training images: each epoch is one full batch, "
            "the same as batch_size=-1.") in output
    large, full = (read_record(sweep_dir / name) for name in ("0", "1"))
    assert large["config"]["batch_size"] == 5000
    assert large["status"] == full["status"] == "ok"
    assert large["metrics"]["valid_ce"] == pytest.approx(full["metrics"]["valid_ce"], rel=1e-12)

    single = tfd(["batch_size=5000", "num_epochs=1", "check_grad=false", f"data.path={course_file}",
                  f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert single.returncode == 0, output_of(single)
    assert "batch_size=5000 is larger than the 3374 training images" in output_of(single)

"""Measure whole sweeps through the real command: parallel speed-up and launch scale.

    python scripts/bench_sweep.py [--data PATH] [--out FILE]

1. A 4-run sweep (stacking off, so each run is its own task) with launcher.n_jobs=1 and
   launcher.n_jobs=2, run one after the other: wall time of each and their ratio.
2. Launch scale: time from starting the command to the first "start" log line, for sweeps of
   10, 100 and 500 runs (num_epochs=1); the sweep is stopped with SIGINT once training starts.

Prints a Markdown section and writes it to --out when given.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fer2013_tfdformat.npz"


def tfd_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "tfd_sweep", *args]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def timed_sweep(args: list[str], workdir: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(tfd_command(["-m", *args]), cwd=workdir, env=environment(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def time_to_first_start(args: list[str], workdir: Path, timeout: float = 600) -> tuple[float, float]:
    """Return (seconds to the 'checked N runs' line, seconds to the first run's start line)."""
    start = time.perf_counter()
    proc = subprocess.Popen(tfd_command(["-m", *args]), cwd=workdir, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    checked = float("nan")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter() - start
            if re.search(r"checked \d+ runs", line):
                checked = now
            if re.search(r"#\d+ start", line):
                return checked, now
            if now > timeout:
                break
        raise SystemExit("no run started")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="course-format .npz (default: the FER2013 stand-in)")
    parser.add_argument("--epochs", type=int, default=300, help="epochs per run of the 4-run sweep")
    parser.add_argument("--out", type=Path, help="write the Markdown section here")
    options = parser.parse_args()

    data_arg = [f"data.path={options.data}"] if options.data.is_file() else ["data.path=builtin"]
    workdir = Path(tempfile.mkdtemp(prefix="tfd-bench-sweep-"))
    lines = ["## Whole sweeps through the command", "",
             f"`python scripts/bench_sweep.py` on {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, data: {data_arg[0]}.", ""]
    try:
        common = ["eps=0.001,0.01,0.05,0.1", f"num_epochs={options.epochs}", "batch_size=100", "check_grad=false",
                  "launcher.stack=false", *data_arg]
        timed_sweep([*common, "launcher.n_jobs=1", f"hydra.sweep.dir={workdir}/warmup"], workdir)
        serial = timed_sweep([*common, "launcher.n_jobs=1", f"hydra.sweep.dir={workdir}/serial"], workdir)
        parallel = timed_sweep([*common, "launcher.n_jobs=2", f"hydra.sweep.dir={workdir}/parallel"], workdir)
        lines += ["### Parallel speed-up (4 runs, stacking off)", "",
                  "| launcher.n_jobs | wall time (s) |", "|---|---|",
                  f"| 1 | {serial:.1f} |", f"| 2 | {parallel:.1f} |", "",
                  f"n_jobs=2 takes {parallel / serial:.2f}x the wall time of n_jobs=1 "
                  f"({serial / parallel:.2f}x faster), including the fixed cost of starting Python, Hydra and "
                  f"the report.", ""]

        lines += ["### Launch scale (num_epochs=1; time from starting the command)", "",
                  "| runs | all runs composed and checked (s) | first run starts (s) |", "|---|---|---|"]
        for runs, grid in ((10, "eps=" + ",".join(str(0.001 * (i + 1)) for i in range(10))),
                           (100, "eps=" + ",".join(str(0.001 * (i + 1)) for i in range(100))),
                           (500, "eps=" + ",".join(str(0.001 * (i + 1)) for i in range(100)) + " seed=0,1,2,3,4")):
            args = [*grid.split(), "num_epochs=1", "check_grad=false", *data_arg, f"hydra.sweep.dir={workdir}/scale{runs}"]
            checked, first = time_to_first_start(args, workdir)
            lines.append(f"| {runs} | {checked:.1f} | {first:.1f} |")
        lines.append("")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    text = "\n".join(lines)
    print(text)
    if options.out:
        options.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Benchmark tfd_sweep's training against the course's reference loop and the machine's floor.

    python scripts/bench.py [--quick] [--epochs E] [--data PATH] [--out FILE]

Every measurement runs in a fresh process with BLAS limited to one thread, after a warm-up.
"1 proc" rows time one process alone. "2 procs" rows time the same work in two processes at
once, which is how a sweep runs on a 2-core machine. The numbers are seconds per model
per epoch (one run's epoch: the training pass over 3374 images and the validation pass), medians
over the timed epochs. See docs/benchmarks.md for how the grid projection and the floor are
computed.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import queue
import re
import resource
import sys
import threading
import time
import traceback
from pathlib import Path

# Limit BLAS and numba before numpy loads, here and in every spawned worker (workers inherit
# the environment); threadpoolctl limits them again inside each worker.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
for _path in (str(REPO_ROOT), str(SCRIPTS_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "fer2013_tfdformat.npz"

# The optimization grid of the course's question 2 (conf/sweep/optimization.yaml).
BATCH_SIZES = (1, 10, 100, 500, 1000)
GRID_EPS = (0.001, 0.01, 0.1, 0.5, 1.0)
GRID_MOMENTUM = (0.0, 0.5, 0.9)
GRID_EPOCHS = 1000
GROUP_SIZE = len(GRID_EPS) * len(GRID_MOMENTUM)  # runs per batch size, trained as one group
NUM_HIDDENS = (16, 32)
NUM_WORKERS = 2  # processes of the parallel setting: one per core of the benchmark machine

# Hyperparameters of the single-run variants; a run that does not diverge costs the same per
# epoch whatever its eps and momentum.
SINGLE_EPS = 0.01
SINGLE_MOMENTUM = 0.5

# Timed epochs per batch size (after one warm-up epoch): few where an epoch takes seconds.
TIMED_EPOCHS = {1: 2, 10: 3, 100: 5, 500: 5, 1000: 5}
QUICK_TIMED_EPOCHS = {1: 1, 10: 1, 100: 2, 500: 2, 1000: 2}

WORKER_TIMEOUT = 900.0  # seconds one measurement may take before the benchmark gives up on it


# ---------------------------------------------------------------------------------------------
# The cost model
# ---------------------------------------------------------------------------------------------

def count_params(num_inputs: int, num_hiddens: tuple[int, int], num_classes: int) -> int:
    h1, h2 = num_hiddens
    return num_inputs * h1 + h1 + h1 * h2 + h2 + h2 * num_classes + num_classes


def epoch_flops(num_train: int, num_valid: int, num_inputs: int, num_hiddens: tuple[int, int],
                num_classes: int) -> float:
    """Return the matrix-product FLOPs of one run's epoch (multiply and add counted as 2).

    Forward: the three products on the training and validation images. Backward (training
    images only): the three weight gradients and the input gradients of layers 2 and 3; layer 1's
    input gradient is skipped because nothing needs it. Bias adds, ReLU, softmax and the update
    are elementwise and left to the byte count.
    """
    h1, h2 = num_hiddens
    weight_macs = num_inputs * h1 + h1 * h2 + h2 * num_classes
    input_grad_macs = h1 * h2 + h2 * num_classes
    train = num_train * 2 * (2 * weight_macs + input_grad_macs)
    valid = num_valid * 2 * weight_macs
    return float(train + valid)


def update_bytes_per_epoch(num_train: int, batch_size: int, num_params: int, itemsize: int) -> float:
    """Return the bytes the momentum updates of one run's epoch must move at the least.

    Each step reads and writes every weight and its velocity once (4 passes over the
    parameters). A fused update never stores the gradient: at batch size 1, layer 1's gradient
    is an outer product that can be formed on the fly.
    """
    steps = math.ceil(num_train / batch_size)
    return float(steps * 4 * num_params * itemsize)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def load_data(data_path: str | None):
    """Load the data set as a tfd_sweep Dataset (float64 inputs)."""
    from tfd_sweep.data import load_dataset

    dataset = load_dataset(data_path, REPO_ROOT)
    return dataset


def resolve_data_path(requested: str | None) -> str | None:
    """Return the data file to use: the one requested, else the shared real data when present."""
    if requested is not None:
        return str(Path(requested).resolve())
    if DEFAULT_DATA.is_file():
        return str(DEFAULT_DATA)
    return None  # load_dataset then falls back to the built-in synthetic faces


# ---------------------------------------------------------------------------------------------
# Measurements (each runs inside a worker process)
# ---------------------------------------------------------------------------------------------

def _epoch_times_from_stamps(start: float, stamps: list[float]) -> list[float]:
    """Return per-epoch durations from end-of-epoch time stamps, dropping the warm-up epoch."""
    durations = np.diff([start, *stamps])
    return [float(d) for d in durations[1:]]


def measure_reference(task, dataset) -> dict:
    import reference_loop

    stamps: list[float] = []
    start = time.perf_counter()
    reference_loop.train(
        dataset.x_train, dataset.y_train, dataset.x_valid, dataset.y_valid,
        eps=SINGLE_EPS, momentum=SINGLE_MOMENTUM, batch_size=task["batch_size"],
        num_epochs=1 + task["epochs"], num_hiddens=NUM_HIDDENS, seed=0,
        on_epoch=lambda epoch, row: stamps.append(time.perf_counter()),
    )
    return {"epoch_times": _epoch_times_from_stamps(start, stamps), "group_size": 1}


def measure_trainer(task, dataset) -> dict:
    from tfd_sweep.trainer import RunSpec, train

    spec = RunSpec(eps=SINGLE_EPS, momentum=SINGLE_MOMENTUM, batch_size=task["batch_size"],
                   num_epochs=1 + task["epochs"], num_hiddens=NUM_HIDDENS, seed=0,
                   dtype=task["dtype"], check_grad=False)
    stamps: list[float] = []
    start = time.perf_counter()
    result = train(spec, dataset.astype(task["dtype"]),
                   on_epoch=lambda epoch, row: stamps.append(time.perf_counter()))
    return {"epoch_times": _epoch_times_from_stamps(start, stamps), "group_size": 1,
            "statuses": [result.status]}


def grid_specs(batch_size: int, num_epochs: int, dtype: str):
    from tfd_sweep.trainer import RunSpec

    return [RunSpec(eps=eps, momentum=momentum, batch_size=batch_size, num_epochs=num_epochs,
                    num_hiddens=NUM_HIDDENS, seed=0, dtype=dtype, check_grad=False)
            for eps in GRID_EPS for momentum in GRID_MOMENTUM]


def measure_stacked(task, dataset) -> dict:
    """Time train_group on the 15 grid runs of one batch size.

    train_group reports no per-epoch times, so a group trained for 1 + k epochs and the same
    group trained for 1 epoch are both timed: set-up and the final full passes cancel in the
    difference. A run that diverges leaves the stack, so the difference is divided by the
    run-epochs actually trained in epochs 2 .. 1 + k, not by 15 k. Pairs are repeated where
    cheap and the median is taken.
    """
    from tfd_sweep.stacked import train_group

    data = dataset.astype(task["dtype"])
    kernel = task.get("kernel") or "auto"
    timed = task["epochs"]
    repeats = 1 if task["batch_size"] <= 10 else 3
    per_run_epoch = []
    statuses = []
    train_group(grid_specs(task["batch_size"], 1, task["dtype"]), data, kernel=kernel)  # warm-up
    for _ in range(repeats):
        start = time.perf_counter()
        train_group(grid_specs(task["batch_size"], 1, task["dtype"]), data, kernel=kernel)
        short = time.perf_counter() - start
        start = time.perf_counter()
        results = train_group(grid_specs(task["batch_size"], 1 + timed, task["dtype"]), data,
                              kernel=kernel)
        long = time.perf_counter() - start
        # A run that diverges at epoch e is still trained in epoch e.
        run_epochs = sum(min(result.diverged_epoch or 1 + timed, 1 + timed) - 1 for result in results)
        per_run_epoch.append((long - short) / max(run_epochs, 1))
        statuses = [result.status for result in results]
    return {"epoch_times": per_run_epoch, "group_size": 1, "statuses": statuses}


def measure_torch(task, dataset) -> dict:
    """Time one run in PyTorch: the same MLP and update rule, written as PyTorch users do."""
    import torch

    torch.set_num_threads(1)
    dtype = {"float64": torch.float64, "float32": torch.float32}[task["dtype"]]
    generator = torch.Generator().manual_seed(0)
    x_train = torch.from_numpy(np.array(dataset.x_train)).to(dtype)
    y_train = torch.from_numpy(np.array(dataset.y_train))
    x_valid = torch.from_numpy(np.array(dataset.x_valid)).to(dtype)
    y_valid = torch.from_numpy(np.array(dataset.y_valid))
    h1, h2 = NUM_HIDDENS
    model = torch.nn.Sequential(
        torch.nn.Linear(x_train.shape[1], h1), torch.nn.ReLU(),
        torch.nn.Linear(h1, h2), torch.nn.ReLU(),
        torch.nn.Linear(h2, 7),
    ).to(dtype)
    # PyTorch's momentum SGD (b = m b + g, w -= eps b) equals the course's rule
    # (v = m v - eps g, w += v) for a constant eps, with v = -eps b.
    optimizer = torch.optim.SGD(model.parameters(), lr=SINGLE_EPS, momentum=SINGLE_MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    batch_size = task["batch_size"]
    num_train = x_train.shape[0]

    stamps: list[float] = []
    start = time.perf_counter()
    for _ in range(1 + task["epochs"]):
        perm = torch.randperm(num_train, generator=generator)
        x_epoch, y_epoch = x_train[perm], y_train[perm]
        for first in range(0, num_train, batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_epoch[first:first + batch_size]), y_epoch[first:first + batch_size])
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            logits = model(x_valid)
            float(loss_fn(logits, y_valid))
            float((logits.argmax(1) == y_valid).to(dtype).mean())
        stamps.append(time.perf_counter())
    return {"epoch_times": _epoch_times_from_stamps(start, stamps), "group_size": 1}


def measure_floor(task, dataset) -> dict:
    """Measure the square matrix-product rate (1 thread) and copy bandwidth of this process."""
    rates = {}
    size = 2048
    for dtype in ("float64", "float32"):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((size, size)).astype(dtype)
        b = rng.standard_normal((size, size)).astype(dtype)
        out = np.empty((size, size), dtype=dtype)
        np.matmul(a, b, out=out)  # warm-up
        durations = []
        for _ in range(task["repeats"]):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            durations.append(time.perf_counter() - start)
        rates[dtype] = 2.0 * size**3 / float(np.median(durations))

    bandwidths = {}
    for label, footprint in task["copy_footprints"].items():
        # src and dst together take `footprint` bytes; a copy reads src and writes dst.
        count = max(footprint // 16, 1)
        src = np.ones(count)
        dst = np.empty_like(src)
        np.copyto(dst, src)
        loops = max(1, int(2e8 // footprint))  # about 200 MB moved per timing
        durations = []
        for _ in range(task["repeats"]):
            start = time.perf_counter()
            for _ in range(loops):
                np.copyto(dst, src)
            durations.append((time.perf_counter() - start) / loops)
        bandwidths[label] = 2.0 * src.nbytes / float(np.median(durations))
    return {"matmul_flops": rates, "copy_bandwidth": bandwidths}


def measure_dtype_run(task, dataset) -> dict:
    """Train the course's default run for task["epochs"] epochs in task["dtype"]."""
    from tfd_sweep.trainer import RunSpec, train

    spec = RunSpec(eps=0.01, momentum=0.0, batch_size=100, num_epochs=task["epochs"],
                   num_hiddens=NUM_HIDDENS, seed=0, dtype=task["dtype"], check_grad=False)
    result = train(spec, dataset.astype(task["dtype"]))
    return {"status": result.status, "final": dict(result.final), "best": dict(result.best),
            "valid_ce_curve": [float(v) for v in result.history["valid_ce"]],
            "wall_time": result.wall_time}


MEASURES = {
    "reference": measure_reference,
    "trainer": measure_trainer,
    "stacked": measure_stacked,
    "torch": measure_torch,
    "floor": measure_floor,
    "dtype_run": measure_dtype_run,
}


def _peak_rss_mb() -> float:
    """Return the process's peak resident set size in MB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    """Return the process's resident set size now, in MB (Linux /proc; nan elsewhere)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """Sample the resident set size every `interval` seconds in a thread and keep the maximum.

    ru_maxrss cannot tell training from loading the data (which peaks higher), so the growth
    during training is the sampled maximum minus the size before training. A sample costs
    tens of microseconds, well under 1 % of the timed work at 10 ms intervals.
    """

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.peak = _current_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _current_rss_mb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _current_rss_mb())


def worker_main(task: dict, barrier, results: multiprocessing.Queue) -> None:
    """Run one measurement in this process and put its result (or the error) on `results`."""
    try:
        threadpool_limits(limits=1)
        dataset = None if task["kind"] == "floor" else load_data(task["data_path"])
        if task["kind"] == "torch":
            import torch  # noqa: F401  imported before the RSS baseline, like numpy

        rss_before = _current_rss_mb()
        if barrier is not None:
            barrier.wait(timeout=WORKER_TIMEOUT)
        with RssSampler() as sampler:
            outcome = MEASURES[task["kind"]](task, dataset)
        outcome["rss_before_mb"] = rss_before
        outcome["training_rss_mb"] = sampler.peak
        outcome["peak_rss_mb"] = _peak_rss_mb()
        outcome["blas_threads"] = [info["num_threads"] for info in threadpool_info()]
        outcome["tag"] = task.get("tag")
        results.put(outcome)
    except BaseException:  # noqa: BLE001  the parent reports it and goes on with other rows
        if barrier is not None:
            barrier.abort()
        results.put({"error": traceback.format_exc()})


def run_in_processes(task: dict, num_processes: int) -> list[dict]:
    """Run `task` in `num_processes` fresh processes at once and return their results."""
    return run_tasks([task] * num_processes)


def run_tasks(tasks: list[dict]) -> list[dict]:
    """Run each task in its own fresh process, all at once, and return their results.

    The processes start timing together (a barrier after loading the data). Results come back
    in the order the processes finish; each carries its task's "tag" when the task has one.
    """
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    barrier = context.Barrier(len(tasks)) if len(tasks) > 1 else None
    processes = [context.Process(target=worker_main, args=(task, barrier, results))
                 for task in tasks]
    for process in processes:
        process.start()
    outcomes = []
    try:
        for _ in processes:
            outcomes.append(results.get(timeout=WORKER_TIMEOUT))
    except queue.Empty:
        outcomes.append({"error": f"timed out after {WORKER_TIMEOUT:.0f} s"})
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
    return outcomes


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------

class Variant:
    """One implementation to time: a measure kind with its dtype and kernel."""

    def __init__(self, kind: str, label: str, dtype: str, kernel: str | None = None,
                 parallel: bool = True):
        self.kind = kind
        self.label = label
        self.dtype = dtype
        self.kernel = kernel
        self.parallel = parallel  # also timed as two processes at once


def find_variants(notes: list[str]) -> list[Variant]:
    """Return the variants that can run here; append a note for each one skipped."""
    variants = [Variant("reference", "reference loop (scripts/reference_loop.py)", "float64")]
    try:
        import tfd_sweep.trainer  # noqa: F401
        variants.append(Variant("trainer", "tfd_sweep, stacking off", "float64"))
    except ImportError as error:
        notes.append(f"tfd_sweep.trainer not importable ({error}): its rows are missing.")
    try:
        import tfd_sweep.stacked as stacked
        kernels = [kernel for kernel in getattr(stacked, "KERNELS", ()) if kernel != "auto"] or [None]
        for dtype in ("float64", "float32"):
            for kernel in kernels:
                suffix = f", {kernel} kernel" if kernel else ""
                variants.append(Variant("stacked", f"tfd_sweep stacked x{GROUP_SIZE}{suffix}",
                                        dtype, kernel))
    except ImportError as error:
        notes.append(f"tfd_sweep.stacked not importable ({error}): its rows are missing.")
    try:
        import torch  # noqa: F401
        for dtype in ("float32", "float64"):
            variants.append(Variant("torch", f"PyTorch {torch.__version__}, one run", dtype,
                                    parallel=False))
    except ImportError:
        notes.append("PyTorch is not installed: its rows are skipped "
                     "(optional; `pip install torch` to add them).")
    return variants


def measure_floor_settings(quick: bool) -> dict:
    """Return {num_processes: floor result} for 1 and, unless quick, 2 processes at once."""
    itemsizes = {"float64": 8, "float32": 4}
    num_params = count_params(2304, NUM_HIDDENS, 7)
    footprints = {"large": 512 * 2**20}
    for dtype, itemsize in itemsizes.items():
        # A run's weights and velocities: what one step's update must pass over.
        footprints[f"one run {dtype}"] = 2 * num_params * itemsize
    task = {"kind": "floor", "repeats": 3 if quick else 5, "copy_footprints": footprints}
    settings = {}
    for num_processes in (1,) if quick else (1, NUM_WORKERS):
        outcomes = run_in_processes(task, num_processes)
        errors = [outcome["error"] for outcome in outcomes if "error" in outcome]
        if errors:
            raise RuntimeError(f"floor measurement failed:\n{errors[0]}")
        settings[num_processes] = {
            "matmul_flops": {dtype: float(np.mean([o["matmul_flops"][dtype] for o in outcomes]))
                             for dtype in itemsizes},
            "copy_bandwidth": {label: float(np.mean([o["copy_bandwidth"][label] for o in outcomes]))
                               for label in footprints},
        }
    return settings


def floor_times(floor: dict, sizes: dict[str, int]) -> dict:
    """Return {dtype: {batch_size: (flop seconds, byte seconds, byte seconds at DRAM speed)}}."""
    num_params = count_params(2304, NUM_HIDDENS, 7)
    flops = epoch_flops(sizes["train"], sizes["valid"], 2304, NUM_HIDDENS, 7)
    table = {}
    for dtype, itemsize in (("float64", 8), ("float32", 4)):
        table[dtype] = {}
        for batch_size in BATCH_SIZES:
            moved = update_bytes_per_epoch(sizes["train"], batch_size, num_params, itemsize)
            table[dtype][batch_size] = (
                flops / floor["matmul_flops"][dtype],
                moved / floor["copy_bandwidth"][f"one run {dtype}"],
                moved / floor["copy_bandwidth"]["large"],
            )
    return table


def floor_per_model_epoch(times: tuple[float, float, float]) -> float:
    """Return the floor of one run's epoch: the larger of the product time and the byte time."""
    flop_seconds, byte_seconds, _ = times
    return max(flop_seconds, byte_seconds)


def measure_variant(variant: Variant, batch_size: int, num_processes: int, epochs: int,
                    data_path: str | None) -> dict:
    task = {"kind": variant.kind, "dtype": variant.dtype, "kernel": variant.kernel,
            "batch_size": batch_size, "epochs": epochs, "data_path": data_path}
    outcomes = run_in_processes(task, num_processes)
    errors = [outcome["error"] for outcome in outcomes if "error" in outcome]
    if errors:
        return {"error": errors[0]}
    per_model = [float(np.median(o["epoch_times"])) / o["group_size"] for o in outcomes]
    return {
        "model_epoch": float(np.mean(per_model)),
        "peak_rss_mb": max(o["peak_rss_mb"] for o in outcomes),
        "growth_mb": max(o["training_rss_mb"] - o["rss_before_mb"] for o in outcomes),
        "statuses": [status for o in outcomes for status in o.get("statuses", [])],
        "blas_threads": sorted({n for o in outcomes for n in o["blas_threads"]}),
    }


def grid_seconds(per_batch: dict[int, float], num_processes: int) -> float:
    """Project the full grid: sum over batch sizes of 15 runs x 1000 epochs x the per-model-epoch
    time, divided by the number of processes (which assumes both are kept busy to the end)."""
    return sum(GROUP_SIZE * GRID_EPOCHS * seconds for seconds in per_batch.values()) / num_processes


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.argv = argv
    args.load_before = os.getloadavg()[0]
    data_path = resolve_data_path(args.data)
    notes: list[str] = []
    started = time.perf_counter()

    dataset = load_data(data_path)
    sizes = dataset.sizes()
    print(f"data: {dataset.name} ({dataset.source}), sizes {sizes}", flush=True)

    print("measuring the floor ...", flush=True)
    floors = measure_floor_settings(args.quick)
    settings = sorted(floors)

    variants = find_variants(notes)
    timed_epochs = QUICK_TIMED_EPOCHS if args.quick else TIMED_EPOCHS
    rows = {}  # (variant index, num_processes) -> {batch_size: measurement}
    for index, variant in enumerate(variants):
        for num_processes in settings:
            if num_processes > 1 and not variant.parallel:
                continue
            measured = {}
            for batch_size in BATCH_SIZES:
                epochs = args.epochs or timed_epochs[batch_size]
                measured[batch_size] = measure_variant(variant, batch_size, num_processes, epochs,
                                                       data_path)
                print(f"  {variant.label} {variant.dtype}, {num_processes} process(es), "
                      f"batch {batch_size}: {_describe(measured[batch_size])}", flush=True)
            rows[(index, num_processes)] = measured

    print("planning sweeps (launch scale) ...", flush=True)
    launch_rows = measure_launch_scale(data_path, notes)

    dtype_runs = None
    if "trainer" in {variant.kind for variant in variants}:
        dtype_epochs = args.dtype_epochs or (100 if args.quick else GRID_EPOCHS)
        print(f"training the default run for {dtype_epochs} epochs in float64 and float32 ...",
              flush=True)
        dtype_runs = compare_dtypes(dtype_epochs, data_path)

    report = format_report(args, dataset, floors, variants, rows, notes,
                           time.perf_counter() - started)
    report += "\n" + "\n".join(_launch_section(launch_rows) + _dtype_section(dtype_runs))
    print()
    print(report)
    if args.out:
        Path(args.out).write_text(report)
        print(f"wrote {args.out}")
    return 0


LAUNCH_SEEDS = (1, 5)  # x 20 eps x 5 momentum: sweeps of 100 and 500 runs
LAUNCH_TIMEOUT = 300.0  # seconds to wait for a sweep's first run to start


def measure_launch_scale(data_path: str | None, notes: list[str]) -> list[list[str]] | None:
    """Time `python -m tfd_sweep -m ...` from process start until its first run starts.

    Each sweep starts in a temporary directory. Its process group is sent SIGTERM as soon as
    the launcher logs the first "#<num> start" line. Everything before that line is the launch
    cost: Hydra's sweep expansion, composing and checking every run's config, loading the data,
    writing every run directory's .hydra files and grouping. Returns table rows, or None when
    the launcher is not importable.
    """
    import signal
    import subprocess
    import tempfile

    try:
        import tfd_sweep.launcher  # noqa: F401
    except ImportError as error:
        notes.append(f"tfd_sweep.launcher not importable ({error}): no launch-scale numbers.")
        return None

    eps_values = ",".join(f"{0.001 * 1.4**i:.6g}" for i in range(20))
    rows = []
    for num_seeds in LAUNCH_SEEDS:
        seeds = ",".join(str(seed) for seed in range(num_seeds))
        num_runs = 20 * 5 * num_seeds
        with tempfile.TemporaryDirectory(prefix="tfd_sweep_launch_") as workdir:
            command = [sys.executable, "-m", "tfd_sweep", "-m", f"eps={eps_values}",
                       "momentum=0.0,0.3,0.5,0.7,0.9", f"seed={seeds}", "num_epochs=1",
                       f"hydra.sweep.dir={workdir}/sweep"]
            if data_path is not None:
                command.append(f"data.path={data_path}")
            environment = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
                [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
            start = time.perf_counter()
            process = subprocess.Popen(command, cwd=workdir, env=environment, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            lines: queue.Queue = queue.Queue()
            reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                                      daemon=True)
            reader.start()
            checked = first_start = None
            seen = []
            try:
                while first_start is None:
                    remaining = LAUNCH_TIMEOUT - (time.perf_counter() - start)
                    try:
                        line = lines.get(timeout=max(remaining, 0.0))
                    except queue.Empty:
                        break
                    seen.append(line)
                    if checked is None and " checked " in line and " runs in " in line:
                        checked = line.split(" checked ", 1)[1].strip()
                    if re.search(r" #\d+ start: ", line):
                        first_start = time.perf_counter() - start
                    elif process.poll() is not None and lines.empty():
                        break
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
                reader.join(timeout=10)
                process.stdout.close()
            if first_start is None:
                notes.append(f"The {num_runs}-run sweep did not start a run; its last output: "
                             + "".join(seen[-3:]).strip())
                rows.append([str(num_runs), "n/a", checked or "n/a"])
            else:
                rows.append([str(num_runs), f"{first_start:.1f} s", checked or "n/a"])
    return rows


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _format_ms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    return f"{seconds * 1e3:.3g}" if seconds < 0.1 else f"{seconds * 1e3:.0f}"


def _format_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x" if math.isfinite(ratio) else "n/a"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def _model_epoch(measured: dict[int, dict], batch_size: int) -> float:
    measurement = measured.get(batch_size, {})
    return measurement.get("model_epoch", float("nan"))


def machine_description() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = ", ".join(f"{info.get('internal_api')} {info.get('version')} ({info.get('architecture')})"
                     for info in threadpool_info() if info.get("user_api") == "blas")
    return (f"{model}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
            f"numpy {np.__version__} with {blas or 'unknown BLAS'}")


def format_report(args, dataset, floors, variants, rows, notes, elapsed) -> str:
    sizes = dataset.sizes()
    command = " ".join(["python scripts/bench.py", *args.argv])
    lines = [
        "# tfd_sweep benchmark",
        "",
        f"- Command: `{command}` ({_format_seconds(elapsed)} in all)",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M')}; load average (1 min) "
        f"{args.load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end. Other "
        "processes on the machine slow every row; compare rows of one run, not across runs.",
        f"- Machine: {machine_description()}",
        f"- Data: {dataset.name} ({'synthetic' if dataset.synthetic else 'real'}, {dataset.source}), "
        f"sizes {sizes}",
        f"- Network [{NUM_HIDDENS[0]}, {NUM_HIDDENS[1]}], "
        f"{count_params(2304, NUM_HIDDENS, 7)} parameters; one run's epoch is "
        f"{epoch_flops(sizes['train'], sizes['valid'], 2304, NUM_HIDDENS, 7) / 1e6:.0f} MFLOP of "
        "matrix products.",
        "- Every process has one BLAS thread. `1 proc` rows time one process alone; `2 procs` rows "
        "time two identical processes at once and give their mean.",
        f"- Grid projection: sum over batch sizes {', '.join(map(str, BATCH_SIZES))} of "
        f"{GROUP_SIZE} runs x {GRID_EPOCHS} epochs x seconds per model-epoch, divided by the number "
        "of processes (2-process rows assume both processes stay busy to the end).",
        "",
    ]
    lines += _floor_section(floors, sizes)
    lines += _timing_section(floors, sizes, variants, rows)
    lines += _memory_section(variants, rows)
    lines += _targets_section(floors, sizes, variants, rows)
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def _floor_section(floors, sizes) -> list[str]:
    lines = ["## Floor", "",
             "Square 2048x2048 matrix products (one BLAS thread, warm-up first, median) and copy "
             "bandwidth (bytes read plus bytes written per second). With two processes, each "
             "process's own rate while the other runs the same measurement.", ""]
    body = []
    for num_processes, floor in sorted(floors.items()):
        body.append([
            f"{num_processes} proc" + ("s" if num_processes > 1 else ""),
            f"{floor['matmul_flops']['float64'] / 1e9:.1f}",
            f"{floor['matmul_flops']['float32'] / 1e9:.1f}",
            f"{floor['copy_bandwidth']['large'] / 1e9:.1f}",
            f"{floor['copy_bandwidth']['one run float64'] / 1e9:.1f}",
            f"{floor['copy_bandwidth']['one run float32'] / 1e9:.1f}",
        ])
    lines += _table(["setting", "float64 GFLOP/s", "float32 GFLOP/s", "copy GB/s, 512 MiB",
                     "copy GB/s, one run's W+V float64", "copy GB/s, one run's W+V float32"], body)
    lines += ["",
              "Floor per model-epoch in ms (1 process): matrix-product FLOPs over the product rate, "
              "and the update's bytes (each step reads and writes every weight and velocity once) "
              "over the copy bandwidth of a buffer the size of one run's weights and velocities, "
              "which stays in cache. The floor is the larger of the two. The DRAM column shows "
              "the byte time at the 512 MiB copy's bandwidth, for a working set that does not "
              "fit in cache.", ""]
    times = floor_times(floors[1], sizes)
    body = []
    for dtype in ("float64", "float32"):
        for kind, position in (("products", 0), ("update bytes, in cache", 1), ("update bytes, DRAM", 2)):
            body.append([dtype, kind] + [_format_ms(times[dtype][b][position]) for b in BATCH_SIZES])
        body.append([dtype, "**floor**"] + [f"**{_format_ms(floor_per_model_epoch(times[dtype][b]))}**"
                                            for b in BATCH_SIZES])
    lines += _table(["dtype", "part"] + [f"bs {b}" for b in BATCH_SIZES], body)
    lines.append("")
    return lines


def _floor_grid(floors, sizes, dtype, num_processes) -> tuple[dict[int, float], float]:
    times = floor_times(floors[num_processes], sizes)[dtype]
    per_batch = {b: floor_per_model_epoch(times[b]) for b in BATCH_SIZES}
    return per_batch, grid_seconds(per_batch, num_processes)


def _timing_section(floors, sizes, variants, rows) -> list[str]:
    lines = ["## Seconds per model-epoch", "",
             "Milliseconds per model per epoch (stacked rows: the group's epoch time over the "
             "runs training in it), the projected full grid, and the grid's speed-up over the "
             "reference loop in the same setting and its ratio to the floor in the same setting.",
             ""]
    body = []
    for num_processes in sorted(floors):
        reference = rows.get((0, num_processes), {})
        reference_grid = grid_seconds({b: _model_epoch(reference, b) for b in BATCH_SIZES},
                                      num_processes)
        for index, variant in enumerate(variants):
            measured = rows.get((index, num_processes))
            if measured is None:
                continue
            per_batch = {b: _model_epoch(measured, b) for b in BATCH_SIZES}
            grid = grid_seconds(per_batch, num_processes)
            _, floor_grid = _floor_grid(floors, sizes, variant.dtype, num_processes)
            body.append([f"{num_processes} proc" + ("s" if num_processes > 1 else ""),
                         variant.label, variant.dtype]
                        + [_format_ms(per_batch[b]) for b in BATCH_SIZES]
                        + [_format_seconds(grid), _format_ratio(reference_grid / grid),
                           _format_ratio(grid / floor_grid)])
        for dtype in ("float64", "float32"):
            per_batch, floor_grid = _floor_grid(floors, sizes, dtype, num_processes)
            body.append([f"{num_processes} proc" + ("s" if num_processes > 1 else ""),
                         "floor", dtype] + [_format_ms(per_batch[b]) for b in BATCH_SIZES]
                        + [_format_seconds(floor_grid), _format_ratio(reference_grid / floor_grid),
                           "1.00x"])
    lines += _table(["setting", "variant", "dtype"] + [f"bs {b}" for b in BATCH_SIZES]
                    + ["grid", "vs reference", "vs floor"], body)

    lines += ["", "Per batch size: speed-up over the reference loop (same setting) / ratio to "
              "the floor of the variant's dtype (same setting).", ""]
    body = []
    for num_processes in sorted(floors):
        reference = rows.get((0, num_processes), {})
        for index, variant in enumerate(variants):
            measured = rows.get((index, num_processes))
            if measured is None or index == 0:
                continue
            floor_batch, _ = _floor_grid(floors, sizes, variant.dtype, num_processes)
            cells = []
            for b in BATCH_SIZES:
                seconds = _model_epoch(measured, b)
                cells.append(f"{_format_ratio(_model_epoch(reference, b) / seconds)} / "
                             f"{_format_ratio(seconds / floor_batch[b])}")
            body.append([f"{num_processes} proc" + ("s" if num_processes > 1 else ""),
                         variant.label, variant.dtype] + cells)
    lines += _table(["setting", "variant", "dtype"] + [f"bs {b}" for b in BATCH_SIZES], body)

    failures = []
    for (index, num_processes), measured in rows.items():
        for b, measurement in measured.items():
            if "error" in measurement:
                failures.append(f"{variants[index].label} {variants[index].dtype}, "
                                f"{num_processes} proc, bs {b}: "
                                + measurement["error"].strip().splitlines()[-1])
            statuses = measurement.get("statuses", [])
            stopped = [status for status in statuses if status != "ok"]
            if stopped and num_processes == 1:
                failures.append(f"{variants[index].label} {variants[index].dtype}, bs {b}: "
                                f"{len(stopped)} of {len(statuses)} runs ended {sorted(set(stopped))} "
                                "in the timed window.")
    if failures:
        lines += ["", "Failures and stopped runs:", ""] + [f"- {failure}" for failure in failures]
    lines.append("")
    return lines


def _memory_section(variants, rows) -> list[str]:
    lines = ["## Peak memory per worker", "",
             "Peak RSS: ru_maxrss of the worker process (interpreter, libraries, loading the data "
             "set, training), the largest over batch sizes and processes. Growth: the largest "
             "resident size sampled every 10 ms during training minus the size just before it, "
             "i.e. what training itself adds.", ""]
    body = []
    for (index, num_processes), measured in sorted(rows.items()):
        ok = [m for m in measured.values() if "error" not in m]
        if not ok:
            continue
        variant = variants[index]
        body.append([f"{num_processes} proc" + ("s" if num_processes > 1 else ""), variant.label,
                     variant.dtype, f"{max(m['peak_rss_mb'] for m in ok):.0f}",
                     f"{max(m['growth_mb'] for m in ok):.1f}"])
    lines += _table(["setting", "variant", "dtype", "peak RSS MB", "growth MB"], body)
    lines.append("")
    return lines


def _targets_section(floors, sizes, variants, rows) -> list[str]:
    """List the performance targets with the measured value and whether each is met."""
    lines = ["## Targets", ""]
    parallel = NUM_WORKERS if NUM_WORKERS in floors else 1
    reference_grid = grid_seconds({b: _model_epoch(rows.get((0, parallel), {}), b)
                                   for b in BATCH_SIZES}, parallel)
    reference_bs1 = _model_epoch(rows.get((0, 1), {}), 1)
    body = []
    for index, variant in enumerate(variants):
        if variant.kind != "stacked":
            continue
        measured = rows.get((index, parallel), {})
        grid = grid_seconds({b: _model_epoch(measured, b) for b in BATCH_SIZES}, parallel)
        required = 5.0 if variant.dtype == "float64" else 10.0
        speedup = reference_grid / grid
        body.append([f"grid at {GRID_EPOCHS} epochs, {parallel} proc(s): >= {required:.0f}x the reference",
                     f"{variant.label} {variant.dtype}", _format_ratio(speedup),
                     "met" if speedup >= required else "NOT met"])
        if variant.dtype == "float64":
            speedup = reference_bs1 / _model_epoch(rows.get((index, 1), {}), 1)
            body.append(["bs 1 per run-epoch, 1 proc: >= 5x the reference",
                         f"{variant.label} {variant.dtype}", _format_ratio(speedup),
                         "met" if speedup >= 5.0 else "NOT met"])
        floor_batch, _ = _floor_grid(floors, sizes, variant.dtype, 1)
        for b in (100, 500, 1000):
            ratio = _model_epoch(rows.get((index, 1), {}), b) / floor_batch[b]
            body.append([f"bs {b}, 1 proc: within 1.5x of the floor",
                         f"{variant.label} {variant.dtype}", _format_ratio(ratio),
                         "met" if ratio <= 1.5 else "NOT met"])
    lines += _table(["target", "variant", "measured", "verdict"], body)
    lines.append("")
    return lines


def compare_dtypes(epochs: int, data_path: str | None) -> dict:
    """Train the default run in float64 and float32 at once (two processes); return by dtype."""
    tasks = [{"kind": "dtype_run", "dtype": dtype, "epochs": epochs, "data_path": data_path,
              "tag": dtype} for dtype in ("float64", "float32")]
    outcomes = run_tasks(tasks)
    by_dtype = {outcome.get("tag"): outcome for outcome in outcomes}
    by_dtype["epochs"] = epochs
    return by_dtype


def _launch_section(launch_rows) -> list[str]:
    lines = ["## Launch scale", ""]
    if launch_rows is None:
        return lines + ["Not measured: tfd_sweep.launcher is not importable.", ""]
    lines += ["Seconds from starting `python -m tfd_sweep -m ...` (20 eps x 5 momentum x 1 or 5 "
              "seeds, 2 workers) until the first run starts training: Hydra's sweep expansion, "
              "every run's config composed and checked, the data loaded, every run directory "
              "prepared and the runs grouped. The launcher's own log line for the config checks "
              "is quoted.", ""]
    lines += _table(["runs", "until the first run starts", "launcher log: checked ..."], launch_rows)
    lines.append("")
    return lines


def _dtype_section(runs) -> list[str]:
    lines = ["## float32 against float64", ""]
    if runs is None:
        return lines + ["Skipped: tfd_sweep.trainer is not importable.", ""]
    errors = [run["error"] for key, run in runs.items() if key != "epochs" and "error" in run]
    if errors or "float64" not in runs or "float32" not in runs:
        return lines + ["The comparison failed: " + (errors[0].strip().splitlines()[-1] if errors else
                                                     "a run returned no result"), ""]
    single, double = runs["float32"], runs["float64"]
    lines += [f"The course's default run (eps 0.01, momentum 0, batch size 100, [16, 32], seed 0) "
              f"trained for {runs['epochs']} epochs with stacking off, once per dtype, both "
              f"processes at once. Status: float64 {double['status']}, float32 {single['status']}.",
              ""]
    body = []
    for name in list(double["final"]) + ["best_epoch", "best_valid_ce"]:
        source = "final" if name in double["final"] else "best"
        value64 = float(double[source][name])
        value32 = float(single[source][name])
        body.append([name, f"{value64:.6g}", f"{value32:.6g}", f"{abs(value32 - value64):.3g}"])
    curve64 = np.asarray(double["valid_ce_curve"])
    curve32 = np.asarray(single["valid_ce_curve"])
    common = min(len(curve64), len(curve32))
    body.append(["max over epochs of the valid_ce difference", "", "",
                 f"{np.max(np.abs(curve64[:common] - curve32[:common])):.3g}"])
    body.append(["wall time (s)", f"{double['wall_time']:.1f}", f"{single['wall_time']:.1f}", ""])
    lines += _table(["metric", "float64", "float32", "absolute difference"], body)
    lines.append("")
    return lines


def _describe(measurement: dict) -> str:
    if "error" in measurement:
        return "failed: " + measurement["error"].strip().splitlines()[-1]
    return f"{measurement['model_epoch'] * 1e3:.2f} ms per model-epoch"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="time fewer epochs and skip the two-process rows (about a minute)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="timed epochs per measurement at every batch size (default: 2 at "
                             "batch size 1, 3 at 10, 5 at 100 and above)")
    parser.add_argument("--data", default=None,
                        help=f"data file in the course layout (default: {DEFAULT_DATA} when it "
                             "exists, else the built-in synthetic faces)")
    parser.add_argument("--dtype-epochs", type=int, default=None,
                        help=f"epochs of the float32-against-float64 run (default {GRID_EPOCHS}, "
                             "100 with --quick)")
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())

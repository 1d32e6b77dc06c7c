"""Retrain a recorded run and compare its metrics with the recorded ones.

    python -m tfd_sweep.reproduce <sweep dir> [--run N] [--rtol R]

Without --run, the best run (report.metric valid_ce, min) is retrained. The run's
result.json supplies the config, and the data file is looked up from the current directory.
Exit status: 0 when every metric matches within rtol, 1 on a mismatch (or a changed
dataset), 2 on an error the user can fix.
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tfd_sweep import metrics
from tfd_sweep.errors import UserError
from tfd_sweep.results import to_number

logger = logging.getLogger(__name__)

DEFAULT_RTOL = 1e-6
# max_ce of a result.json that does not record it (the trainer's own default).
DEFAULT_MAX_CE = 1000.0
CONFIG_FILE = Path(__file__).resolve().parent.parent / "conf" / "config.yaml"
# Metrics that must be equal, not close.
EXACT_METRICS = ("best_epoch", "epochs_run")
COMPARED_METRICS = metrics.FINAL_METRICS + metrics.BEST_METRICS + ("epochs_run",)


# --- the command that reproduces a run ------------------------------------------------------


def data_path_for(result: dict) -> str | None:
    """Return the data.path that loads the run's dataset again, or None for the default.

    A file dataset gives its absolute source path (or the recorded data.path). The built-in
    synthetic data gives "builtin" when the run asked for it explicitly, because otherwise a
    data file in the current directory would take its place.
    """
    dataset = result.get("dataset") or {}
    configured = ((result.get("config") or {}).get("data") or {}).get("path")
    if dataset.get("synthetic"):
        return configured
    source = dataset.get("source")
    if source and source != "built-in" and Path(source).is_absolute():
        return source
    return configured


def command_for(result: dict) -> str:
    """Return the shell command that trains the run of `result` (a parsed result.json) again."""
    config = result.get("config") or {}
    parts = ["python", "-m", "tfd_sweep"]
    for key in ("eps", "momentum", "batch_size", "num_epochs"):
        parts.append(f"{key}={_override_value(config[key])}")
    hiddens = ",".join(str(int(size)) for size in config["num_hiddens"])
    parts.append(f"num_hiddens=[{hiddens}]")
    parts.append(f"seed={config['seed']}")
    parts.append(f"dtype={config.get('dtype', 'float64')}")
    max_ce = config.get("max_ce", DEFAULT_MAX_CE)
    # The command leaves max_ce out only when the run used today's default, because a run
    # recorded under an older default would otherwise retrain with a different bound.
    if max_ce is not None and float(max_ce) != configured_max_ce():
        parts.append(f"max_ce={_override_value(float(max_ce))}")
    data_path = data_path_for(result)
    if data_path:
        parts.append(f"data.path={data_path}")
    return " ".join(shlex.quote(part) for part in parts)


def configured_max_ce() -> float | None:
    """Return the default max_ce of conf/config.yaml, or None if that file is unreadable."""
    import yaml

    try:
        value = yaml.safe_load(CONFIG_FILE.read_text(encoding="utf-8")).get("max_ce")
        return None if value is None else float(value)
    except (OSError, ValueError, AttributeError, TypeError, yaml.YAMLError) as error:
        logger.warning("could not read max_ce from %s (%s); reproduce commands will state "
                       "max_ce explicitly", CONFIG_FILE, error)
        return None


def _override_value(value) -> str:
    # repr keeps every digit of a float (0.1, 1e-05), which Hydra parses back exactly.
    return repr(float(value)) if isinstance(value, float) else str(value)


# --- comparison -----------------------------------------------------------------------------


@dataclass
class Comparison:
    """Recorded against reproduced metrics of one run."""

    job_num: int
    rows: list[tuple[str, float, float, float, bool]]   # name, recorded, reproduced, diff, match
    recorded_status: str
    reproduced_status: str
    recorded_sha256: str | None
    reproduced_sha256: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def dataset_matches(self) -> bool:
        return self.recorded_sha256 == self.reproduced_sha256

    @property
    def matches(self) -> bool:
        return (self.dataset_matches and self.recorded_status == self.reproduced_status
                and all(row[4] for row in self.rows))


def compare_metrics(recorded: dict, reproduced: dict, rtol: float) -> list[tuple]:
    """Return (name, recorded, reproduced, difference, match) for each of COMPARED_METRICS.

    null (None) and NaN count as the same value; integers must be equal; floats must agree
    within `rtol` relative to the recorded value.
    """
    rows = []
    for name in COMPARED_METRICS:
        old, new = to_number(recorded.get(name)), to_number(reproduced.get(name))
        if math.isnan(old) or math.isnan(new):
            match = math.isnan(old) and math.isnan(new)
            difference = math.nan
        else:
            difference = new - old
            match = (old == new) if name in EXACT_METRICS else math.isclose(
                new, old, rel_tol=rtol, abs_tol=0.0)
        rows.append((name, old, new, difference, match))
    return rows


# --- retraining -----------------------------------------------------------------------------


def run_spec_from(config: dict):
    """Build a tfd_sweep.trainer.RunSpec from the config of a result.json."""
    from tfd_sweep.trainer import RunSpec

    return RunSpec(
        eps=float(config["eps"]),
        momentum=float(config["momentum"]),
        batch_size=int(config["batch_size"]),
        num_epochs=int(config["num_epochs"]),
        num_hiddens=tuple(int(size) for size in config["num_hiddens"]),
        seed=int(config["seed"]),
        dtype=str(config.get("dtype", "float64")),
        # The gradient check uses its own generator and does not change the numbers.
        check_grad=False,
        max_ce=float(config.get("max_ce", DEFAULT_MAX_CE)),
    )


def _default_load(path, start_dir: Path):
    from tfd_sweep.data import load_dataset

    return load_dataset(path, start_dir)


def _default_train(spec, dataset):
    from tfd_sweep.trainer import train

    return train(spec, dataset)


def reproduce_run(result: dict, job_num: int, rtol: float = DEFAULT_RTOL,
                  start_dir: Path | None = None, load: Callable | None = None,
                  train: Callable | None = None) -> Comparison:
    """Retrain the run recorded in `result` (a parsed result.json) and compare its metrics.

    `load(path, start_dir)` and `train(spec, dataset)` default to tfd_sweep.data.load_dataset
    and tfd_sweep.trainer.train; tests pass stand-ins.
    """
    load = load or _default_load
    train = train or _default_train
    start_dir = Path.cwd() if start_dir is None else Path(start_dir)
    config = result.get("config") or {}
    spec = run_spec_from(config)

    dataset = load(data_path_for(result), start_dir)
    logger.info("retraining run %d on %s (%s): %s", job_num, dataset.name, dataset.source,
                command_for(result))
    run = train(spec, dataset)

    reproduced = {**run.final, **run.best, "epochs_run": len(run.history["epoch"])}
    recorded = result.get("metrics") or {}
    recorded_sha = (result.get("dataset") or {}).get("sha256")
    comparison = Comparison(job_num, compare_metrics(recorded, reproduced, rtol),
                            result.get("status"), run.status, recorded_sha, dataset.sha256)
    if not comparison.dataset_matches:
        comparison.notes.append(
            f"dataset changed: the run trained on {recorded_sha} "
            f"({(result.get('dataset') or {}).get('source')}), the retraining loaded "
            f"{dataset.sha256} ({dataset.source}). Pass the same file with data.path or run "
            "from the directory the sweep started in.")
    if comparison.recorded_status != comparison.reproduced_status:
        comparison.notes.append(f"status differs: recorded {comparison.recorded_status}, "
                                f"reproduced {comparison.reproduced_status}")
    return comparison


def select_run(sweep_dir: Path, run: int | None, metric: str = "valid_ce",
               mode: str = "min") -> tuple[int, dict]:
    """Return (job_num, parsed result.json) of run `run`, or of the best run if None."""
    from tfd_sweep import results, tables

    sweep = results.load_sweep(sweep_dir)
    if run is None:
        best = tables.best_run(sweep.results, metric, mode)
        if best is None:
            raise UserError(f"{sweep_dir} has no run with status ok and a finite {metric}, so "
                            "there is no best run to reproduce; pass --run N to pick one.")
        run = int(best["job_num"])
    if run not in sweep.raw:
        finished = ", ".join(str(num) for num in sorted(sweep.raw)) or "none"
        raise UserError(f"--run {run}: {sweep_dir} has no finished run {run} (no "
                        f"{metrics.RESULT_FILE}); finished runs: {finished}.")
    return run, sweep.raw[run]


def format_comparison(comparison: Comparison, rtol: float) -> str:
    """Return the comparison as a fixed-width text table with a verdict line."""
    lines = [f"run {comparison.job_num}: recorded vs reproduced (rtol={rtol:g})",
             f"{'metric':<16}{'recorded':>22}{'reproduced':>22}{'difference':>14}  match"]
    for name, old, new, difference, match in comparison.rows:
        lines.append(f"{name:<16}{old:>22.15g}{new:>22.15g}{difference:>14.3g}  "
                     f"{'yes' if match else 'NO'}")
    lines.append(f"{'status':<16}{comparison.recorded_status:>22}"
                 f"{comparison.reproduced_status:>22}")
    dataset_line = "same" if comparison.dataset_matches else "DIFFERENT"
    lines.append(f"dataset sha256: {dataset_line}")
    lines.extend(comparison.notes)
    lines.append("MATCH: every metric agrees." if comparison.matches
                 else "MISMATCH: see the rows marked NO and the notes above.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the command line: retrain, print the comparison, return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m tfd_sweep.reproduce",
        description="Retrain a run of a sweep and compare its metrics with the recorded ones.")
    parser.add_argument("sweep_dir", type=Path, help="sweep directory (outputs/sweeps/<time>)")
    parser.add_argument("--run", type=int, default=None,
                        help="job number to retrain (default: the best run)")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help=f"relative tolerance for float metrics (default {DEFAULT_RTOL:g})")
    parser.add_argument("--metric", default="valid_ce", help="metric that picks the best run")
    parser.add_argument("--mode", default="min", choices=("min", "max"),
                        help="whether the best run has the lowest or highest metric")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")

    try:
        job_num, result = select_run(args.sweep_dir, args.run, args.metric, args.mode)
        print(f"retraining: {command_for(result)}")
        comparison = reproduce_run(result, job_num, args.rtol)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_comparison(comparison, args.rtol))
    return 0 if comparison.matches else 1


if __name__ == "__main__":
    sys.exit(main())

"""Sweeps through the real command: parallel workers, Dask, failures, resume, checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfd_sweep.grouping import Job, make_groups
from tfd_sweep.launcher import swept_keys
from tfd_sweep.trainer import RunSpec

pytestmark = pytest.mark.slow

FAST = ["num_epochs=2", "batch_size=500", "check_grad=false", "save_weights=false"]


def results_of(sweep_dir: Path) -> dict[int, dict]:
    records = {}
    for path in sorted(sweep_dir.glob("*/result.json")):
        record = json.loads(path.read_text())
        records[record["job_num"]] = record
    return records


def run_sweep(tfd, tmp_path, name, args, **kwargs):
    sweep_dir = tmp_path / name
    proc = tfd(["-m", *args, f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, **kwargs)
    return sweep_dir, proc


def test_three_run_sweep_writes_three_results(tfd, tmp_path):
    sweep_dir, proc = run_sweep(tfd, tmp_path, "s", ["eps=0.001,0.01,0.1", *FAST])
    assert proc.returncode == 0, proc.stderr + proc.stdout
    records = results_of(sweep_dir)
    assert sorted(records) == [0, 1, 2]
    assert [records[i]["config"]["eps"] for i in range(3)] == [0.001, 0.01, 0.1]
    assert all(r["status"] == "ok" for r in records.values())
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sweep["swept_keys"] == ["eps"]
    assert len(sweep["jobs"]) == 3
    log = proc.stdout + proc.stderr
    assert "#2 start: eps=0.1" in log
    assert "sweep: 3/3 done, 0 failed" in log


def test_metrics_same_across_backends(tfd, tmp_path):
    grid = ["eps=0.01,0.1", "momentum=0.0,0.9", *FAST]
    variants = {
        "serial": ["launcher.n_jobs=1"],
        "two": ["launcher.n_jobs=2"],
        "unstacked": ["launcher.n_jobs=2", "launcher.stack=false"],
        "dask": ["launcher.backend=dask", "launcher.n_workers=2"],
    }
    metrics = {}
    for name, extra in variants.items():
        sweep_dir, proc = run_sweep(tfd, tmp_path, name, [*grid, *extra])
        assert proc.returncode == 0, name + proc.stderr + proc.stdout
        records = results_of(sweep_dir)
        assert len(records) == 4, name
        metrics[name] = {num: r["metrics"] for num, r in records.items()}
        backend = {r["backend"] for r in records.values()}
        assert backend == {"dask" if name == "dask" else "loky"}, name

    reference = metrics["serial"]
    for name, values in metrics.items():
        for num, run in values.items():
            for key, value in run.items():
                assert value == pytest.approx(reference[num][key], rel=1e-9, abs=1e-12), (name, num, key)


def test_failed_run_is_isolated_and_reported(tfd, tmp_path):
    # 100 million hidden units need a 1.7 TiB weight matrix: numpy raises MemoryError at once.
    sweep_dir, proc = run_sweep(tfd, tmp_path, "s", ["num_hiddens=[16,32],[100000000,1]", "eps=0.01,0.1", *FAST])
    assert proc.returncode == 1, proc.stderr + proc.stdout
    records = results_of(sweep_dir)
    assert len(records) == 4
    failed = {num for num, r in records.items() if r["status"] == "failed"}
    assert failed == {2, 3}
    for num in failed:
        assert "MemoryError" in records[num]["error"]
        assert (sweep_dir / str(num) / "traceback.txt").is_file()
    assert {r["status"] for num, r in records.items() if num not in failed} == {"ok"}
    log = proc.stdout + proc.stderr
    assert "#2 failed: num_hiddens=[100000000,1] eps=0.01: MemoryError" in log
    assert "sweep finished: 2 ok, 0 diverged, 2 failed" in log


def test_resumed_sweep_trains_only_missing_runs(tfd, tmp_path):
    args = ["eps=0.001,0.01,0.1", *FAST]
    sweep_dir, proc = run_sweep(tfd, tmp_path, "s", args)
    assert proc.returncode == 0, proc.stderr
    kept = {num: (sweep_dir / str(num) / "result.json").stat().st_mtime_ns for num in (0, 2)}
    (sweep_dir / "1" / "result.json").unlink()

    _, proc = run_sweep(tfd, tmp_path, "s", args)
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert "reusing 2 runs finished earlier in this directory; 1 left to train" in log
    assert "#1 start" in log
    assert "#0 start" not in log
    assert (sweep_dir / "1" / "result.json").is_file()
    for num, mtime in kept.items():
        assert (sweep_dir / str(num) / "result.json").stat().st_mtime_ns == mtime


def test_rerun_of_finished_sweep_trains_nothing(tfd, tmp_path):
    args = ["eps=0.001,0.01", *FAST]
    _, proc = run_sweep(tfd, tmp_path, "s", args)
    assert proc.returncode == 0, proc.stderr
    _, proc = run_sweep(tfd, tmp_path, "s", args)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "nothing to train: every run has finished" in log
    assert "Traceback" not in log


def test_other_sweep_in_same_directory_is_refused(tfd, tmp_path):
    sweep_dir, proc = run_sweep(tfd, tmp_path, "s", ["eps=0.001,0.01", *FAST])
    assert proc.returncode == 0, proc.stderr
    before = (sweep_dir / "0" / "result.json").read_text()
    _, proc = run_sweep(tfd, tmp_path, "s", ["eps=0.5,0.6", *FAST])
    assert proc.returncode == 2
    assert "belongs to a different sweep" in proc.stdout + proc.stderr
    assert (sweep_dir / "0" / "result.json").read_text() == before


def test_invalid_values_anywhere_stop_the_sweep(tfd, tmp_path):
    sweep_dir, proc = run_sweep(tfd, tmp_path, "s", ["eps=0.01,-1", "momentum=0.5,1.5", *FAST])
    assert proc.returncode == 2
    log = proc.stdout + proc.stderr
    assert "Invalid sweep: 2 problem(s) found, nothing was run" in log
    assert "eps=-1.0 is invalid: the learning rate must be > 0. Example: eps=0.01 (runs 2, 3)" in log
    assert "momentum=1.5 is invalid: momentum must be in [0, 1), 0 for plain SGD. Example: momentum=0.9 (runs 1, 3)" in log
    assert "Traceback" not in log
    assert not sweep_dir.exists()


def test_rejected_sweep_keeps_old_multirun_record(tfd, tmp_path):
    sweep_dir, proc = run_sweep(tfd, tmp_path, "s", ["eps=0.001,0.01", *FAST])
    assert proc.returncode == 0, proc.stderr
    before = (sweep_dir / "multirun.yaml").read_text()
    _, proc = run_sweep(tfd, tmp_path, "s", ["eps=0.5,0.6", *FAST])
    assert proc.returncode == 2
    assert (sweep_dir / "multirun.yaml").read_text() == before


def test_list_values_and_small_floats_keep_their_types(tfd, tmp_path):
    sweep_dir, proc = run_sweep(tfd, tmp_path, "s", ["num_hiddens=[2,2],[100,100]", "eps=1e-5", *FAST])
    assert proc.returncode == 0, proc.stderr
    records = results_of(sweep_dir)
    assert [records[i]["config"]["num_hiddens"] for i in (0, 1)] == [[2, 2], [100, 100]]
    assert all(records[i]["config"]["eps"] == 1e-5 for i in (0, 1))
    assert isinstance(records[0]["config"]["eps"], float)


def spec(batch_size=100, eps=0.01, seed=0):
    return RunSpec(eps=eps, momentum=0.0, batch_size=batch_size, num_epochs=10, num_hiddens=(16, 32), seed=seed)


@pytest.mark.parametrize("n_workers, expected_sizes", [(1, [3, 1]), (2, [3, 1]), (4, [1, 1, 1, 1])])
def test_groups_split_until_every_worker_has_work(n_workers, expected_sizes):
    jobs = [Job(num=i, overrides=(), subdir=str(i), spec=spec(eps=0.01 * (i + 1))) for i in range(3)]
    jobs.append(Job(num=3, overrides=(), subdir="3", spec=spec(batch_size=1000)))
    groups = make_groups(jobs, stack=True, max_group_size=32, n_workers=n_workers)
    assert sorted((len(g.jobs) for g in groups), reverse=True) == expected_sizes
    assert [g.cost for g in groups] == sorted((g.cost for g in groups), reverse=True)


def test_groups_put_batch_size_one_first():
    jobs = [Job(num=0, overrides=(), subdir="0", spec=spec(batch_size=1000)),
            Job(num=1, overrides=(), subdir="1", spec=spec(batch_size=1))]
    groups = make_groups(jobs, stack=True, max_group_size=32, n_workers=2)
    assert groups[0].jobs[0].spec.batch_size == 1


def test_swept_keys_lists_keys_that_vary():
    assert swept_keys([["eps=0.1", "seed=0"], ["eps=0.2", "seed=0"]]) == ["eps"]


def test_optimization_preset_runs_75_stacked(tfd, tmp_path):
    sweep_dir, proc = run_sweep(tfd, tmp_path, "s", ["+sweep=optimization", "num_epochs=1", "save_weights=false"])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "plan: 75 runs in 5 groups" in log
    records = results_of(sweep_dir)
    assert len(records) == 75
    grid = {(r["config"]["eps"], r["config"]["momentum"], r["config"]["batch_size"]) for r in records.values()}
    assert len(grid) == 75
    assert {r["group_size"] for r in records.values()} == {15}
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sorted(sweep["swept_keys"]) == ["batch_size", "eps", "momentum"]
    for batch_size in (1, 10, 100, 500, 1000):
        assert (sweep_dir / f"summary_valid_ce_eps_momentum_batch_size_{batch_size}.csv").is_file()


def test_hidden_preset_fixes_momentum(tfd, tmp_path):
    sweep_dir, proc = run_sweep(tfd, tmp_path, "s", ["+sweep=hidden", *FAST])
    assert proc.returncode == 0, proc.stderr + proc.stdout
    records = results_of(sweep_dir)
    assert sorted(tuple(r["config"]["num_hiddens"]) for r in records.values()) == [(2, 2), (16, 32), (100, 100)]
    assert {r["config"]["momentum"] for r in records.values()} == {0.9}

"""Tests for retraining a recorded run and comparing metrics (tfd_sweep.reproduce)."""

import json
import math
from pathlib import Path

import pytest

from _fake_sweep import make_optimization_sweep
from tfd_sweep import metrics
from tfd_sweep.data import BUILTIN, load_dataset
from tfd_sweep.errors import UserError
from tfd_sweep.reproduce import (command_for, compare_metrics, configured_max_ce, main,
                                 reproduce_run, select_run)
from tfd_sweep.trainer import RunSpec, train

CONFIG = {"eps": 0.1, "momentum": 0.9, "batch_size": 500, "num_epochs": 2,
          "num_hiddens": [4, 4], "seed": 3, "dtype": "float64", "check_grad": False,
          "max_ce": 100.0, "data": {"path": BUILTIN}}


def _json_number(value):
    value = float(value)
    return value if math.isfinite(value) else None


@pytest.fixture(scope="module")
def trained_sweep(tmp_path_factory):
    """A one-run sweep whose result.json records a real training on the built-in data."""
    sweep_dir = tmp_path_factory.mktemp("reproduce") / "sweep"
    run_dir = sweep_dir / "0"
    run_dir.mkdir(parents=True)
    dataset = load_dataset(BUILTIN, sweep_dir)
    spec = RunSpec(eps=0.1, momentum=0.9, batch_size=500, num_epochs=2, num_hiddens=(4, 4),
                   seed=3)
    run = train(spec, dataset)
    recorded = {name: _json_number(value) for name, value in {**run.final, **run.best}.items()}
    recorded["best_epoch"] = int(run.best["best_epoch"])
    recorded["epochs_run"] = len(run.history["epoch"])
    result = {
        "format": 1, "status": run.status, "error": None, "diverged_epoch": None,
        "config": CONFIG, "overrides": [], "job_num": 0, "metrics": recorded,
        "wall_time": run.wall_time,
        "dataset": {"name": dataset.name, "source": dataset.source, "sha256": dataset.sha256,
                    "synthetic": dataset.synthetic, "sizes": dataset.sizes()},
    }
    (run_dir / metrics.RESULT_FILE).write_text(json.dumps(result))
    (sweep_dir / metrics.SWEEP_FILE).write_text(json.dumps(
        {"command": "python -m tfd_sweep -m seed=3", "swept_keys": [],
         "jobs": [{"num": 0, "dir": "0", "overrides": []}]}))
    return sweep_dir


def _edit_result(sweep_dir: Path, change) -> None:
    path = sweep_dir / "0" / metrics.RESULT_FILE
    result = json.loads(path.read_text())
    change(result)
    path.write_text(json.dumps(result))


def test_unchanged_run_matches(trained_sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([str(trained_sweep)]) == 0
    output = capsys.readouterr().out
    assert "MATCH: every metric agrees." in output
    assert "dataset sha256: same" in output
    assert "retraining: python -m tfd_sweep eps=0.1 momentum=0.9 batch_size=500" in output


def test_altered_metric_is_mismatch(trained_sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    original = (trained_sweep / "0" / metrics.RESULT_FILE).read_text()
    try:
        _edit_result(trained_sweep, lambda r: r["metrics"].update(
            valid_ce=r["metrics"]["valid_ce"] * 1.001))
        assert main([str(trained_sweep), "--run", "0"]) == 1
    finally:
        (trained_sweep / "0" / metrics.RESULT_FILE).write_text(original)
    output = capsys.readouterr().out
    assert "MISMATCH" in output
    valid_line = next(line for line in output.splitlines() if line.startswith("valid_ce "))
    assert valid_line.endswith("NO")


def test_looser_rtol_accepts_small_change(trained_sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    original = (trained_sweep / "0" / metrics.RESULT_FILE).read_text()
    try:
        _edit_result(trained_sweep, lambda r: r["metrics"].update(
            test_ce=r["metrics"]["test_ce"] * (1 + 1e-5)))
        assert main([str(trained_sweep), "--rtol", "1e-4"]) == 0
    finally:
        (trained_sweep / "0" / metrics.RESULT_FILE).write_text(original)


def test_changed_dataset_is_reported(trained_sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    original = (trained_sweep / "0" / metrics.RESULT_FILE).read_text()
    try:
        _edit_result(trained_sweep, lambda r: r["dataset"].update(sha256="0" * 64))
        assert main([str(trained_sweep)]) == 1
    finally:
        (trained_sweep / "0" / metrics.RESULT_FILE).write_text(original)
    output = capsys.readouterr().out
    assert "dataset sha256: DIFFERENT" in output
    assert f"dataset changed: the run trained on {'0' * 64}" in output


def test_missing_run_is_user_error(trained_sweep, capsys):
    assert main([str(trained_sweep), "--run", "7"]) == 2
    assert "--run 7: " in capsys.readouterr().err
    with pytest.raises(UserError, match=r"has no finished run 7 \(no result.json\); finished runs: 0"):
        select_run(trained_sweep, 7)


def test_best_run_is_selected_by_default(tmp_path):
    make_optimization_sweep(tmp_path / "s")
    job_num, result = select_run(tmp_path / "s", None)
    assert job_num == 2
    assert result["config"]["momentum"] == 0.9


class _FakeRun:
    def __init__(self, final, best, epochs, status="ok"):
        self.final, self.best, self.status = final, best, status
        self.history = {"epoch": list(range(1, epochs + 1))}


class _FakeDataset:
    name, source, sha256 = "synthetic-faces", "built-in", "ab" * 32


def test_reproduce_run_uses_given_trainer(tmp_path):
    make_optimization_sweep(tmp_path / "s")
    _, result = select_run(tmp_path / "s", 2)
    recorded = result["metrics"]
    final = {name: recorded[name] for name in metrics.FINAL_METRICS}
    best = {name: recorded[name] for name in metrics.BEST_METRICS}
    seen = {}

    def fake_train(spec, dataset):
        seen["spec"] = spec
        return _FakeRun(final, best, recorded["epochs_run"])

    comparison = reproduce_run(result, 2, load=lambda path, start: _FakeDataset(),
                               train=fake_train)
    assert comparison.matches
    assert seen["spec"].num_hiddens == (16, 32)
    assert seen["spec"].check_grad is False


def test_status_change_is_mismatch(tmp_path):
    make_optimization_sweep(tmp_path / "s")
    _, result = select_run(tmp_path / "s", 5)
    run = _FakeRun(result["metrics"], result["metrics"], 2, status="ok")
    comparison = reproduce_run(result, 5, load=lambda p, s: _FakeDataset(), train=lambda s, d: run)
    assert not comparison.matches
    assert "status differs: recorded diverged, reproduced ok" in comparison.notes


def test_compare_metrics_treats_null_and_nan_alike():
    rows = {row[0]: row for row in compare_metrics(
        {"valid_ce": None, "best_epoch": 3, "test_ce": 1.0},
        {"valid_ce": math.nan, "best_epoch": 4, "test_ce": 1.0 + 1e-9}, rtol=1e-6)}
    assert rows["valid_ce"][4] is True
    assert rows["best_epoch"][4] is False
    assert rows["test_ce"][4] is True


def test_command_quotes_hidden_sizes_and_data_path():
    result = {"config": {**CONFIG, "eps": 1e-05, "max_ce": 50.0, "data": {"path": "x.npz"}},
              "dataset": {"source": "/data/my faces.npz", "synthetic": False}}
    assert command_for(result) == (
        "python -m tfd_sweep eps=1e-05 momentum=0.9 batch_size=500 num_epochs=2 "
        "'num_hiddens=[4,4]' seed=3 dtype=float64 max_ce=50.0 'data.path=/data/my faces.npz'")


def test_command_omits_default_max_ce():
    result = {"config": {**CONFIG, "max_ce": configured_max_ce()},
              "dataset": {"source": "built-in", "synthetic": True}}
    assert "max_ce" not in command_for(result)


def test_command_states_max_ce_of_older_default():
    # A run recorded under an earlier default must not retrain with today's bound.
    result = {"config": {**CONFIG, "max_ce": 1000.0}, "dataset": {"source": "built-in", "synthetic": True}}
    assert configured_max_ce() != 1000.0
    assert "max_ce=1000.0 data.path=builtin" in command_for(result)


def test_command_keeps_builtin_choice():
    result = {"config": CONFIG, "dataset": {"source": "built-in", "synthetic": True}}
    assert command_for(result).endswith("dtype=float64 data.path=builtin")

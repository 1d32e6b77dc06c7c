"""The single-run command end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest

from tfd_sweep.metrics import BEST_METRICS, FINAL_METRICS, HISTORY_COLUMNS


def test_single_run_writes_every_file(tfd, tmp_path):
    run_dir = tmp_path / "run"
    proc = tfd(["num_epochs=2", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    log = proc.stdout + proc.stderr

    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "result.json",
                 "history.csv", "weights.npz", "curves.png"):
        assert (run_dir / name).is_file(), name

    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "ok"
    assert record["dataset"]["name"] == "synthetic-faces"
    assert record["dataset"]["synthetic"] is True
    assert len(record["dataset"]["sha256"]) == 64
    for name in FINAL_METRICS + BEST_METRICS:
        assert record["metrics"][name] is not None, name
    assert record["config"]["num_epochs"] == 2
    assert record["grad_check"] is not None
    assert record["versions"]["numpy"] == np.__version__
    assert record["wall_time"] > 0

    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert tuple(rows[0]) == HISTORY_COLUMNS

    weights = np.load(run_dir / "weights.npz", allow_pickle=False)
    assert weights["W1"].shape == (2304, 16)
    assert weights["W3"].shape == (32, 7)

    assert "synthetic" in log.lower()
    assert "final" in log
    assert str(run_dir) in log


def test_single_run_on_real_photos_beats_majority_class(tfd, tmp_path, fer_file):
    run_dir = tmp_path / "run"
    proc = tfd(["num_epochs=20", "momentum=0.9", f"data.path={fer_file}", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout

    record = json.loads((run_dir / "result.json").read_text())
    data = np.load(fer_file, allow_pickle=False)
    valid_labels = data["target_valid"]
    majority_rate = np.bincount(valid_labels).max() / len(valid_labels)
    assert record["dataset"]["name"] == "fer2013_tfdformat"
    assert record["dataset"]["synthetic"] is False
    assert record["metrics"]["valid_acc"] > majority_rate + 0.02


def test_invalid_momentum_stops_quickly_with_message(tfd, tmp_path):
    start = time.perf_counter()
    proc = tfd(["momentum=1.5", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2
    assert "momentum=1.5 is invalid: momentum must be in [0, 1)" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "result.json").exists()
    assert elapsed < 20  # generous: the point is that nothing was trained


def test_unknown_key_suggests_closest(tfd, tmp_path):
    proc = tfd(["momentun=0.9"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown key 'momentun'. Did you mean 'momentum'?" in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("content", [b"", b"not a zip file at all"])
def test_bad_data_file_stops_before_training(tfd, tmp_path, content):
    bad = tmp_path / "toronto_face.npz"
    bad.write_bytes(content)
    proc = tfd([f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert str(bad) in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "result.json").exists()

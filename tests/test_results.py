"""Tests for reading sweep directories into DataFrames (tfd_sweep.results)."""

import json
import math

import pytest

from _fake_sweep import make_optimization_sweep, make_sweep
from tfd_sweep import metrics
from tfd_sweep.errors import UserError
from tfd_sweep.results import (RESULT_COLUMNS, STATUS_NOT_RUN, infer_swept_keys, load_history,
                               load_results, load_sweep, parse_num_hiddens)


@pytest.fixture()
def optimization_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    make_optimization_sweep(sweep_dir)
    return sweep_dir


def test_results_have_one_row_per_planned_job(optimization_sweep):
    results = load_results(optimization_sweep)
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert results["job_num"].tolist() == [0, 1, 2, 3, 4, 5]
    assert results["status"].tolist() == ["ok", STATUS_NOT_RUN, "ok", "ok", "failed", "diverged"]


def test_results_columns_hold_config_and_metrics(optimization_sweep):
    results = load_results(optimization_sweep).set_index("job_num")
    assert results.loc[2, "eps"] == 0.1
    assert results.loc[2, "momentum"] == 0.9
    assert results.loc[2, "num_hiddens"] == "[16, 32]"
    assert results.loc[2, "hidden1"] == 16
    assert results.loc[2, "hidden2"] == 32
    assert results.loc[2, "dataset"] == "synthetic-faces"
    assert results.loc[2, "overrides"] == "eps=0.1 momentum=0.9"
    assert results.loc[2, "best_epoch"] == 5
    assert results.loc[2, "run_dir"] == str(optimization_sweep.resolve() / "2")
    for name in metrics.FINAL_METRICS:
        assert math.isfinite(results.loc[2, name])


def test_failed_and_diverged_rows_keep_error_and_epoch(optimization_sweep):
    results = load_results(optimization_sweep).set_index("job_num")
    assert results.loc[4, "error"] == "ValueError: injected failure for the test"
    assert math.isnan(results.loc[4, "valid_ce"])
    assert results.loc[5, "diverged_epoch"] == 2
    assert math.isnan(results.loc[5, "valid_ce"])


def test_not_run_job_gets_config_from_overrides(optimization_sweep):
    row = load_results(optimization_sweep).set_index("job_num").loc[1]
    assert row["eps"] == 0.1
    assert row["momentum"] == 0.5
    assert row["batch_size"] == 100
    assert math.isnan(row["valid_ce"])


def test_history_is_long_format(optimization_sweep):
    history = load_history(optimization_sweep)
    assert list(history.columns) == ["job_num", "epoch", "split", "ce", "acc"]
    run0 = history[history["job_num"] == 0]
    assert len(run0) == 2 * 5
    assert set(run0["split"]) == {"train", "valid"}
    diverged = history[(history["job_num"] == 5) & (history["split"] == "train")]
    assert diverged["ce"].tolist()[-1] == math.inf
    assert 4 not in set(history["job_num"])


def test_plan_without_sweep_json_comes_from_multirun(tmp_path):
    sweep_dir = tmp_path / "sweep"
    make_optimization_sweep(sweep_dir, with_sweep_json=False)
    sweep = load_sweep(sweep_dir)
    assert [job.num for job in sweep.jobs] == [0, 1, 2, 3, 4, 5]
    assert sweep.jobs[1].overrides == ["eps=0.1", "momentum=0.5"]
    assert sweep.results.set_index("job_num").loc[1, "status"] == STATUS_NOT_RUN
    assert sweep.command == "python -m tfd_sweep -m eps=0.1,1.0 momentum=0.0,0.5,0.9"
    assert sweep.swept_keys == ["eps", "momentum"]


def test_sweep_json_supplies_command_and_swept_keys(optimization_sweep):
    sweep = load_sweep(optimization_sweep)
    assert sweep.command.startswith("python -m tfd_sweep -m ")
    assert sweep.swept_keys == ["eps", "momentum"]


def test_swept_keys_are_inferred_from_varying_columns(tmp_path):
    make_sweep(tmp_path / "s", {"num_hiddens": [[2, 2], [8, 8]], "seed": [0, 1]})
    results = load_results(tmp_path / "s")
    assert infer_swept_keys(results) == ["num_hiddens", "seed"]


def test_unreadable_result_becomes_failed_row(optimization_sweep):
    (optimization_sweep / "0" / metrics.RESULT_FILE).write_text("{not json")
    row = load_results(optimization_sweep).set_index("job_num").loc[0]
    assert row["status"] == metrics.STATUS_FAILED
    assert row["error"].startswith("unreadable result.json:")


def test_null_metrics_read_as_nan(optimization_sweep):
    path = optimization_sweep / "3" / metrics.RESULT_FILE
    result = json.loads(path.read_text())
    result["metrics"]["test_ce"] = None
    path.write_text(json.dumps(result))
    assert math.isnan(load_results(optimization_sweep).set_index("job_num").loc[3, "test_ce"])


def test_missing_sweep_dir_is_user_error(tmp_path):
    with pytest.raises(UserError, match=r"sweep directory .*missing not found: pass the directory"):
        load_results(tmp_path / "missing")


def test_empty_dir_is_not_a_sweep(tmp_path):
    with pytest.raises(UserError, match=r"contains no sweep: expected sweep.json, multirun.yaml"):
        load_results(tmp_path)


def test_parse_num_hiddens_reads_csv_cell():
    assert parse_num_hiddens("[16, 32]") == [16, 32]
    assert parse_num_hiddens("[100]") == [100]

"""Tests for the report's figures: titles inside the canvas, heatmap labels, plot roles."""

import logging
import math

import numpy as np
import pandas as pd
import pytest

from _fake_sweep import make_sweep
from tfd_sweep import plots
from tfd_sweep.report import build_report
from tfd_sweep.results import load_sweep

# The course's optimization grid at its largest: 5 x 3 x 5 = 75 runs.
LARGE_GRID = {"eps": [0.001, 0.01, 0.1, 0.5, 1.0], "momentum": [0.0, 0.5, 0.9],
              "batch_size": [10, 50, 100, 500, 1000]}
LONG_DATASET = {"name": "fer2013_tfdformat_with_a_long_file_name", "source": "/data/faces.npz",
                "sha256": "cd" * 32, "synthetic": False,
                "sizes": {"train": 10, "valid": 5, "test": 5}}


@pytest.fixture(scope="module")
def large_sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("large") / "sweep"
    base = {"eps": 0.01, "momentum": 0.0, "batch_size": 100, "num_epochs": 2,
            "num_hiddens": [16, 32], "seed": 0, "dtype": "float64", "check_grad": False,
            "max_ce": 100.0, "data": {"path": None}}
    make_sweep(sweep_dir, LARGE_GRID, statuses={14: "diverged", 29: "failed"}, base=base)
    return sweep_dir


def _clipped_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if "reaches outside the figure" in record.getMessage()]


def test_clipped_texts_finds_overlong_title(tmp_path):
    figure, (axis,) = plots._new_figure(1)
    figure.suptitle("x" * 200)
    assert plots.clipped_texts(figure) == ["x" * 200]


def test_suptitle_wraps_on_one_panel():
    figure, _ = plots._new_figure(1)
    title = "fer2013_tfdformat: cross-entropy per epoch (validation solid, train dashed) " * 2
    plots._suptitle(figure, title)
    assert "\n" in figure.get_suptitle()
    assert plots.clipped_texts(figure) == []


def test_report_titles_fit_inside_figures(tmp_path, caplog):
    sweep_dir = tmp_path / "s"
    make_sweep(sweep_dir, {"num_hiddens": [[2, 2], [16, 32], [100, 100]]}, dataset=LONG_DATASET,
               constant_overrides=("+sweep=hidden", "data.path=/data/faces.npz"))
    with caplog.at_level(logging.WARNING, logger="tfd_sweep.plots"):
        build_report(sweep_dir)
    assert _clipped_warnings(caplog) == []
    assert (sweep_dir / "learning_curves.png").is_file()


def test_large_sweep_figures_fit(large_sweep, caplog):
    with caplog.at_level(logging.WARNING, logger="tfd_sweep.plots"):
        build_report(large_sweep)
    assert _clipped_warnings(caplog) == []
    names = sorted(path.name for path in large_sweep.glob("*.png"))
    assert names == ["heatmap_valid_ce_eps_momentum.png", "learning_curves.png",
                     "metrics_vs_batch_size.png", "metrics_vs_eps.png",
                     "metrics_vs_momentum.png"]


def test_heatmap_cells_show_three_decimals():
    rows = pd.DataFrame({"eps": [0.1, 0.1, 1.0, 1.0], "momentum": [0.0, 0.9, 0.0, 0.9],
                         "status": ["ok", "ok", "diverged", "ok"],
                         "valid_ce": [1.8012, 1.8049, 1.7, math.nan]})
    grid, notes = plots.heatmap_cells(rows, "momentum", "eps", [0.0, 0.9], [0.1, 1.0], "valid_ce")
    assert notes.tolist() == [["1.801", "1.805"], ["diverged", "non-finite"]]
    assert grid[0].tolist() == [1.8012, 1.8049]
    assert np.isnan(grid[1]).all()


def test_heatmap_cells_mark_missing_cell():
    rows = pd.DataFrame({"eps": [0.1], "momentum": [0.0], "status": ["ok"], "valid_ce": [2.0]})
    _, notes = plots.heatmap_cells(rows, "momentum", "eps", [0.0, 0.9], [0.1], "valid_ce")
    assert notes.tolist() == [["2.000", "not run"]]


def test_curve_roles_for_three_keys(large_sweep):
    sweep = load_sweep(large_sweep)
    roles = plots.curve_roles(sweep.results, sweep.swept_keys)
    assert roles == plots.CurveRoles("batch_size", ("eps",), "momentum")


def test_curve_roles_for_single_key(tmp_path):
    make_sweep(tmp_path / "s", {"eps": [0.001, 0.01, 0.1, 0.5, 1.0]})
    sweep = load_sweep(tmp_path / "s")
    assert plots.curve_roles(sweep.results, sweep.swept_keys) == plots.CurveRoles(None, ("eps",), None)


def test_curve_roles_ignore_seed(tmp_path):
    make_sweep(tmp_path / "s", {"num_hiddens": [[2, 2], [16, 32]], "seed": [0, 1]})
    sweep = load_sweep(tmp_path / "s")
    roles = plots.curve_roles(sweep.results, sweep.swept_keys)
    assert roles == plots.CurveRoles(None, ("num_hiddens",), None)


def test_curve_roles_move_many_valued_key_to_panels(tmp_path):
    make_sweep(tmp_path / "s", {"eps": [0.01, 0.1], "batch_size": [10, 50, 100, 500, 1000]})
    sweep = load_sweep(tmp_path / "s")
    roles = plots.curve_roles(sweep.results, sweep.swept_keys)
    assert roles == plots.CurveRoles("batch_size", ("eps",), None)


def test_learning_curves_one_row_per_batch_size(large_sweep, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure) or path)
    sweep = load_sweep(large_sweep)
    plots.plot_learning_curves(sweep.results, sweep.history, sweep.swept_keys,
                               large_sweep / "curves.png", "curves")
    (figure,) = figures
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[:2] == ["validation cross-entropy, batch_size=10",
                          "train cross-entropy, batch_size=10"]
    assert len(titles) == 10
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == ["eps=0.001", "eps=0.01", "eps=0.1", "eps=0.5", "eps=1",
                      "momentum=0", "momentum=0.5", "momentum=0.9"]


def test_metric_lines_average_when_many_combinations(large_sweep):
    results = load_sweep(large_sweep).results
    assert plots.metric_line_keys(results, ["momentum", "batch_size"]) == (["momentum"], ["batch_size"])
    assert plots.metric_line_keys(results, ["eps", "momentum"]) == (["momentum"], ["eps"])


def test_metric_lines_kept_for_few_combinations(large_sweep):
    results = load_sweep(large_sweep).results
    assert plots.metric_line_keys(results, ["momentum"]) == (["momentum"], [])
    assert plots.metric_line_keys(results, []) == ([], [])


def test_metric_vs_key_draws_one_line_per_momentum(large_sweep, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure) or path)
    results = load_sweep(large_sweep).results
    plots.plot_metric_vs_key(results, "eps", large_sweep / "m.png", "m", ["momentum", "batch_size"])
    (figure,) = figures
    ce_axis = figure.axes[0]
    assert len(ce_axis.get_lines()) == 3
    assert ce_axis.get_xscale() == "log"
    assert "mean over batch_size" in ce_axis.get_title()


def test_accuracy_curves_panel_per_hidden_size(tmp_path, monkeypatch):
    make_sweep(tmp_path / "s", {"num_hiddens": [[100, 100], [2, 2], [16, 32]]})
    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure) or path)
    sweep = load_sweep(tmp_path / "s")
    plots.plot_accuracy_curves(sweep.results, sweep.history, sweep.swept_keys,
                               tmp_path / "a.png", "accuracy")
    (figure,) = figures
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == ["num_hiddens=[2, 2]\n4,637 parameters",
                      "num_hiddens=[16, 32]\n37,655 parameters",
                      "num_hiddens=[100, 100]\n241,307 parameters"]
    # valid and train accuracy per panel, plus the best-epoch marker.
    assert len(figure.axes[0].get_lines()) == 3

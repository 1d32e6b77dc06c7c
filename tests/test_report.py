"""Tests for the sweep report: CSV tables, plots, report.html/md, best run and callback."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from _fake_sweep import OPTIMIZATION_GRID, make_optimization_sweep, make_sweep
from tfd_sweep import metrics, plots, tables
from tfd_sweep.callbacks import ReportCallback
from tfd_sweep.errors import UserError
from tfd_sweep.report import build_report, format_cell, main
from tfd_sweep.results import RESULT_COLUMNS, load_results

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HANGUL = re.compile("[\uac00-\ud7a3]")


@pytest.fixture()
def optimization_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    make_optimization_sweep(sweep_dir)
    return sweep_dir


def test_report_writes_every_file(optimization_sweep):
    report = build_report(optimization_sweep)
    expected = ["results.csv", "history.csv", "ranking.csv", "report.html", "report.md",
                "best_config.yaml", "best_command.txt", "learning_curves.png",
                "heatmap_valid_ce_eps_momentum.png", "metrics_vs_eps.png",
                "metrics_vs_momentum.png", "summary_valid_ce_eps_momentum_batch_size_100.csv"]
    for name in expected:
        assert (optimization_sweep / name).is_file(), name
    for path in optimization_sweep.glob("*.png"):
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    assert report.counts == {"ok": 3, "diverged": 1, "failed": 1, "not run": 1}
    assert report.incomplete


def test_results_csv_has_rows_and_columns(optimization_sweep):
    build_report(optimization_sweep)
    results = pd.read_csv(optimization_sweep / "results.csv")
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert len(results) == 6
    history = pd.read_csv(optimization_sweep / "history.csv")
    assert list(history.columns) == ["job_num", "epoch", "split", "ce", "acc"]


def test_ranking_puts_bad_runs_last(optimization_sweep):
    build_report(optimization_sweep)
    ranking = pd.read_csv(optimization_sweep / "ranking.csv")
    assert ranking["job_num"].tolist() == [2, 0, 3, 1, 4, 5]
    assert ranking["rank"].tolist()[:3] == [1, 2, 3]
    assert ranking["rank"].isna().tolist()[3:] == [True, True, True]
    assert ranking["status"].tolist()[3:] == ["not run", "failed", "diverged"]


def test_best_run_skips_diverged_run_with_low_metric(optimization_sweep):
    # A diverged run can have a finite, low valid_ce; it must still never be the best.
    path = optimization_sweep / "5" / metrics.RESULT_FILE
    result = json.loads(path.read_text())
    result["metrics"]["valid_ce"] = 0.01
    path.write_text(json.dumps(result))
    report = build_report(optimization_sweep)
    assert int(report.best["job_num"]) == 2
    ranking = pd.read_csv(optimization_sweep / "ranking.csv")
    assert ranking["job_num"].tolist()[-1] == 5


def test_best_run_skips_non_finite_metric(optimization_sweep):
    path = optimization_sweep / "2" / metrics.RESULT_FILE
    result = json.loads(path.read_text())
    result["metrics"]["valid_ce"] = None
    path.write_text(json.dumps(result))
    assert int(build_report(optimization_sweep).best["job_num"]) == 0


def test_best_run_by_max_of_other_metric(optimization_sweep):
    path = optimization_sweep / "3" / metrics.RESULT_FILE
    result = json.loads(path.read_text())
    result["metrics"]["valid_acc"] = 0.99
    path.write_text(json.dumps(result))
    report = build_report(optimization_sweep, metric="valid_acc", mode="max")
    assert int(report.best["job_num"]) == 3


def test_invalid_metric_names_choices(optimization_sweep):
    with pytest.raises(UserError, match=r"report.metric='valid_loss' is not a metric; expected one of train_ce"):
        build_report(optimization_sweep, metric="valid_loss")


def test_best_command_and_config(optimization_sweep):
    build_report(optimization_sweep)
    command = (optimization_sweep / "best_command.txt").read_text().strip()
    assert command == ("python -m tfd_sweep eps=0.1 momentum=0.9 batch_size=100 num_epochs=5 "
                       "'num_hiddens=[16,32]' seed=0 dtype=float64")
    text = (optimization_sweep / "best_config.yaml").read_text()
    assert text.startswith("# Best run of this sweep by valid_ce (min): run 2")
    config = yaml.safe_load(text)
    assert config["eps"] == 0.1
    assert config["momentum"] == 0.9
    assert config["num_hiddens"] == [16, 32]
    assert config["data"] == {"path": None}


def test_best_command_names_data_file(tmp_path):
    data_file = tmp_path / "faces.npz"
    dataset = {"name": "faces", "source": str(data_file), "sha256": "cd" * 32,
               "synthetic": False, "sizes": {"train": 10, "valid": 5, "test": 5}}
    make_sweep(tmp_path / "s", {"eps": [0.01, 0.1]}, dataset=dataset)
    build_report(tmp_path / "s")
    command = (tmp_path / "s" / "best_command.txt").read_text().strip()
    assert command.endswith(f"dtype=float64 data.path={data_file}")
    html = (tmp_path / "s" / "report.html").read_text()
    assert "<title>Sweep report: faces</title>" in html
    assert "Synthetic data" not in html


def test_html_is_self_contained_with_title_and_sections(optimization_sweep):
    build_report(optimization_sweep)
    html = (optimization_sweep / "report.html").read_text()
    assert "<title>Sweep report: synthetic-faces</title>" in html
    assert "Synthetic data: these runs trained on the built-in synthetic data" in html
    assert "python -m tfd_sweep -m &#x27;eps=0.1,1.0&#x27;" in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 4
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert "ValueError: injected failure for the test" in html
    assert "Runs not run" in html
    assert "<td>eps=0.1, momentum=0.5</td>" in html
    assert "python -m tfd_sweep.reproduce" in html


def test_optimization_table_marks_bad_cells(optimization_sweep):
    build_report(optimization_sweep)
    table = pd.read_csv(optimization_sweep / "summary_valid_ce_eps_momentum_batch_size_100.csv",
                        index_col="eps")
    assert table.loc[0.1, "0.9"] == pytest.approx(1.0433, abs=1e-4)
    assert math.isnan(table.loc[1.0, "0.9"])
    html = (optimization_sweep / "report.html").read_text()
    assert "<td>diverged</td>" in html
    assert "<td>failed</td>" in html


def test_markdown_links_existing_pngs(optimization_sweep):
    build_report(optimization_sweep)
    markdown = (optimization_sweep / "report.md").read_text()
    assert markdown.startswith("# Sweep report: synthetic-faces")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(images) == 4
    for name in images:
        assert (optimization_sweep / name).is_file(), name
    assert "| eps | momentum = 0 | momentum = 0.5 | momentum = 0.9 |" in markdown


def test_korean_report_has_korean_text(optimization_sweep):
    build_report(optimization_sweep, lang="ko")
    html = (optimization_sweep / "report.html").read_text()
    markdown = (optimization_sweep / "report.md").read_text()
    assert '<html lang="ko">' in html
    assert "스윕 보고서: synthetic-faces" in html
    assert "합성 데이터" in markdown
    assert len(HANGUL.findall(markdown)) > 100
    assert "cross-entropy" in markdown


def test_unknown_language_is_user_error(optimization_sweep):
    with pytest.raises(UserError, match=r"report.lang='fr' is not supported; expected one of en, ko"):
        build_report(optimization_sweep, lang="fr")


def test_hidden_sweep_tables_and_plot(tmp_path):
    sweep_dir = tmp_path / "s"
    make_sweep(sweep_dir, {"num_hiddens": [[100, 100], [2, 2], [16, 32]], "seed": [0, 1]})
    build_report(sweep_dir)
    architecture = pd.read_csv(sweep_dir / "summary_architecture.csv")
    assert architecture["num_hiddens"].tolist() == ["[2, 2]", "[16, 32]", "[100, 100]"]
    assert architecture["n_runs"].tolist() == [2, 2, 2]
    seeds = pd.read_csv(sweep_dir / "summary_seeds.csv")
    assert len(seeds) == 3
    assert seeds["valid_ce_std"].gt(0).all()
    assert (sweep_dir / "hidden_size.png").is_file()


def test_architecture_table_counts_parameters(tmp_path):
    sweep_dir = tmp_path / "s"
    make_sweep(sweep_dir, {"num_hiddens": [[100, 100], [2, 2], [16, 32]]})
    build_report(sweep_dir)
    architecture = pd.read_csv(sweep_dir / "summary_architecture.csv")
    assert list(architecture.columns[:3]) == ["num_hiddens", "n_params", "n_runs"]
    assert architecture["n_params"].tolist() == [4637, 37655, 241307]
    assert architecture["acc_gap"].tolist() == pytest.approx([0.1, 0.1, 0.1])
    assert tables.count_parameters([16, 32]) == 2304 * 16 + 16 + 16 * 32 + 32 + 32 * 7 + 7


def test_count_parameters_needs_two_sizes():
    with pytest.raises(ValueError, match=r"num_hiddens='\[8\]': expected two hidden sizes"):
        tables.count_parameters("[8]")


def test_hidden_sweep_report_has_accuracy_curves(tmp_path):
    sweep_dir = tmp_path / "s"
    make_sweep(sweep_dir, {"num_hiddens": [[2, 2], [16, 32]]})
    build_report(sweep_dir)
    assert (sweep_dir / "accuracy_curves.png").is_file()
    markdown = (sweep_dir / "report.md").read_text()
    assert "![Train and validation accuracy per epoch, one panel per hidden size" in markdown
    assert "(accuracy_curves.png)" in markdown


def test_summary_cells_use_column_decimals(tmp_path):
    sweep_dir = tmp_path / "s"
    make_sweep(sweep_dir, {"num_hiddens": [[2, 2], [16, 32]]})
    build_report(sweep_dir)
    markdown = (sweep_dir / "report.md").read_text()
    header = ("| num_hiddens | n_params | n_runs | n_ok | train_ce | train_acc | valid_ce | "
              "valid_acc | acc_gap | test_ce | test_acc | best_epoch | best_valid_ce |")
    assert header in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| [2, 2] | 4,637 |"))
    # fake_valid_ce: 1 + 0.2 * |log10(0.01) + 1| + 0.3 * 0.9 + 0.3 / sqrt(4) = 1.62
    assert row == ("| [2, 2] | 4,637 | 1 | 1 | 1.5200 | 0.700 | 1.6200 | 0.600 | 0.100 | "
                   "1.6700 | 0.580 | 5 | 1.6200 |")


@pytest.mark.parametrize("column, value, shown", [
    ("best_epoch", 49.0, "49"),
    ("best_epoch", 32.5, "32.5"),
    ("n_runs", 3, "3"),
    ("n_params", 241307, "241,307"),
    ("valid_ce", 1.70734, "1.7073"),
    ("valid_acc", 0.32219, "0.322"),
    ("valid_acc_std", 0.0123, "0.012"),
    ("valid_ce_mean", 1.70734, "1.7073"),
    ("wall_time", 12.345, "12.3"),
    ("eps", 0.001, "0.001"),
    ("valid_ce", math.inf, "inf"),
    ("valid_ce", math.nan, "—"),
    ("diverged_epoch", pd.NA, "—"),
])
def test_format_cell_by_column(column, value, shown):
    assert format_cell(column, value) == shown


def test_runs_named_by_swept_keys_only(tmp_path):
    sweep_dir = tmp_path / "s"
    make_sweep(sweep_dir, OPTIMIZATION_GRID, statuses={4: "failed"}, not_run=(1,),
               constant_overrides=("+sweep=hidden", "data.path=/data/faces.npz"))
    build_report(sweep_dir)
    html = (sweep_dir / "report.html").read_text()
    markdown = (sweep_dir / "report.md").read_text()
    assert "run 2 (eps=0.1, momentum=0.9) with valid_ce" in markdown
    assert "| 4 | failed | eps=1, momentum=0.5 |" in markdown
    assert "| 1 | eps=0.1, momentum=0.5 |" in markdown
    assert "+sweep=hidden" not in html.split("<h2>Best run</h2>")[1]
    assert "data.path=/data/faces.npz" not in markdown.split("## Best run")[1]


def test_three_key_grid_heatmap_panels(tmp_path):
    sweep_dir = tmp_path / "s"
    grid = {"eps": [0.001, 0.1, 1.0], "momentum": [0.0, 0.9], "batch_size": [10, 100]}
    make_sweep(sweep_dir, grid, statuses={3: "diverged", 4: "failed"}, not_run=(11,))
    build_report(sweep_dir)
    names = sorted(path.name for path in sweep_dir.glob("summary_*.csv"))
    assert names == ["summary_valid_ce_eps_momentum_batch_size_10.csv",
                     "summary_valid_ce_eps_momentum_batch_size_100.csv"]
    assert (sweep_dir / "heatmap_valid_ce_eps_momentum.png").is_file()


def test_plots_survive_all_non_finite_values(tmp_path):
    results = pd.DataFrame({
        "job_num": [0, 1], "status": ["diverged", "failed"], "eps": [0.1, 1.0],
        "momentum": [0.0, 0.9], "num_hiddens": ["[2, 2]", "[4, 4]"],
        **{name: [math.inf, math.nan] for name in metrics.FINAL_METRICS},
    })
    history = pd.DataFrame({"job_num": [0, 0], "epoch": [1, 1], "split": ["train", "valid"],
                            "ce": [math.inf, math.nan], "acc": [math.nan, math.nan]})
    paths = [
        plots.plot_heatmaps(results, "momentum", "eps", tmp_path / "h.png", "t"),
        plots.plot_learning_curves(results, history, ["eps"], tmp_path / "c.png", "t"),
        plots.plot_metric_vs_key(results, "eps", tmp_path / "m.png", "t"),
        plots.plot_hidden_size(results, tmp_path / "s.png", "t"),
        plots.plot_curves({"epoch": np.array([1, 2]), "train_ce": np.array([1.0, np.inf]),
                           "train_acc": np.array([0.1, np.nan]), "valid_ce": np.array([np.nan] * 2),
                           "valid_acc": np.array([0.2, 0.3])}, tmp_path / "r.png", "run"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_curves_accepts_dataframe(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_ce": [2.0, 1.5, 1.2],
                            "train_acc": [0.2, 0.4, 0.5], "valid_ce": [2.1, 1.7, 1.6],
                            "valid_acc": [0.2, 0.3, 0.35]})
    path = plots.plot_curves(history, tmp_path / "out" / "curves.png", "run 0")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_plots_do_not_select_a_global_backend():
    code = ("import matplotlib, tfd_sweep.plots, tfd_sweep.report; "
            "import sys; print('matplotlib.pyplot' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert output.stdout.strip() == "False"


def test_rebuild_cli_writes_report(optimization_sweep, capsys):
    assert main([str(optimization_sweep), "--lang", "ko"]) == 0
    output = capsys.readouterr().out
    assert f"report: {optimization_sweep.resolve() / 'report.html'}" in output
    assert "1 failed and 1 not run" in output
    assert HANGUL.search((optimization_sweep / "report.md").read_text())


def test_rebuild_cli_reports_missing_dir(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "error: sweep directory" in capsys.readouterr().err


def test_rebuild_cli_handles_no_best_run(tmp_path, capsys):
    make_sweep(tmp_path / "s", {"eps": [0.1, 1.0]}, statuses={0: "failed", 1: "diverged"})
    (tmp_path / "s" / "best_command.txt").write_text("stale\n")
    assert main([str(tmp_path / "s")]) == 0
    assert "no best run" in capsys.readouterr().out
    assert not (tmp_path / "s" / "best_command.txt").exists()


def _callback_config(sweep_dir, lang="en"):
    return OmegaConf.create({"report": {"lang": lang, "metric": "valid_ce", "mode": "min"},
                             "hydra": {"sweep": {"dir": str(sweep_dir)}}})


def test_callback_exits_1_after_writing_incomplete_sweep(optimization_sweep, caplog):
    caplog.set_level("INFO")
    with pytest.raises(SystemExit) as exit_info:
        ReportCallback().on_multirun_end(config=_callback_config(optimization_sweep))
    assert exit_info.value.code == 1
    assert (optimization_sweep / "report.html").is_file()
    assert (optimization_sweep / "best_command.txt").is_file()
    assert "reproduce the best run with: python -m tfd_sweep eps=0.1" in caplog.text
    assert "sweep incomplete: 1 failed, 1 not run" in caplog.text


def test_callback_returns_for_complete_sweep(tmp_path, caplog):
    caplog.set_level("INFO")
    make_sweep(tmp_path / "s", {"eps": [0.01, 0.1]}, statuses={1: "diverged"})
    ReportCallback().on_multirun_end(config=_callback_config(tmp_path / "s", lang="ko"))
    assert HANGUL.search((tmp_path / "s" / "report.html").read_text())
    assert "best run 0 by valid_ce (min)" in caplog.text


def test_callback_exits_1_when_report_fails(tmp_path, caplog):
    with pytest.raises(SystemExit) as exit_info:
        ReportCallback().on_multirun_end(config=_callback_config(tmp_path / "missing"))
    assert exit_info.value.code == 1
    assert "could not build the sweep report: sweep directory" in caplog.text


@pytest.mark.slow
def test_real_four_run_sweep_writes_report(tmp_path):
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "-m", "tfd_sweep", "-m", "eps=0.01,0.1", "momentum=0.0,0.9",
               "num_epochs=3", "check_grad=false", "data.path=builtin",
               f"hydra.sweep.dir={sweep_dir}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]

    results = pd.read_csv(sweep_dir / "results.csv")
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert len(results) == 4
    assert set(results["status"]) == {"ok"}
    assert sorted(zip(results["eps"], results["momentum"])) == [
        (0.01, 0.0), (0.01, 0.9), (0.1, 0.0), (0.1, 0.9)]
    history = pd.read_csv(sweep_dir / "history.csv")
    assert len(history) == 4 * 3 * 2
    for name in ["ranking.csv", "report.html", "report.md", "best_config.yaml",
                 "best_command.txt", "heatmap_valid_ce_eps_momentum.png", "learning_curves.png",
                 "summary_valid_ce_eps_momentum_batch_size_100.csv"]:
        assert (sweep_dir / name).is_file(), name
    best_command = (sweep_dir / "best_command.txt").read_text().strip()
    assert best_command in done.stdout + done.stderr
    assert load_results(sweep_dir)["dataset"].tolist() == ["synthetic-faces"] * 4
    assert tables.best_run(load_results(sweep_dir)) is not None

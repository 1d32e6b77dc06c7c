"""Build a sweep's CSV tables, plots, report.html, report.md and best configuration.

    python -m tfd_sweep.report <sweep dir> [--lang ko] [--metric valid_ce] [--mode min]

Everything is rebuilt from the run directories alone, so this also works for a sweep that
was interrupted: planned jobs without result.json are listed as "not run".
"""

from __future__ import annotations

import argparse
import base64
import html
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tfd_sweep import __version__, i18n, metrics, plots, tables
from tfd_sweep.errors import UserError
from tfd_sweep.reproduce import command_for, data_path_for
from tfd_sweep.results import STATUS_NOT_RUN, Sweep, load_sweep
from tfd_sweep.runfiles import atomic_write, write_text

logger = logging.getLogger(__name__)

RESULTS_CSV = "results.csv"
HISTORY_CSV = "history.csv"
RANKING_CSV = "ranking.csv"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
BEST_CONFIG = "best_config.yaml"
BEST_COMMAND = "best_command.txt"
# Hyperparameter columns formatted with %g (0.001) rather than as metrics (1.2345).
HYPERPARAMETER_COLUMNS = set(metrics.HYPERPARAMETERS) | {"max_ce", "hidden1", "hidden2"}
# Columns of counts, epochs and whole-number settings, shown without decimals.
INTEGER_COLUMNS = {"job_num", "rank", "n_runs", "n_ok", "n_finite", "n_params", "best_epoch",
                   "epochs_run", "diverged_epoch", "hidden1", "hidden2", "batch_size",
                   "num_epochs", "seed"}
# Integer columns large enough to need thousands separators.
THOUSANDS_COLUMNS = {"n_params"}


@dataclass
class Figure:
    """A plot written into the sweep directory, with its caption."""

    path: Path
    caption: str


@dataclass
class Report:
    """What build_report wrote, and the counts the sweep's exit status depends on."""

    sweep_dir: Path
    html_path: Path
    md_path: Path
    best: pd.Series | None
    best_command: str | None
    check_command: str | None
    counts: dict[str, int]
    files: list[Path] = field(default_factory=list)

    @property
    def incomplete(self) -> bool:
        """True if any planned run failed or did not run (diverged runs are results)."""
        return self.counts[metrics.STATUS_FAILED] > 0 or self.counts[STATUS_NOT_RUN] > 0


def build_report(sweep_dir, lang: str = "en", metric: str = "valid_ce",
                 mode: str = "min") -> Report:
    """Read the sweep at `sweep_dir` and write every report file into it."""
    text = i18n.messages(lang)
    sweep = load_sweep(sweep_dir)
    tables.check_metric(sweep.results, metric, mode)
    out = sweep.sweep_dir
    files = []

    logger.info("writing tables for %d runs into %s", len(sweep.results), out)
    files.append(_write_csv(sweep.results, out / RESULTS_CSV))
    files.append(_write_csv(sweep.history, out / HISTORY_CSV))
    ranking = tables.rank_runs(sweep.results, sweep.swept_keys, metric, mode)
    files.append(_write_csv(ranking, out / RANKING_CSV))
    summaries = tables.summary_tables(sweep.results, sweep.swept_keys)
    for table in summaries:
        index = table.kind == "optimization"
        files.append(_write_csv(table.frame, out / f"summary_{table.name}.csv", index=index))

    logger.info("drawing plots")
    figures = make_figures(sweep, text, metric)
    files.extend(figure.path for figure in figures)

    best = tables.best_run(sweep.results, metric, mode)
    best_command = check_command = None
    if best is None:
        for stale in (out / BEST_CONFIG, out / BEST_COMMAND):
            stale.unlink(missing_ok=True)
    else:
        result = sweep.raw[int(best["job_num"])]
        best_command = command_for(result)
        check_command = f"python -m tfd_sweep.reproduce {_quote(str(out))} --run {int(best['job_num'])}"
        files.append(_write_best_config(result, best, metric, mode, best_command, out / BEST_CONFIG))
        write_text(out / BEST_COMMAND, best_command + "\n")
        files.append(out / BEST_COMMAND)

    counts = {status: int((sweep.results["status"] == status).sum())
              for status in metrics.STATUSES + (STATUS_NOT_RUN,)}
    report = Report(out, out / REPORT_HTML, out / REPORT_MD, best, best_command, check_command,
                    counts, files)
    context = _Context(sweep, text, metric, mode, summaries, ranking, figures, report)
    write_text(report.html_path, render_html(context))
    write_text(report.md_path, render_markdown(context))
    files.extend([report.html_path, report.md_path])
    logger.info("wrote %s and %s", report.html_path, report.md_path)
    return report


# --- plots ----------------------------------------------------------------------------------


def make_figures(sweep: Sweep, text: dict, metric: str) -> list[Figure]:
    """Draw the plots that fit the swept keys and return them with their captions."""
    results, out = sweep.results, sweep.sweep_dir
    dataset = _dataset_name(sweep, text)
    swept = [key for key in sweep.swept_keys if key in results]
    grid_keys = [key for key in swept if key != "seed"]
    figures = []

    if len(grid_keys) >= 2:
        x_key, y_key = _heatmap_axes(grid_keys)
        rest = [key for key in grid_keys if key not in (x_key, y_key)]
        panel_key = None
        if "batch_size" in rest:
            panel_key = "batch_size"
        elif rest:
            panel_key = rest[0]
        caption = text["plot_heatmap"].format(metric="valid_ce", x_key=x_key, y_key=y_key)
        path = plots.plot_heatmaps(results, x_key, y_key, out / f"heatmap_valid_ce_{y_key}_{x_key}.png",
                                   f"{dataset}: valid_ce over {y_key} x {x_key}", panel_key=panel_key)
        figures.append(Figure(path, caption))

    if not sweep.history.empty:
        path = plots.plot_learning_curves(results, sweep.history, swept, out / "learning_curves.png",
                                          f"{dataset}: cross-entropy per epoch")
        roles = plots.curve_roles(results, swept)
        figures.append(Figure(path, _curves_caption(roles, text)))

    for key in grid_keys:
        if key in ("num_hiddens", "dtype"):
            continue
        group_keys = [other for other in grid_keys if other != key]
        path = plots.plot_metric_vs_key(results, key, out / f"metrics_vs_{key}.png",
                                        f"{dataset}: final metrics against {key}", group_keys)
        figures.append(Figure(path, text["plot_metric_vs"].format(key=key)))

    if "num_hiddens" in grid_keys:
        path = plots.plot_hidden_size(results, out / "hidden_size.png",
                                      f"{dataset}: accuracy and cross-entropy against num_hiddens")
        figures.append(Figure(path, text["plot_hidden"]))
        if not sweep.history.empty:
            path = plots.plot_accuracy_curves(
                results, sweep.history, swept, out / "accuracy_curves.png",
                f"{dataset}: train and validation accuracy per epoch by hidden size")
            figures.append(Figure(path, text["plot_accuracy_curves"]))
    return figures


def _curves_caption(roles: plots.CurveRoles, text: dict) -> str:
    parts = [text["plot_curves"]]
    if roles.colour_keys:
        parts.append(text["roles_colour"].format(keys=", ".join(roles.colour_keys)))
    if roles.style_key:
        parts.append(text["roles_style"].format(key=roles.style_key))
    if roles.panel_key:
        parts.append(text["roles_rows"].format(key=roles.panel_key))
    return "; ".join(parts)


def _heatmap_axes(grid_keys: list[str]) -> tuple[str, str]:
    """Return (x_key, y_key): momentum across and eps down when both were swept."""
    if "eps" in grid_keys and "momentum" in grid_keys:
        return "momentum", "eps"
    return grid_keys[1], grid_keys[0]


# --- files ----------------------------------------------------------------------------------


def _write_csv(frame: pd.DataFrame, path: Path, index: bool = False) -> Path:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=index))
    return path


def _write_best_config(result: dict, best: pd.Series, metric: str, mode: str, command: str,
                       path: Path) -> Path:
    import yaml

    config = result.get("config") or {}
    values = {key: config.get(key) for key in metrics.HYPERPARAMETERS}
    values["num_hiddens"] = [int(size) for size in config["num_hiddens"]]
    values["max_ce"] = config.get("max_ce")
    values["data"] = {"path": data_path_for(result)}
    header = (f"# Best run of this sweep by {metric} ({mode}): run {int(best['job_num'])}, "
              f"{metric} = {best[metric]:.6g}\n# Reproduce: {command}\n")
    write_text(path, header + yaml.safe_dump(values, sort_keys=False))
    return path


# --- rendering ------------------------------------------------------------------------------


@dataclass
class _Context:
    sweep: Sweep
    text: dict
    metric: str
    mode: str
    summaries: list
    ranking: pd.DataFrame
    figures: list[Figure]
    report: Report

    @property
    def title(self) -> str:
        return self.text["title"].format(dataset=_dataset_name(self.sweep, self.text))


def _dataset_name(sweep: Sweep, text: dict) -> str:
    names = sorted(str(name) for name in sweep.results["dataset"].dropna().unique())
    return ", ".join(names) if names else text["unknown_dataset"]


def _is_synthetic(sweep: Sweep) -> bool:
    return bool(sweep.results["dataset_synthetic"].fillna(False).astype(bool).any())


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def column_decimals(column: str) -> int:
    """Return the decimals shown for a float column: ce 4, acc 3, wall_time 1, others 4.

    Seed summaries name their columns <metric>_mean and <metric>_std, which take the
    decimals of <metric>.
    """
    base = column.removesuffix("_mean").removesuffix("_std")
    if base.endswith("_acc") or base == "acc_gap":
        return 3
    if base == "wall_time":
        return 1
    return 4


def format_cell(column: str, value) -> str:
    """Format one table cell for the report.

    Missing and NaN cells show "—". Count and epoch columns (INTEGER_COLUMNS) show whole
    numbers, or one decimal for a mean that is not whole. Hyperparameters use %g, and
    metrics the decimals of column_decimals.
    """
    if value is None or value is pd.NA:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if column in THOUSANDS_COLUMNS else str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if column in INTEGER_COLUMNS:
            if value.is_integer():
                return format_cell(column, int(value))
            return f"{value:.1f}"
        if column in HYPERPARAMETER_COLUMNS:
            return f"{value:g}"
        return f"{value:.{column_decimals(column)}f}"
    return str(value)


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of `frame` with every cell formatted as a string by format_cell."""
    shown = frame.astype(object).copy()
    for column in shown.columns:
        shown[column] = [format_cell(str(column), value) for value in frame[column].tolist()]
    return shown


def _summary_display(table) -> pd.DataFrame:
    if table.display is None:
        return display_frame(table.frame)
    shown = table.display.copy()
    shown.columns = [f"momentum = {plots.format_value(value)}" for value in shown.columns]
    shown.insert(0, "eps", [plots.format_value(value) for value in shown.index])
    return shown.reset_index(drop=True)


def _summary_caption(table, text: dict) -> str:
    key = f"table_{table.kind}"
    return text[key].format(**table.detail)


def run_label(row: pd.Series, swept_keys) -> str:
    """Name a run by its swept values ("eps=0.1, momentum=0.9"), not its full override list.

    Constant overrides such as data.path or +sweep=hidden are the same for every run and
    left out. Without swept keys, the run's overrides are returned.
    """
    keys = [key for key in swept_keys if key in row.index]
    if not keys:
        return str(row.get("overrides") or "—")
    return ", ".join(f"{key}={plots.format_value(row[key])}" for key in keys)


def _failure_rows(context: _Context) -> pd.DataFrame:
    results = context.sweep.results
    return results[results["status"].isin([metrics.STATUS_FAILED, metrics.STATUS_DIVERGED])]


def _not_run_rows(context: _Context) -> pd.DataFrame:
    results = context.sweep.results
    return results[results["status"] == STATUS_NOT_RUN]


def _counts_line(context: _Context) -> str:
    counts = context.report.counts
    return context.text["counts"].format(
        total=len(context.sweep.results), ok=counts[metrics.STATUS_OK],
        diverged=counts[metrics.STATUS_DIVERGED], failed=counts[metrics.STATUS_FAILED],
        not_run=counts[STATUS_NOT_RUN])


def _best_line(context: _Context) -> str:
    best = context.report.best
    if best is None:
        return context.text["best_none"].format(metric=context.metric)
    return context.text["best_text"].format(
        metric=context.metric, mode=context.mode, job_num=int(best["job_num"]),
        config=run_label(best, context.sweep.swept_keys), value=f"{best[context.metric]:.6g}")


def render_html(context: _Context) -> str:
    """Return report.html: one self-contained page, images embedded as data URIs."""
    text, sweep, esc = context.text, context.sweep, html.escape
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{"ko" if text is i18n.KOREAN else "en"}"><head><meta charset="utf-8">',
        # An empty icon stops the browser from requesting favicon.ico next to the file.
        '<link rel="icon" href="data:,">',
        f"<title>{esc(context.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(context.title)}</h1>",
    ]
    if _is_synthetic(sweep):
        parts.append(f'<div class="banner">{esc(text["synthetic_banner"].format(dataset=_dataset_name(sweep, text)))}</div>')
    command = sweep.command or text["command_unknown"]
    swept = ", ".join(sweep.swept_keys) or text["none"]
    parts += [
        f"<p><b>{esc(text['command'])}:</b> <code>{esc(command)}</code></p>",
        f"<p><b>{esc(text['sweep_dir'])}:</b> <code>{esc(str(sweep.sweep_dir))}</code></p>",
        f"<p><b>{esc(text['swept_keys'])}:</b> {esc(swept)}</p>",
        f"<p>{esc(_counts_line(context))}</p>",
        f"<h2>{esc(text['best_heading'])}</h2>",
        f"<p>{esc(_best_line(context))}</p>",
    ]
    if context.report.best_command:
        parts += [f"<p>{esc(text['best_command'])}</p>",
                  f"<pre>{esc(context.report.best_command)}</pre>",
                  f"<p>{esc(text['best_check'])}</p>",
                  f"<pre>{esc(context.report.check_command)}</pre>"]

    parts.append(f"<h2>{esc(text['tables_heading'])}</h2>")
    for table in context.summaries:
        parts.append(f"<h3>{esc(_summary_caption(table, text))}</h3>")
        parts.append(_html_table(_summary_display(table)))
        parts.append(f'<p class="file">summary_{esc(table.name)}.csv</p>')
    parts.append(f"<h3>{esc(text['ranking_heading'].format(metric=context.metric, mode=context.mode))}</h3>")
    parts.append(f"<p>{esc(text['ranking_text'])}</p>")
    parts.append(_html_table(display_frame(context.ranking)))

    parts.append(f"<h2>{esc(text['plots_heading'])}</h2>")
    for figure in context.figures:
        data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(figure.caption)}">'
                     f"<figcaption>{esc(figure.caption)} ({esc(figure.path.name)})</figcaption></figure>")

    parts.append(f"<h2>{esc(text['failures_heading'])}</h2>")
    failures = _failure_rows(context)
    if failures.empty:
        parts.append(f"<p>{esc(text['failures_none'])}</p>")
    else:
        parts.append(_html_table(_failure_display(failures, text, sweep.swept_keys)))

    parts.append(f"<h2>{esc(text['not_run_heading'])}</h2>")
    not_run = _not_run_rows(context)
    if not_run.empty:
        parts.append(f"<p>{esc(text['not_run_none'])}</p>")
    else:
        parts.append(f"<p>{esc(text['not_run_text'])}</p>")
        parts.append(_html_table(_not_run_display(not_run, text, sweep.swept_keys)))

    parts.append(f"<h2>{esc(text['files_heading'])}</h2><ul>")
    for path in [sweep.sweep_dir / RESULTS_CSV, sweep.sweep_dir / HISTORY_CSV] + [
            p for p in context.report.files if p.suffix in (".csv", ".yaml", ".txt")
            and p.name not in (RESULTS_CSV, HISTORY_CSV)]:
        parts.append(f'<li><a href="{esc(path.name)}">{esc(path.name)}</a></li>')
    parts.append("</ul>")
    parts.append(f'<p class="file">{esc(text["generated"].format(version=__version__, sweep_dir=_quote(str(sweep.sweep_dir))))}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _failure_display(failures: pd.DataFrame, text: dict, swept_keys) -> pd.DataFrame:
    shown = pd.DataFrame({
        text["column_run"]: failures["job_num"].astype(str),
        text["column_status"]: failures["status"],
        text["column_config"]: [run_label(row, swept_keys) for _, row in failures.iterrows()],
        text["column_diverged_epoch"]: [format_cell("diverged_epoch", v) for v in failures["diverged_epoch"]],
        text["column_error"]: failures["error"].fillna("—"),
        text["column_traceback"]: [
            f"{Path(run_dir).name}/{metrics.TRACEBACK_FILE}"
            if (Path(run_dir) / metrics.TRACEBACK_FILE).exists() else "—"
            for run_dir in failures["run_dir"]],
    })
    return shown


def _not_run_display(not_run: pd.DataFrame, text: dict, swept_keys) -> pd.DataFrame:
    return pd.DataFrame({text["column_run"]: not_run["job_num"].astype(str),
                         text["column_config"]: [run_label(row, swept_keys)
                                                 for _, row in not_run.iterrows()]})


def _html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0, classes="table")


def render_markdown(context: _Context) -> str:
    """Return report.md: the same content as report.html, with the PNG files linked."""
    text, sweep = context.text, context.sweep
    lines = [f"# {context.title}", ""]
    if _is_synthetic(sweep):
        lines += [f"> **{text['synthetic_banner'].format(dataset=_dataset_name(sweep, text))}**", ""]
    lines += [
        f"- **{text['command']}:** `{sweep.command or text['command_unknown']}`",
        f"- **{text['sweep_dir']}:** `{sweep.sweep_dir}`",
        f"- **{text['swept_keys']}:** {', '.join(sweep.swept_keys) or text['none']}",
        "", _counts_line(context), "",
        f"## {text['best_heading']}", "", _best_line(context), "",
    ]
    if context.report.best_command:
        lines += [text["best_command"], "", "```", context.report.best_command, "```", "",
                  text["best_check"], "", "```", context.report.check_command, "```", ""]

    lines += [f"## {text['tables_heading']}", ""]
    for table in context.summaries:
        lines += [f"### {_summary_caption(table, text)}", "",
                  markdown_table(_summary_display(table)), "",
                  f"`summary_{table.name}.csv`", ""]
    lines += [f"### {text['ranking_heading'].format(metric=context.metric, mode=context.mode)}", "",
              text["ranking_text"], "", markdown_table(display_frame(context.ranking)), ""]

    lines += [f"## {text['plots_heading']}", ""]
    for figure in context.figures:
        lines += [f"![{figure.caption}]({figure.path.name})", "", f"*{figure.caption}*", ""]

    lines += [f"## {text['failures_heading']}", ""]
    failures = _failure_rows(context)
    lines += [text["failures_none"] if failures.empty
              else markdown_table(_failure_display(failures, text, sweep.swept_keys)), ""]
    lines += [f"## {text['not_run_heading']}", ""]
    not_run = _not_run_rows(context)
    if not_run.empty:
        lines += [text["not_run_none"], ""]
    else:
        lines += [text["not_run_text"], "", markdown_table(_not_run_display(not_run, text, sweep.swept_keys)), ""]
    lines += ["---", "", text["generated"].format(version=__version__,
                                                   sweep_dir=_quote(str(sweep.sweep_dir))), ""]
    return "\n".join(lines)


def markdown_table(frame: pd.DataFrame) -> str:
    """Return a GitHub-flavoured Markdown table of a frame of strings."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(column) for column in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(value) for value in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule] + body)


_CSS = """
body { font-family: sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em; }
.banner { background: #fff3cd; border: 2px solid #d39e00; padding: 0.8em; font-weight: bold; }
table.table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em;
  display: block; overflow-x: auto; max-width: 100%; }
table.table th, table.table td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
table.table th { background: #f0f0f0; }
pre, code { background: #f6f6f6; }
pre { padding: 0.5em; overflow-x: auto; }
figure { margin: 1em 0; }
figure img { max-width: 100%; }
.file { color: #666; font-size: 0.85em; }
"""


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the command line: rebuild the report of a sweep directory."""
    parser = argparse.ArgumentParser(
        prog="python -m tfd_sweep.report",
        description="Rebuild the tables, plots and report of a sweep from its run directories.")
    parser.add_argument("sweep_dir", type=Path, help="sweep directory (outputs/sweeps/<time>)")
    parser.add_argument("--lang", default="en", choices=i18n.LANGUAGES, help="report language")
    parser.add_argument("--metric", default="valid_ce", help="metric that picks the best run")
    parser.add_argument("--mode", default="min", choices=tables.MODES,
                        help="whether the best run has the lowest or highest metric")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")

    try:
        report = build_report(args.sweep_dir, args.lang, args.metric, args.mode)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report: {report.html_path}")
    print(f"markdown: {report.md_path}")
    if report.best_command:
        print(f"best run {int(report.best['job_num'])}: {report.best_command}")
    else:
        print(f"no best run: no run finished ok with a finite {args.metric}")
    if report.incomplete:
        print(f"{report.counts[metrics.STATUS_FAILED]} failed and "
              f"{report.counts[STATUS_NOT_RUN]} not run; see the report's failure sections")
    return 0


if __name__ == "__main__":
    sys.exit(main())


"""Hydra callback that builds the sweep report when a multirun ends.

Enabled in conf/config.yaml under hydra.callbacks, so it runs with any Hydra launcher. It
reads report.lang, report.metric and report.mode from the config.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tfd_sweep import metrics
from tfd_sweep.errors import UserError

logger = logging.getLogger(__name__)


class ReportCallback(Callback):
    """Write the report of `hydra.sweep.dir` at the end of a multirun.

    After everything is written, the process exits with status 1 if any planned run failed
    or did not run, so that scripts and CI notice an incomplete sweep. Diverged runs are
    results and do not change the exit status.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from tfd_sweep.report import build_report
        from tfd_sweep.results import STATUS_NOT_RUN

        sweep_dir = OmegaConf.select(config, "hydra.sweep.dir")
        lang = OmegaConf.select(config, "report.lang", default="en")
        metric = OmegaConf.select(config, "report.metric", default="valid_ce")
        mode = OmegaConf.select(config, "report.mode", default="min")
        logger.info("building the sweep report for %s", sweep_dir)

        # Hydra turns an exception raised here into a warning and exits 0, so every error
        # is logged and turned into exit status 1 instead.
        try:
            report = build_report(sweep_dir, lang=lang, metric=metric, mode=mode)
        except UserError as error:
            logger.error("could not build the sweep report: %s", error)
            sys.exit(1)
        except Exception:  # a bug in the report must not pass as a finished sweep
            logger.exception("could not build the sweep report for %s", sweep_dir)
            sys.exit(1)

        logger.info("report: %s (also %s)", report.html_path, report.md_path.name)
        if report.best_command:
            logger.info("best run %d by %s (%s): %s = %.6g", int(report.best["job_num"]),
                        metric, mode, metric, report.best[metric])
            logger.info("reproduce the best run with: %s", report.best_command)
            logger.info("check it against the recorded metrics with: %s", report.check_command)
        else:
            logger.warning("no best run: no run finished with status ok and a finite %s", metric)

        failed = report.counts[metrics.STATUS_FAILED]
        not_run = report.counts[STATUS_NOT_RUN]
        if failed or not_run:
            logger.error("sweep incomplete: %d failed, %d not run (see %s); exiting with "
                         "status 1", failed, not_run, report.html_path)
            sys.exit(1)

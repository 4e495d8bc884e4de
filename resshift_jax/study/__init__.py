"""The w_t study: one training run per (scheme, seed), evaluated on a paired validation set.

    python -m resshift_jax.study --config configs/study_wt.py --workdir DIR

specs.py: the arms and per-run configs; runner.py: training, evaluation (resshift_jax.evaluation)
and resuming; report.py: results.csv, results.md and the plots.
"""

from resshift_jax.study.report import (plot_loss_t, plot_metrics, read_loss_curves, run_row, write_results_csv,
                                       write_results_md)
from resshift_jax.study.runner import Evaluator, ema_networks, eval_mesh, run_study, train_run
from resshift_jax.study.specs import run_config, run_name, scheme_specs

__all__ = ["Evaluator", "ema_networks", "eval_mesh", "plot_loss_t", "plot_metrics",
           "read_loss_curves", "run_config", "run_name", "run_row", "run_study", "scheme_specs", "train_run",
           "write_results_csv", "write_results_md"]

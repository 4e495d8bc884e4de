"""`python -m resshift_jax.study --config configs/study_wt.py --workdir DIR` (see runner.py); also
the console entry point `resshift-study` (`cli`), so the command and the module run the same code."""

from absl import app, flags
from ml_collections import config_flags

from resshift_jax.study.runner import main

config_flags.DEFINE_config_file("config", None, "study config (configs/study_wt.py)", lock_config=True)
flags.DEFINE_string("workdir", None, "study folder (runs/, results.csv, results.md, *.png)")
flags.mark_flags_as_required(["config", "workdir"])


def cli() -> None:
    app.run(main)


if __name__ == "__main__":
    cli()

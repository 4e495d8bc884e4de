"""Train ResShift.

    python train.py --config configs/realsr_v3.py --workdir DIR [--config.train.iterations=...]

Config keys are the official ones (`--config.train.lr=1e-4`, `--config.sharding.mesh_shape='(-1,4)'`).
Resumes automatically from DIR/checkpoints. Multi-host: --coordinator_address, --num_processes,
--process_id (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file (configs/*.py)", lock_config=True)
flags.DEFINE_string("workdir", None, "output folder (checkpoints, metrics.jsonl, tb/, ema/, images/)")
flags.DEFINE_string("coordinator_address", None, "multi-host: host:port of process 0")
flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
flags.DEFINE_integer("process_id", None, "multi-host: index of this process")
flags.DEFINE_integer("stop_at", None, "stop after this step (the schedule still uses train.iterations)")
flags.DEFINE_bool("progress", True, "show a progress bar")
flags.DEFINE_bool("validate", True, "run validation every train.val_freq steps")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from resshift_jax import sharding
    sharding.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    from resshift_jax.train.loop import train
    cfg = _CONFIG.value
    rec = train(cfg, FLAGS.workdir, progress=FLAGS.progress, stop_at=FLAGS.stop_at, validate=FLAGS.validate)
    logging.info("done: %s", rec)


if __name__ == "__main__":
    app.run(main)

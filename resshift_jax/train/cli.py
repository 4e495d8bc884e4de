"""The training command line (`python train.py` / `resshift-train`).

    resshift-train --config configs/realsr_v3.py --workdir DIR [--config.train.iterations=...]

Config keys are the official ones (`--config.train.lr=1e-4`, `--config.sharding.mesh_shape='(-1,4)'`);
the config is locked after the overrides, and an override of an undeclared key is refused with a
message (`config.check_overrides`). Resumes automatically from DIR/checkpoints. Multi-host:
--coordinator_address, --num_processes, --process_id (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID). Compiled programs are kept in the persistent compilation cache
(`resshift_jax.compile_cache`: --cache_dir, --nocompile_cache), so a resumed run does not compile again.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from resshift_jax import config as config_lib


def define_flags(flag_values: flags.FlagValues, argv) -> flags.FlagValues:
    """Define the training flags on `flag_values` (absl's global FLAGS for the command line, a
    fresh FlagValues in tests) and return it. `argv`: the command line whose `--config.KEY`
    overrides become flags (config_flags defines them from the argv it is given)."""
    config_flags.DEFINE_config_file("config", None, "config file (configs/*.py)", flag_values=flag_values,
                                    lock_config=True, sys_argv=list(argv))
    flags.DEFINE_string("workdir", None, "output folder (checkpoints, metrics.jsonl, tb/, ema/, images/)",
                        flag_values=flag_values)
    flags.DEFINE_string("coordinator_address", None, "multi-host: host:port of process 0", flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "multi-host: number of processes", flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "multi-host: index of this process", flag_values=flag_values)
    flags.DEFINE_integer("stop_at", None, "stop after this step (the schedule still uses train.iterations)",
                         flag_values=flag_values)
    flags.DEFINE_bool("progress", True, "show a progress bar", flag_values=flag_values)
    flags.DEFINE_bool("validate", True, "run validation every train.val_freq steps", flag_values=flag_values)
    flags.DEFINE_string("cache_dir", None, "persistent XLA compilation cache folder (default: "
                        "$RESSHIFT_JAX_CACHE_DIR or ~/.cache/resshift_jax/xla)", flag_values=flag_values)
    flags.DEFINE_bool("compile_cache", True, "use the persistent compilation cache (--nocompile_cache: off)",
                      flag_values=flag_values)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)
    return flag_values


def parse_flags(argv, flag_values: flags.FlagValues | None = None) -> flags.FlagValues:
    """The command line's own parsing, as a function: refuse overrides of undeclared keys
    (UnknownConfigKeyError), then define and parse the flags (the config comes back overridden
    and locked). `argv[0]` is the program name."""
    config_lib.check_overrides(argv)
    fv = define_flags(flags.FlagValues() if flag_values is None else flag_values, argv)
    fv(argv)
    return fv


def run(fv: flags.FlagValues) -> dict:
    """Train with the parsed flags; returns the loop's final record."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Lazy imports: the distributed runtime must be initialised before the training modules
    # touch a JAX backend, and `--help` stays fast.
    from resshift_jax import sharding
    sharding.initialize_distributed(fv.coordinator_address, fv.num_processes, fv.process_id)
    from resshift_jax import compile_cache
    compile_cache.configure(fv.cache_dir, enabled=fv.compile_cache)
    from resshift_jax.train.loop import train
    rec = train(fv.config, fv.workdir, progress=fv.progress, stop_at=fv.stop_at, validate=fv.validate)
    logging.info("done: %s", rec)
    return rec


def _app_main(argv) -> None:
    del argv  # parsed into flags.FLAGS by absl_flags_parser
    run(flags.FLAGS)


def main(argv=None) -> int:
    """Console entry point: absl's app (usage messages, absl logging) around `run`."""
    argv = list(sys.argv if argv is None else argv)
    define_flags(flags.FLAGS, argv)
    if {"-h", "--help", "--helpshort"} & set(argv[1:]):  # absl's own --help exits 1
        print(f"{__doc__.rstrip()}\n\nflags:\n{flags.FLAGS.module_help(sys.modules[__name__])}")
        return 0
    app.run(_app_main, argv=argv, flags_parser=config_lib.absl_flags_parser)
    return 0


if __name__ == "__main__":
    sys.exit(main())

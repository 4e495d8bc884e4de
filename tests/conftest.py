"""Test setup: 8 fake CPU devices (so sharding is always exercised) and shared paths."""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The commands enable a persistent compilation cache under ~/.cache by default; the suite does not
# write there (tests of the cache give their own folder: tests/test_compile_cache.py).
os.environ["RESSHIFT_JAX_CACHE_DIR"] = "off"

import jax  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "resshift"
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def fixtures_dir():
    if not FIXTURES.is_dir():
        pytest.fail(f"golden fixtures not found at {FIXTURES} (expected ../shared beside the project)")
    return FIXTURES


@pytest.fixture(scope="session")
def data_dir():
    if not DATA.is_dir():
        pytest.fail(f"test data not found at {DATA} (expected ../shared beside the project)")
    return DATA


# Heaviest modules first: test.sh runs the suite on 2 workers with `--dist loadfile`, which hands
# out whole files in collection order, so the long ones start at once and the workers end together.
HEAVY_FIRST = ("test_train_loop", "test_train_step", "test_study", "test_compile_check", "test_evaluation",
               "test_first_stage", "test_compact_models",
               "test_pipeline", "test_checkpoint", "test_unet", "test_infer_cli")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: order within files kept


# One persistent compilation cache for the suite's own processes (both xdist workers; the CLIs the
# tests start keep RESSHIFT_JAX_CACHE_DIR=off unless a test gives them a folder). Many tests build
# the same programs anew (a micro Trainer's step on the same mesh, an SRPipeline of the same
# config): JAX's in-memory cache is per function object, so each would compile again; the
# persistent cache is keyed by the program itself (HLO, options, devices; not source lines), so
# the second test loads it. Tests of the cache itself switch to their own folder
# (compile_cache.enable / disable); the fixture below switches back before the next test. It
# lives in pytest's temporary folder of the run (the workers' common parent), which pytest prunes.
@pytest.fixture(scope="session")
def suite_cache_dir(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    d = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "suite_xla_cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(autouse=True)
def _suite_compile_cache(suite_cache_dir):
    from jax.experimental.compilation_cache import compilation_cache as cc
    if jax.config.jax_compilation_cache_dir != str(suite_cache_dir):
        jax.config.update("jax_compilation_cache_dir", str(suite_cache_dir))
        cc.reset_cache()
    # programs that compile in under a second are not worth a file (tests of the cache set 0)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield

"""Test setup: 8 fake CPU devices (so sharding is always exercised) and shared paths."""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The commands enable a persistent compilation cache under ~/.cache by default; the suite does not
# write there (tests of the cache give their own folder: tests/test_compile_cache.py).
os.environ["RESSHIFT_JAX_CACHE_DIR"] = "off"

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

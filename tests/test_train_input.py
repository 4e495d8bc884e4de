"""train/input.py: the data streams' PRNG keys are apart from the train state's."""

import jax
import numpy as np

from resshift_jax.train.input import STREAM_TAGS, data_stream_keys


def _raw(k):
    return tuple(np.asarray(jax.random.key_data(k)).ravel().tolist())


def test_data_stream_keys_differ_from_the_train_state_keys():
    """With data_seed == train.seed (the default) no data key equals a step key
    fold_in(key(train.seed), step), nor the pool's permutation subkeys (split, as pool_step)."""
    seed = 123456
    keys = data_stream_keys(seed)
    root = jax.random.key(seed)
    step_keys = {_raw(jax.random.fold_in(root, s)) for s in range(64)}
    pool_sub = [_raw(k) for k in jax.random.split(keys["pool"])]
    degr = [_raw(jax.random.fold_in(keys["degradation"], s)) for s in range(64)]
    data = {_raw(keys["pool"]), _raw(keys["degradation"]), *pool_sub, *degr}
    assert len(data) == 2 + 2 + 64
    assert not data & step_keys
    # the collision the tags remove: the old pool key key(seed) split for its first swap gave
    # step 1's key (partitionable threefry: split(k)[i] == fold_in(k, i))
    old_sub = _raw(jax.random.split(root)[1])
    assert (old_sub in step_keys) == bool(jax.config.jax_threefry_partitionable)
    assert all(t >= 2 ** 31 for t in STREAM_TAGS.values())

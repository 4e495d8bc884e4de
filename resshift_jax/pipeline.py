"""The sampler program of the reference `ResShiftSampler.sample_func`, as pure functions, and
`SRPipeline`, which compiles it as one XLA program per (batch, LR shape, noise mode),
batch-sharded over a mesh.

`super_resolve` is the one definition of the program: reflect-pad the LR image at the
bottom/right to a multiple of `padding_offset` (= model.lq_size), condition on it
(`condition_latent`: bicubic ×sf, encode, × scale_factor), run the reverse chain as one
`lax.scan`, decode with quantisation (the first stage of `autoencoder.kind`: VQ-f4, or the
exact space-to-depth, whose decode ignores `quantize`), crop to sf × the unpadded size and clamp to [-1, 1].
`SRPipeline`, the compile-only check (`train/compile_check.py`) and, for the conditioning, the
training loss (`train/step.py`) all call these functions, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from resshift_jax import diffusion, schedule
from resshift_jax.config import load_config
from resshift_jax.models.first_stage import latent_channels, latent_factor
from resshift_jax.resize import bicubic_upsample


# ----------------------------------------------------------------------------- padding
def padded_size(size: int, offset: int) -> int:
    """The smallest multiple of `offset` that is >= `size`."""
    return int(math.ceil(size / offset) * offset)


def bucket_size(size: int, buckets=()) -> int:
    """The smallest of `buckets` that is >= `size`, or `size` itself when none is (or none given)."""
    return min((b for b in buckets if b >= size), default=size)


def program_side(size: int, offset: int, buckets=()) -> int:
    """The side a tile of `size` is padded to before the program sees it (`reflect_pad`)."""
    return bucket_size(padded_size(size, offset), buckets)


def reflect_pad(x, offset: int, buckets=()):
    """F.pad(mode='reflect') on the bottom/right up to multiples of `offset`, on (..., h, w, c);
    with `buckets` (sizes, multiples of `offset`) each side is padded further to its bucket
    (`bucket_size`), so images of many sizes share a few program shapes.

    One rule for both callers: a jax array (the batched program, NHWC) is padded with jnp, a
    numpy array (a tile on the host, HWC) with numpy, so tiles never travel to a device just to be
    padded. For pads larger than the image (tiny inputs) the reflection repeats, which the
    reference cannot do; for every size the reference accepts the result is identical. A side of
    one pixel has nothing to reflect and is repeated (edge mode).
    """
    h, w = x.shape[-3], x.shape[-2]
    ph = program_side(h, offset, buckets) - h
    pw = program_side(w, offset, buckets) - w
    if ph == 0 and pw == 0:
        return x
    pad = np.pad if isinstance(x, np.ndarray) else jnp.pad
    widths = ((0, 0),) * (x.ndim - 3) + ((0, ph), (0, pw), (0, 0))
    return pad(x, widths, mode="edge" if h == 1 or w == 1 else "reflect")


# ----------------------------------------------------------------------------- the program
@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """The constants of `sample_func`: the schedule, the scale factor sf, the latent scale
    `scale_factor`, the padding offset (the reference passes model.lq_size) and `x0_after`
    (`inference.x0_after`: 0 runs the whole chain; k < T outputs the k-th step's x0
    prediction, `diffusion.sample`) and `noise_scale` (`inference.noise_scale`: 1 the
    reference's chain, 0 the deterministic sampler)."""

    schedule: schedule.Schedule
    sf: int
    scale_factor: float
    padding_offset: int
    x0_after: int = 0
    noise_scale: float = 1.0
    unroll: bool = False  # the sampler's scan unrolled (`diffusion.sample`; for cost analysis)

    @property
    def draws_used(self) -> int:
        """How many of the T+1 noise draws the sampler reads (`diffusion.noise_draws_read`)."""
        return diffusion.noise_draws_read(self.schedule.num_timesteps, self.x0_after, self.noise_scale)

    @classmethod
    def from_config(cls, cfg) -> "SamplerSpec":
        return cls(schedule.from_config(cfg.diffusion), int(cfg.diffusion.sf),
                   float(cfg.diffusion.scale_factor), int(cfg.inference.padding_offset),
                   int(cfg.inference.x0_after), float(cfg.inference.noise_scale))


def condition_latent(vq: nnx.Module, lq: jax.Array, *, sf: int, scale_factor: float) -> jax.Array:
    """z_y = scale_factor · E(bicubic_up_sf(lq)), in float32: the reference's
    `encode_first_stage(y, up_sample=True)` (torch bicubic, no clamping, no quantisation)."""
    y_up = bicubic_upsample(lq, sf) if sf != 1 else lq
    return vq.encode(y_up).astype(jnp.float32) * scale_factor


def training_latents(vq: nnx.Module, hr: jax.Array, lq: jax.Array, *, sf: int, scale_factor: float):
    """(z0, z_y) of a training batch, both float32 and without gradient: the regression target
    scale_factor · E(hr) and the conditioning `condition_latent(lq)` (the encoder is frozen)."""
    z_y = condition_latent(vq, lq, sf=sf, scale_factor=scale_factor)
    z0 = vq.encode(hr).astype(jnp.float32) * scale_factor
    return jax.lax.stop_gradient(z0), jax.lax.stop_gradient(z_y)


def per_image_noise(keys: jax.Array, latent_shape: tuple, num_steps: int, dtype=jnp.float32, *,
                    used: int | None = None) -> jax.Array:
    """Noise (T+1, B, *latent) in the reference's draw order from one key per image.

    Image i's noise depends only on keys[i], so results do not change with batch composition.
    `used` = n: only the first n draws are read (an early stop, the deterministic sampler); with
    JAX's partitionable threefry (each value a function of the key and its index, the default)
    they are exactly the first n of the full draw, so only they are generated and the rest are
    zeros: on a CPU, five draws of a 128x128x48 latent took 75 ms, one 6.5 ms.
    """
    n = num_steps + 1
    m = n if used is None or not jax.config.jax_threefry_partitionable else max(1, min(int(used), n))
    noise = jax.vmap(lambda k: jax.random.normal(k, (m,) + tuple(latent_shape[1:]), dtype))(keys)
    noise = jnp.swapaxes(noise, 0, 1)
    return noise if m == n else jnp.concatenate([noise, jnp.zeros((n - m,) + noise.shape[1:], dtype)])


def super_resolve(spec: SamplerSpec, unet: nnx.Module, vq: nnx.Module, lq: jax.Array, *,
                  keys: jax.Array | None = None, noise: jax.Array | None = None, return_all: bool = False):
    """`sample_func` on a batch lq (B, h, w, 3) in [-1, 1] -> (B, sf·h, sf·w, 3) in [-1, 1].

    Noise comes from one key per image (`keys`, shape (B,)) or is replayed (`noise`, shape
    (T+1, B, *latent of the padded image), prior first). With `return_all` the intermediate
    quantities come back too (z_y, the chain x_t, pred_xstart, the uncropped decode, padded lq).
    """
    if (keys is None) == (noise is None):
        raise ValueError("super_resolve: give exactly one of `keys` or `noise`")
    _, h, w, _ = lq.shape
    lq = reflect_pad(lq.astype(jnp.float32), spec.padding_offset)
    z_y = condition_latent(vq, lq, sf=spec.sf, scale_factor=spec.scale_factor)
    if noise is None:
        noise = per_image_noise(keys, z_y.shape, spec.schedule.num_timesteps, used=spec.draws_used)
    x0, traj = diffusion.sample(spec.schedule, diffusion.float32_denoiser(unet), z_y, lq,
                                noise=noise.astype(jnp.float32), return_trajectory=True, x0_after=spec.x0_after,
                                noise_scale=spec.noise_scale, unroll=spec.unroll)
    decoded = vq.decode(x0 / spec.scale_factor, quantize=True).astype(jnp.float32)
    image = jnp.clip(decoded[:, : h * spec.sf, : w * spec.sf], -1.0, 1.0)
    if not return_all:
        return image
    return dict(image=image, z_y=z_y, x_t=traj["x_t"], pred_xstart=traj["pred_xstart"],
                decoded=decoded, lq_padded=lq)


def default_mesh() -> jax.sharding.Mesh:
    """All devices (of all hosts) on one 'data' axis."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


class SRPipeline:
    """Super-resolve a batch of LR images (B, h, w, 3) in [-1, 1] -> (B, sf·h, sf·w, 3) in [-1, 1].

    `pipe(lq, key=k)` draws fresh noise (one key, or one key per image); `pipe(lq, noise=n)`
    replays noise of shape (T+1, B, *latent) in the reference's order (prior first).

    The batch is split over the mesh's 'data' axis (padded to a multiple of the device count).
    `donate=True` donates the LR input buffer; it is off by default because no output has the
    input's shape, so XLA cannot reuse the buffer and would only warn.
    """

    def __init__(self, unet: nnx.Module, vqgan: nnx.Module, config, *, mesh=None, donate: bool = False):
        cfg = load_config(config)
        self.config = cfg
        self.spec = SamplerSpec.from_config(cfg)
        self.schedule, self.sf = self.spec.schedule, self.spec.sf
        self.scale_factor, self.padding_offset = self.spec.scale_factor, self.spec.padding_offset
        self.mesh = mesh if mesh is not None else default_mesh()
        replicated = NamedSharding(self.mesh, P())
        self._unet_def, unet_state = nnx.split(unet)
        self._vq_def, vq_state = nnx.split(vqgan)
        self._states = jax.device_put((unet_state, vq_state), replicated)
        self._donate = donate
        self._fns = {}

    # ------------------------------------------------------------------ the program
    def _program(self, states, lq, noise_or_keys, *, use_keys: bool, return_all: bool):
        unet = nnx.merge(self._unet_def, states[0])
        vq = nnx.merge(self._vq_def, states[1])
        given = dict(keys=noise_or_keys) if use_keys else dict(noise=noise_or_keys)
        return super_resolve(self.spec, unet, vq, lq, return_all=return_all, **given)

    def _compiled(self, use_keys: bool, return_all: bool):
        key = (use_keys, return_all)
        if key not in self._fns:
            data = NamedSharding(self.mesh, P("data"))
            noise_sharding = data if use_keys else NamedSharding(self.mesh, P(None, "data"))
            fn = lambda s, x, n: self._program(s, x, n, use_keys=use_keys, return_all=return_all)  # noqa: E731
            self._fns[key] = jax.jit(
                fn, in_shardings=(NamedSharding(self.mesh, P()), data, noise_sharding),
                donate_argnums=(1,) if self._donate else ())
        return self._fns[key]

    # ------------------------------------------------------------------ public API
    def set_weights(self, unet_state=None, vq_state=None) -> None:
        """Swap in new UNet and/or VQGAN weights (an `nnx.State` or a module of the same
        structure, e.g. EMA params during training); the compiled programs are reused."""
        new = []
        for name, given, old in (("unet", unet_state, self._states[0]), ("vqgan", vq_state, self._states[1])):
            if given is None:
                new.append(old)
                continue
            st = nnx.state(given) if isinstance(given, nnx.Module) else given
            if jax.tree.structure(st) != jax.tree.structure(old):
                raise ValueError(f"set_weights: the {name} state has a different structure than the pipeline's")
            for a, b in zip(jax.tree.leaves(st), jax.tree.leaves(old)):
                if a.shape != b.shape:
                    raise ValueError(f"set_weights: {name} leaf shape {a.shape} != {b.shape}")
            new.append(st)
        self._states = jax.device_put(tuple(new), NamedSharding(self.mesh, P()))

    def latent_shape(self, lq_shape) -> tuple:
        """(B, H, W, C) of the latent for an LR batch shape (after padding)."""
        b, h, w, _ = lq_shape
        f = latent_factor(self.config)
        hp, wp = padded_size(h, self.padding_offset), padded_size(w, self.padding_offset)
        return (b, hp * self.sf // f, wp * self.sf // f, latent_channels(self.config))

    def __call__(self, lq, key=None, noise=None, *, return_all: bool = False):
        lq = jnp.asarray(lq, jnp.float32)
        if lq.ndim != 4 or lq.shape[-1] != 3:
            raise ValueError(f"SRPipeline: lq must be (B, h, w, 3) in [-1, 1], got shape {tuple(lq.shape)}")
        if (key is None) == (noise is None):
            raise ValueError("SRPipeline: give exactly one of `key` or `noise`")
        b = lq.shape[0]
        if key is not None:
            key = jnp.asarray(key)
            if key.shape == ():
                key = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b))
            if key.shape[0] != b:
                raise ValueError(f"SRPipeline: {key.shape[0]} keys for a batch of {b}")
            arg, use_keys = key, True
        else:
            want = (self.schedule.num_timesteps + 1,) + self.latent_shape(lq.shape)
            if tuple(noise.shape) != want:
                raise ValueError(f"SRPipeline: noise must have shape {want} (T+1, B, H, W, C), got {tuple(noise.shape)}")
            arg, use_keys = jnp.asarray(noise, jnp.float32), False
        # pad the batch to a multiple of the devices (repeating the last image) so the work is
        # split, never replicated; the padding rows are dropped from the result
        extra = -b % self.mesh.size
        if extra:
            lq = jnp.concatenate([lq, jnp.repeat(lq[-1:], extra, axis=0)])
            axis = 0 if use_keys else 1
            last = jax.lax.slice_in_dim(arg, arg.shape[axis] - 1, arg.shape[axis], axis=axis)
            arg = jnp.concatenate([arg, jnp.repeat(last, extra, axis=axis)], axis=axis)
        elif self._donate:
            lq = jnp.array(lq, copy=True)  # never donate the caller's buffer
        out = self._compiled(use_keys, return_all)(self._states, lq, arg)
        if not extra:
            return out
        trim = lambda x, axis: jax.lax.slice_in_dim(x, 0, b, axis=axis)  # noqa: E731
        if not return_all:
            return trim(out, 0)
        return {k: trim(v, 1 if k in ("x_t", "pred_xstart") else 0) for k, v in out.items()}

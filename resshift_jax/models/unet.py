"""The ResShift denoiser `UNetModelSwin` (reference `models/unet.py`, spec §4), Flax NNX, NHWC.

Attribute paths mirror the PyTorch state_dict keys (`input_blocks.4.0.in_layers.2`, ...): indexed
containers are `nnx.List`s whose parameter-free slots (SiLU, Dropout, Identity) hold None, so
`resshift_jax.weights.load_state_dict_into` maps official checkpoints by a rename + transpose.
Parameters are float32; activations are computed in `dtype` (float32 or bfloat16), with
GroupNorm and the attention softmax in float32 and the output returned in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from resshift_jax.models.layers import Conv2d, GroupNorm, Linear
from resshift_jax.models.swin import BasicLayer


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
    """Sinusoidal embedding of raw integer timesteps, [cos(t f), sin(t f)] (cos first),
    f_k = exp(-ln(max_period) k / half), k < half = dim // 2. Float32, shape (B, dim)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t).astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class ResBlock(nnx.Module):
    """GN -> SiLU -> conv; FiLM from the time embedding (scale, shift); GN -> SiLU -> conv; + skip."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None, *,
                 use_scale_shift_norm: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nnx.List([GroupNorm(channels), None,
                                   Conv2d(channels, out_channels, 3, dtype=dtype, rngs=rngs)])
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nnx.List([None, Linear(emb_channels, emb_out, dtype=dtype, rngs=rngs)])
        out_conv = Conv2d(out_channels, out_channels, 3, dtype=dtype, rngs=rngs)
        out_conv.kernel[...] = jnp.zeros_like(out_conv.kernel[...])  # zero_module in the reference
        out_conv.bias[...] = jnp.zeros_like(out_conv.bias[...])
        self.out_layers = nnx.List([GroupNorm(out_channels), None, None, out_conv])  # GN, SiLU, Dropout, conv
        self.skip_connection = (None if out_channels == channels
                                else Conv2d(channels, out_channels, 1, dtype=dtype, rngs=rngs))

    def __call__(self, x, emb):
        h = self.in_layers[2](jax.nn.silu(self.in_layers[0](x)))
        emb_out = self.emb_layers[1](jax.nn.silu(emb)).astype(h.dtype)[:, None, None, :]
        norm, conv = self.out_layers[0], self.out_layers[3]
        if self.use_scale_shift_norm:
            scale, shift = jnp.split(emb_out, 2, axis=-1)
            h = norm(h) * (1 + scale) + shift
        else:
            h = norm(h + emb_out)
        h = conv(jax.nn.silu(h))
        skip = x if self.skip_connection is None else self.skip_connection(x)
        return skip + h


class Downsample(nnx.Module):
    """3x3 conv, stride 2, padding (1, 1) on both sides (not Flax 'SAME')."""

    def __init__(self, channels: int, out_channels: int | None = None, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.op = Conv2d(channels, out_channels or channels, 3, stride=2, padding=1, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.op(x)


class Upsample(nnx.Module):
    """Nearest x2, then 3x3 conv (padding 1)."""

    def __init__(self, channels: int, out_channels: int | None = None, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = Conv2d(channels, out_channels or channels, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.conv.upsample2x(x)


def _run_sequential(layers, h, emb):
    """TimestepEmbedSequential: ResBlocks get the embedding, the other layers only h."""
    for layer in layers:
        h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
    return h


def _feature_extractor(in_chn: int, n_stages: int, *, dtype, rngs):
    """LQ feature extractor for lq_size > image_size (spec §4.1): n stages of
    conv3x3 (-> 16*2^k) -> SiLU -> Downsample (-> 2x channels). Returns (layers, out channels)."""
    layers, base = [], 16
    for _ in range(n_stages):
        layers += [Conv2d(in_chn, base, 3, dtype=dtype, rngs=rngs), None,
                   Downsample(base, 2 * base, dtype=dtype, rngs=rngs)]
        base *= 2
        in_chn = base
    return nnx.List(layers), base


class UNetModelSwin(nnx.Module):
    """x (B,H,W,in_ch) normalised latent, t (B,) int timestep index, lq (B,h,w,3) in [-1,1]
    (+ mask (B,h,w,1) when cond_mask) -> predicted x0 (B,H,W,out_ch) float32."""

    def __init__(self, cfg, *, dtype=jnp.float32, rngs: nnx.Rngs):
        if not cfg.cond_lq:
            raise ValueError("UNetModelSwin: only cond_lq=True is supported (every ResShift config uses it)")
        if cfg.dropout:
            raise ValueError(f"UNetModelSwin: dropout={cfg.dropout} is not supported (all configs use 0)")
        if not cfg.conv_resample or cfg.resblock_updown:
            raise ValueError("UNetModelSwin: only conv_resample=True, resblock_updown=False is supported")
        channel_mult = tuple(cfg.channel_mult)
        nrb = cfg.num_res_blocks
        nrb = (nrb,) * len(channel_mult) if isinstance(nrb, int) else tuple(nrb)
        if len(nrb) != len(channel_mult):
            raise ValueError(f"UNetModelSwin: num_res_blocks {nrb} does not match channel_mult {channel_mult}")
        mc = cfg.model_channels
        self.model_channels = mc
        self.dtype = dtype
        self.cond_mask = bool(cfg.cond_mask)
        ss = cfg.use_scale_shift_norm
        attn_res = tuple(cfg.attention_resolutions)
        temb = 4 * mc
        num_heads = cfg.swin_embed_dim // cfg.num_head_channels
        kw = dict(dtype=dtype, rngs=rngs)

        def swin(ch, ds):
            return BasicLayer(ch, cfg.swin_embed_dim, num_heads, cfg.window_size, depth=cfg.swin_depth,
                              img_size=ds, mlp_ratio=cfg.mlp_ratio, **kw)

        self.time_embed = nnx.List([Linear(mc, temb, **kw), None, Linear(temb, temb, **kw)])

        lq_chn = 4 if self.cond_mask else 3
        if cfg.lq_size == cfg.image_size:
            self.feature_extractor = None  # identity
            base_chn = lq_chn
        else:
            n_stages = int(math.log(cfg.lq_size / cfg.image_size) / math.log(2))
            self.feature_extractor, base_chn = _feature_extractor(lq_chn, n_stages, **kw)

        ch = input_ch = int(channel_mult[0] * mc)
        input_blocks = [nnx.List([Conv2d(cfg.in_channels + base_chn, ch, 3, **kw)])]
        chans = [ch]
        ds = cfg.image_size
        for level, mult in enumerate(channel_mult):
            for j in range(nrb[level]):
                layers = [ResBlock(ch, temb, int(mult * mc), use_scale_shift_norm=ss, **kw)]
                ch = int(mult * mc)
                if ds in attn_res and j == 0:
                    layers.append(swin(ch, ds))
                input_blocks.append(nnx.List(layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                input_blocks.append(nnx.List([Downsample(ch, ch, **kw)]))
                chans.append(ch)
                ds //= 2
        self.input_blocks = nnx.List(input_blocks)

        self.middle_block = nnx.List([ResBlock(ch, temb, use_scale_shift_norm=ss, **kw), swin(ch, ds),
                                      ResBlock(ch, temb, use_scale_shift_norm=ss, **kw)])

        output_blocks = []
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(nrb[level] + 1):
                ich = chans.pop()
                layers = [ResBlock(ch + ich, temb, int(mc * mult), use_scale_shift_norm=ss, **kw)]
                ch = int(mc * mult)
                if ds in attn_res and i == 0:
                    layers.append(swin(ch, ds))
                if level and i == nrb[level]:
                    layers.append(Upsample(ch, ch, **kw))
                    ds *= 2
                output_blocks.append(nnx.List(layers))
        self.output_blocks = nnx.List(output_blocks)

        self.out = nnx.List([GroupNorm(ch), None, Conv2d(input_ch, cfg.out_channels, 3, **kw)])

    def time_embedding(self, t):
        """time_embed(timestep_embedding(t)): (B, 4*model_channels) in the compute dtype."""
        emb = timestep_embedding(t, self.model_channels).astype(self.dtype)
        return self.time_embed[2](jax.nn.silu(self.time_embed[0](emb)))

    def __call__(self, x, t, lq, mask=None, *, return_middle: bool = False):
        """Predicted x0, float32; with return_middle also the middle_block output (debugging)."""
        emb = self.time_embedding(t)
        if mask is not None:
            if not self.cond_mask:
                raise ValueError("UNetModelSwin: a mask was given but the model has cond_mask=False")
            lq = jnp.concatenate([lq, mask.astype(lq.dtype)], axis=-1)
        elif self.cond_mask:
            raise ValueError("UNetModelSwin: cond_mask=True needs a mask (B,h,w,1)")
        lq = lq.astype(self.dtype)
        if self.feature_extractor is not None:
            for layer in self.feature_extractor:
                lq = jax.nn.silu(lq) if layer is None else layer(lq)
        if lq.shape[1:3] != x.shape[1:3]:
            raise ValueError(f"UNetModelSwin: lq features {lq.shape} do not match the latent {x.shape} "
                             "spatially (lq must be lq_size/image_size times the latent size)")
        h = jnp.concatenate([x.astype(self.dtype), lq], axis=-1)  # [x_in, lq]

        hs = []
        for block in self.input_blocks:
            h = _run_sequential(block, h, emb)
            hs.append(h)
        h = _run_sequential(self.middle_block, h, emb)
        middle = h
        for block in self.output_blocks:
            h = _run_sequential(block, jnp.concatenate([h, hs.pop()], axis=-1), emb)  # [h, skip]
        out = self.out[2](jax.nn.silu(self.out[0](h))).astype(jnp.float32)
        return (out, middle) if return_middle else out

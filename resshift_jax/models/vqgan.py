"""VQ autoencoder of ResShift (`ldm.models.autoencoder.VQModelTorch`, spec section 5), NHWC.

    encode(x)  = quant_conv(encoder(x))                  continuous, no quantisation
    decode(z)  = decoder(post_quant_conv(quantize(z)))   the sampler always quantises

Attribute paths mirror the PyTorch state_dict (`encoder.down.1.block.0.nin_shortcut`,
`decoder.up.2.upsample.conv`, `quantize.embedding` -> `quantize.embedding.weight`), so
`resshift_jax.weights` loads official checkpoints by rename + transpose. Params are float32;
convs/matmuls run in `dtype`; GroupNorm (eps 1e-6), softmax and the codebook search in float32.

The mid-block attention is single-head over all H*W positions. Above `ATTN_CHUNK_THRESHOLD`
tokens (`attn_impl="auto"`) it runs as a flash-style loop over query and key chunks with an
online softmax, so a 512x512 latent (262k tokens) never materialises its score matrix.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from resshift_jax.models.layers import Conv2d, GroupNorm

ATTN_CHUNK_THRESHOLD = 8192  # tokens; dense scores above this would be >= 256 MiB per image
ATTN_IMPLS = ("auto", "dense", "chunked")
QUANT_CHUNK_ELEMENTS = 1 << 24  # positions x codes per distance block (64 MiB in float32)
EPS = 1e-6


def swish(x):
    return x * jax.nn.sigmoid(x)


def _norm(c):
    return GroupNorm(c, num_groups=32, eps=EPS)


# ----------------------------------------------------------------------------- attention


def dense_attention(q, k, v, scale):
    """Single-head softmax(q k^T * scale) v on (B, N, C); logits and softmax in float32."""
    out = jax.nn.dot_product_attention(q[:, :, None, :], k[:, :, None, :], v[:, :, None, :], scale=scale)
    return out[:, :, 0, :]


@functools.partial(jax.jit, static_argnames=("q_chunk", "kv_chunk"))
def chunked_attention(q, k, v, scale, *, q_chunk: int = 1024, kv_chunk: int = 4096):
    """Same result as `dense_attention` with memory O(B * q_chunk * kv_chunk).

    Queries are processed chunk by chunk (lax.map); for each, keys/values are scanned in chunks
    with a running max / normaliser (online softmax). Sizes need not divide N (padding is masked).
    """
    b, n, c = q.shape
    qc, kc = min(q_chunk, n), min(kv_chunk, n)
    nq, nk = -(-n // qc), -(-n // kc)
    pad_q, pad_k = nq * qc - n, nk * kc - n
    qp = jnp.pad(q, ((0, 0), (0, pad_q), (0, 0))).reshape(b, nq, qc, c).transpose(1, 0, 2, 3)
    kp = jnp.pad(k, ((0, 0), (0, pad_k), (0, 0))).reshape(b, nk, kc, c).transpose(1, 0, 2, 3)
    vp = jnp.pad(v, ((0, 0), (0, pad_k), (0, 0))).reshape(b, nk, kc, c).transpose(1, 0, 2, 3)
    valid = (jnp.arange(nk * kc) < n).reshape(nk, kc)

    def one_query_chunk(qb):
        def step(carry, xs):
            m, l, acc = carry
            kb, vb, ok = xs
            s = jnp.einsum("bqc,bkc->bqk", qb, kb, preferred_element_type=jnp.float32) * scale
            s = jnp.where(ok[None, None, :], s, -jnp.inf)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])
            corr = jnp.exp(m - m_new)
            l = l * corr + p.sum(-1)
            acc = acc * corr[..., None] + jnp.einsum(
                "bqk,bkc->bqc", p.astype(vb.dtype), vb, preferred_element_type=jnp.float32)
            return (m_new, l, acc), None

        init = (jnp.full((b, qc), -jnp.inf, jnp.float32), jnp.zeros((b, qc), jnp.float32),
                jnp.zeros((b, qc, c), jnp.float32))
        (_, l, acc), _ = jax.lax.scan(step, init, (kp, vp, valid))
        return (acc / l[..., None]).astype(q.dtype)

    out = jax.lax.map(one_query_chunk, qp)  # (nq, B, qc, C)
    return out.transpose(1, 0, 2, 3).reshape(b, nq * qc, c)[:, :n]


# ----------------------------------------------------------------------------- blocks


class ResnetBlock(nnx.Module):
    """GN -> swish -> conv3x3 -> GN -> swish -> (dropout, identity at inference) -> conv3x3, + skip."""

    def __init__(self, c_in: int, c_out: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.norm1 = _norm(c_in)
        self.conv1 = Conv2d(c_in, c_out, 3, dtype=dtype, rngs=rngs)
        self.norm2 = _norm(c_out)
        self.conv2 = Conv2d(c_out, c_out, 3, dtype=dtype, rngs=rngs)
        self.nin_shortcut = Conv2d(c_in, c_out, 1, dtype=dtype, rngs=rngs) if c_in != c_out else None

    def __call__(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        skip = self.nin_shortcut(x) if self.nin_shortcut is not None else x
        return skip.astype(h.dtype) + h


class AttnBlock(nnx.Module):
    """Single-head self-attention over all positions, scale C^-0.5, residual."""

    def __init__(self, c: int, *, attn_impl: str = "auto", chunk_threshold: int = ATTN_CHUNK_THRESHOLD,
                 q_chunk: int = 1024, kv_chunk: int = 4096, dtype=jnp.float32, rngs: nnx.Rngs):
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        self.norm = _norm(c)
        self.q = Conv2d(c, c, 1, dtype=dtype, rngs=rngs)
        self.k = Conv2d(c, c, 1, dtype=dtype, rngs=rngs)
        self.v = Conv2d(c, c, 1, dtype=dtype, rngs=rngs)
        self.proj_out = Conv2d(c, c, 1, dtype=dtype, rngs=rngs)
        self.attn_impl = attn_impl
        self.chunk_threshold = chunk_threshold
        self.q_chunk, self.kv_chunk = q_chunk, kv_chunk

    def __call__(self, x):
        b, h, w, c = x.shape
        hn = self.norm(x)
        q, k, v = (m(hn).reshape(b, h * w, c) for m in (self.q, self.k, self.v))
        chunked = self.attn_impl == "chunked" or (self.attn_impl == "auto" and h * w > self.chunk_threshold)
        if chunked:
            out = chunked_attention(q, k, v, c ** -0.5, q_chunk=self.q_chunk, kv_chunk=self.kv_chunk)
        else:
            out = dense_attention(q, k, v, c ** -0.5)
        out = self.proj_out(out.reshape(b, h, w, c))
        return x.astype(out.dtype) + out


class Downsample(nnx.Module):
    """Zero-pad right/bottom by 1, then conv3x3 stride 2 without padding."""

    def __init__(self, c: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = Conv2d(c, c, 3, stride=2, padding=((0, 1), (0, 1)), dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


class Upsample(nnx.Module):
    """Nearest x2, then conv3x3 pad 1."""

    def __init__(self, c: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = Conv2d(c, c, 3, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.conv.upsample2x(x)


class Level(nnx.Module):
    """One resolution level: `block` (ResnetBlocks), `attn` (AttnBlocks or empty), resampler."""

    def __init__(self, blocks, attns, resample_name=None, resample=None):
        self.block = nnx.List(blocks)
        self.attn = nnx.List(attns)
        if resample_name is not None:
            setattr(self, resample_name, resample)

    def run(self, h):
        for i, blk in enumerate(self.block):
            h = blk(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class Mid(nnx.Module):
    def __init__(self, c, attn_kw, *, dtype, rngs):
        self.block_1 = ResnetBlock(c, c, dtype=dtype, rngs=rngs)
        self.attn_1 = AttnBlock(c, **attn_kw, dtype=dtype, rngs=rngs)
        self.block_2 = ResnetBlock(c, c, dtype=dtype, rngs=rngs)

    def __call__(self, h):
        return self.block_2(self.attn_1(self.block_1(h)))


def _res_blocks(dd):
    n = dd.num_res_blocks
    levels = len(dd.ch_mult)
    if isinstance(n, int):
        return [n] * levels
    n = [int(v) for v in n]
    if len(n) != levels:
        raise ValueError(f"num_res_blocks {n} must have one entry per ch_mult level ({levels})")
    return n


class Encoder(nnx.Module):
    def __init__(self, dd, attn_kw, *, dtype=jnp.float32, rngs: nnx.Rngs):
        ch, mult, nrb = dd.ch, tuple(dd.ch_mult), _res_blocks(dd)
        attn_res = tuple(dd.attn_resolutions)
        self.conv_in = Conv2d(dd.in_channels, ch, 3, dtype=dtype, rngs=rngs)
        levels, res, c_in = [], dd.resolution, ch
        for i, m in enumerate(mult):
            blocks, attns = [], []
            for _ in range(nrb[i]):
                blocks.append(ResnetBlock(c_in, ch * m, dtype=dtype, rngs=rngs))
                c_in = ch * m
                if res in attn_res:
                    attns.append(AttnBlock(c_in, **attn_kw, dtype=dtype, rngs=rngs))
            last = i == len(mult) - 1
            levels.append(Level(blocks, attns, *(() if last else ("downsample", Downsample(c_in, dtype=dtype, rngs=rngs)))))
            res = res if last else res // 2
        self.down = nnx.List(levels)
        self.mid = Mid(c_in, attn_kw, dtype=dtype, rngs=rngs)
        self.norm_out = _norm(c_in)
        self.conv_out = Conv2d(c_in, 2 * dd.z_channels if dd.double_z else dd.z_channels, 3,
                               dtype=dtype, rngs=rngs)

    def __call__(self, x):
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            h = level.run(h)
            if i != len(self.down) - 1:
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nnx.Module):
    def __init__(self, dd, attn_kw, *, dtype=jnp.float32, rngs: nnx.Rngs):
        ch, mult, nrb = dd.ch, tuple(dd.ch_mult), _res_blocks(dd)
        attn_res = tuple(dd.attn_resolutions)
        c_in = ch * mult[-1]
        res = dd.resolution // 2 ** (len(mult) - 1)
        self.conv_in = Conv2d(dd.z_channels, c_in, 3, dtype=dtype, rngs=rngs)
        self.mid = Mid(c_in, attn_kw, dtype=dtype, rngs=rngs)
        levels = [None] * len(mult)
        for i in reversed(range(len(mult))):
            blocks, attns = [], []
            for _ in range(nrb[i] + 1):
                blocks.append(ResnetBlock(c_in, ch * mult[i], dtype=dtype, rngs=rngs))
                c_in = ch * mult[i]
                if res in attn_res:
                    attns.append(AttnBlock(c_in, **attn_kw, dtype=dtype, rngs=rngs))
            levels[i] = Level(blocks, attns, *(() if i == 0 else ("upsample", Upsample(c_in, dtype=dtype, rngs=rngs))))
            res = res * 2 if i else res
        self.up = nnx.List(levels)
        self.norm_out = _norm(c_in)
        self.conv_out = Conv2d(c_in, dd.out_ch, 3, dtype=dtype, rngs=rngs)

    def __call__(self, z):
        h = self.mid(self.conv_in(z))
        for i in reversed(range(len(self.up))):
            h = self.up[i].run(h)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


# ----------------------------------------------------------------------------- quantiser


def nearest_code(z_flat, codebook, *, chunk_elements: int = QUANT_CHUNK_ELEMENTS):
    """argmin_k |z|^2 + |e_k|^2 - 2 z.e_k in float32 (first index on ties), (N, C) -> (N,) int32.

    Positions are processed in blocks of chunk_elements // n_codes rows to bound memory.
    """
    z_flat = z_flat.astype(jnp.float32)
    e = codebook.astype(jnp.float32)
    e2 = jnp.sum(e * e, axis=1)

    def rows(zb):
        d = (jnp.sum(zb * zb, axis=-1, keepdims=True) + e2
             - 2.0 * jnp.matmul(zb, e.T, precision=jax.lax.Precision.HIGHEST))
        return jnp.argmin(d, axis=-1).astype(jnp.int32)

    n = z_flat.shape[0]
    block = max(1, chunk_elements // e.shape[0])
    if n <= block:
        return rows(z_flat)
    return jax.lax.map(rows, z_flat, batch_size=block)


class Embedding(nnx.Module):
    """torch.nn.Embedding weight holder: param `embedding` (n, d) <-> torch `<path>.weight`."""

    def __init__(self, n: int, d: int, *, rngs: nnx.Rngs):
        self.embedding = nnx.Param(jax.random.uniform(rngs.params(), (n, d), jnp.float32, -1.0 / n, 1.0 / n))


class VectorQuantizer(nnx.Module):
    """Codebook (n_embed, embed_dim) at `embedding.embedding` (torch `quantize.embedding.weight`)."""

    def __init__(self, n_embed: int, embed_dim: int, *, beta: float = 0.25, rngs: nnx.Rngs):
        self.beta = beta
        self.embedding = Embedding(n_embed, embed_dim, rngs=rngs)

    @property
    def codebook(self):
        return self.embedding.embedding[...]

    def __call__(self, z):
        """(B,H,W,C) -> (z_q straight-through in float32, indices (B,H,W) int32)."""
        b, h, w, c = z.shape
        z = z.astype(jnp.float32)
        idx = nearest_code(z.reshape(-1, c), self.codebook).reshape(b, h, w)
        e = jnp.take(self.codebook, idx, axis=0)
        return z + jax.lax.stop_gradient(e - z), idx

    def loss(self, z):
        """Legacy VQ loss: mean((sg[e] - z)^2) + beta * mean((e - sg[z])^2)."""
        z = z.astype(jnp.float32)
        _, idx = self(z)
        e = jnp.take(self.codebook, idx, axis=0)
        return (jnp.mean(jnp.square(jax.lax.stop_gradient(e) - z))
                + self.beta * jnp.mean(jnp.square(e - jax.lax.stop_gradient(z))))


# ----------------------------------------------------------------------------- model


def _autoencoder_section(cfg):
    return cfg.autoencoder if "autoencoder" in cfg else cfg


class VQModel(nnx.Module):
    """VQModelTorch. `cfg`: the `autoencoder` config section (or a full config holding one).

    attn_impl: "auto" (dense up to `chunk_threshold` tokens, chunked above), "dense", "chunked".
    """

    def __init__(self, cfg, *, dtype=jnp.float32, attn_impl: str = "auto",
                 chunk_threshold: int = ATTN_CHUNK_THRESHOLD, rngs: nnx.Rngs):
        cfg = _autoencoder_section(cfg)
        dd = cfg.ddconfig
        if dd.double_z:
            raise ValueError("VQModel expects ddconfig.double_z = False (that is the KL autoencoder)")
        attn_kw = dict(attn_impl=attn_impl, chunk_threshold=chunk_threshold)
        self.dtype = dtype
        self.factor = 2 ** (len(dd.ch_mult) - 1)
        self.encoder = Encoder(dd, attn_kw, dtype=dtype, rngs=rngs)
        self.decoder = Decoder(dd, attn_kw, dtype=dtype, rngs=rngs)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim, rngs=rngs)
        self.quant_conv = Conv2d(dd.z_channels, cfg.embed_dim, 1, dtype=dtype, rngs=rngs)
        self.post_quant_conv = Conv2d(cfg.embed_dim, dd.z_channels, 1, dtype=dtype, rngs=rngs)

    def encode(self, x):
        """Image (B,H,W,3) in [-1,1] -> continuous latent (B,H/f,W/f,embed_dim); no quantisation."""
        return self.quant_conv(self.encoder(x))

    def decode(self, z, quantize: bool = True):
        """Latent -> image; quantises first unless quantize=False (force_not_quantize)."""
        if quantize:
            z, _ = self.quantize(z)
        return self.decoder(self.post_quant_conv(z))

    def quantize_loss(self, z):
        return self.quantize.loss(z)

    def __call__(self, x, quantize: bool = True):
        return self.decode(self.encode(x), quantize=quantize)


def set_attn_impl(module: nnx.Module, attn_impl: str, *, chunk_threshold: int | None = None) -> None:
    """Switch every AttnBlock of `module` to `attn_impl` (do this before nnx.split / jit)."""
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
    for _, m in nnx.iter_modules(module):
        if isinstance(m, AttnBlock):
            m.attn_impl = attn_impl
            if chunk_threshold is not None:
                m.chunk_threshold = chunk_threshold


def num_params(module: nnx.Module) -> int:
    return sum(math.prod(v.shape) for v in jax.tree.leaves(nnx.state(module, nnx.Param)))

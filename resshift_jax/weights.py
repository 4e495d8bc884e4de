"""PyTorch state_dict <-> Flax NNX parameters, without PyTorch.

Convention (all our modules follow it): an NNX module's attribute path mirrors the PyTorch
state_dict key, with `nnx.List` for indexed containers (activation slots hold None), so the
mapping is a rename of the leaf plus a layout transpose:

    torch `<path>.weight` (Conv2d, O,I,kh,kw)  <->  nnx `<path>.kernel` (kh,kw,I,O)
    torch `<path>.weight` (Linear, out,in)     <->  nnx `<path>.kernel` (in,out)
    torch `<path>.weight` (GroupNorm)          <->  nnx `<path>.scale`
    torch `<path>.weight` (Embedding)          <->  nnx `<path>.embedding`
    anything else (`bias`, `relative_position_bias_table`, ...) keeps its name and layout.

Reading official checkpoints needs no PyTorch: `.pth` files (torch.save zip format) go through a
restricted unpickler that only rebuilds tensors (section "Reading .pth"). Also here: safetensors
and Orbax I/O, `load_unet` / `load_vqgan` / `load_first_stage` (by `autoencoder.kind`) /
`load_lpips`, and a converter CLI:

    python -m resshift_jax.weights convert IN OUT --kind unet|vqgan --config realsr_v3
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resshift_jax.config import load_config
from resshift_jax.paths import resolve_project_path
from resshift_jax.models import first_stage
from resshift_jax.models.lpips import LPIPS, NETS as LPIPS_NETS, empty_lpips
from resshift_jax.models.unet import UNetModelSwin
from resshift_jax.models.vqgan import VQModel
# Reading .pth: the restricted unpickler lives in torch_pickle.py (re-exported for callers).
from resshift_jax.torch_pickle import UnsafeCheckpointError, load_pth  # noqa: F401

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


def torch_key(path) -> str:
    """NNX state path (tuple of str/int) -> PyTorch state_dict key."""
    *head, leaf = (str(p) for p in path)
    return ".".join([*head, _LEAF_TO_TORCH.get(leaf, leaf)])


def to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 4:
        return np.transpose(value, (3, 2, 0, 1))
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def from_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def module_state_dict(module: nnx.Module) -> dict[str, np.ndarray]:
    """Our parameters in the official key layout (float32 numpy, PyTorch layouts)."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
        out[torch_key(path)] = np.asarray(to_torch_layout(str(path[-1]), np.asarray(var[...])))
    return out


class CheckpointMismatchError(ValueError):
    """A state_dict does not fit the model: missing, unexpected or mis-shaped keys."""


def _describe(keys, shapes, limit=20):
    items = [f"  {k}: {tuple(shapes[k]) if k in shapes else '?'}" for k in sorted(keys)[:limit]]
    more = len(keys) - limit
    return "\n".join(items + ([f"  ... and {more} more"] if more > 0 else []))


def load_state_dict_into(module: nnx.Module, state_dict: dict, *, ignore_suffixes=(), source="checkpoint") -> None:
    """Copy a (prefix-free) PyTorch state_dict into `module`'s parameters, strictly.

    Keys ending in one of `ignore_suffixes` (buffers we recompute) are skipped. A missing,
    unexpected or mis-shaped key raises CheckpointMismatchError listing them all.
    """
    state = nnx.state(module, nnx.Param)
    flat = nnx.to_flat_state(state)
    wanted = {torch_key(p): (p, v) for p, v in flat}
    given = {k: v for k, v in state_dict.items() if not k.endswith(tuple(ignore_suffixes))}
    missing = sorted(set(wanted) - set(given))
    unexpected = sorted(set(given) - set(wanted))
    bad_shape = []
    new_values = {}
    for key, (path, var) in wanted.items():
        if key not in given:
            continue
        value = from_torch_layout(str(path[-1]), np.asarray(given[key]))
        if tuple(value.shape) != tuple(var.get_value().shape):
            bad_shape.append(f"  {key}: expected {_torch_shape(path, var)}, found {tuple(np.asarray(given[key]).shape)}")
            continue
        new_values[path] = value
    if missing or unexpected or bad_shape:
        parts = [f"{source} does not fit {type(module).__name__}:"]
        if missing:
            parts.append(f"{len(missing)} missing key(s):\n" + _describe(missing, {k: _torch_shape(*wanted[k]) for k in missing}))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s):\n" + _describe(unexpected, {k: np.shape(given[k]) for k in unexpected}))
        if bad_shape:
            parts.append(f"{len(bad_shape)} mis-shaped key(s):\n" + "\n".join(bad_shape[:20]))
        hint = _wrong_model_hint(type(module).__name__, given)
        raise CheckpointMismatchError("\n".join(parts + ([hint] if hint else [])))
    for path, var in flat:
        var.set_value(jnp.asarray(new_values[path], dtype=var.get_value().dtype))
    nnx.update(module, nnx.from_flat_state(flat))


def _torch_shape(path, var) -> tuple:
    shape = tuple(var.get_value().shape)
    if str(path[-1]) == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if str(path[-1]) == "kernel" and len(shape) == 2:
        return shape[::-1]
    return shape


def _wrong_model_hint(model_name: str, given: dict) -> str:
    keys = list(given)
    vq_like = sum(k.startswith(("encoder.", "decoder.", "quantize.")) for k in keys)
    unet_like = sum(k.startswith(("input_blocks.", "middle_block.", "output_blocks.", "time_embed.")) for k in keys)
    if vq_like > len(keys) // 2 and "VQ" not in model_name:
        return "hint: this looks like a VQ autoencoder checkpoint (encoder./decoder./quantize. keys); use load_vqgan"
    if unet_like > len(keys) // 2 and "UNet" not in model_name:
        return "hint: this looks like a UNet checkpoint (input_blocks./output_blocks. keys); use load_unet"
    return ""


def unwrap_state_dict(obj, *, source="checkpoint") -> dict[str, np.ndarray]:
    """Take `obj['state_dict']` if present; strip leading `module.` / `_orig_mod.` from every key."""
    while isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a state_dict (dict of tensors), found {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
        k = str(key)
        while k.startswith(("module.", "_orig_mod.")):
            k = k.split(".", 1)[1]
        if k in out:
            raise ValueError(f"{source}: key {key!r} collides with another key after removing prefixes ({k!r})")
        out[k] = value
    return out


def read_pth(path) -> dict[str, np.ndarray]:
    """A .pth/.pt/.ckpt file -> flat state_dict (unwrapped, prefixes stripped), without torch."""
    return unwrap_state_dict(load_pth(path), source=str(path))


# ----------------------------------------------------------------------------- safetensors / Orbax


def read_safetensors(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return unwrap_state_dict(load_file(str(path)), source=str(path))


def write_safetensors(state_dict: dict, path) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, str(path), metadata={"format": "pt"})


def save_checkpoint(module: nnx.Module, path) -> None:
    """Write `module`'s parameters as .safetensors in the official key layout (buffers omitted)."""
    path = pathlib.Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: save_checkpoint writes .safetensors (use save_orbax for a directory)")
    write_safetensors(module_state_dict(module), path)


def save_orbax(module: nnx.Module, directory) -> None:
    """Write `module`'s parameters (NNX layout, nested) as an Orbax checkpoint directory."""
    import orbax.checkpoint as ocp

    directory = pathlib.Path(directory).absolute()
    if directory.exists():
        if not directory.is_dir() or any(directory.iterdir()):
            raise FileExistsError(f"{directory} exists and is not an empty directory")
        directory.rmdir()  # Orbax creates it itself
    state = nnx.to_pure_dict(nnx.state(module, nnx.Param))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory, state)
        ckptr.wait_until_finished()


def read_orbax(directory) -> dict[str, np.ndarray]:
    """An Orbax directory written by save_orbax -> flat state_dict in the official layout."""
    import orbax.checkpoint as ocp

    directory = pathlib.Path(directory).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(directory)
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = tuple(getattr(p, "key", getattr(p, "idx", p)) for p in path)
        out[torch_key(keys)] = to_torch_layout(str(keys[-1]), np.asarray(leaf))
    return out


def read_checkpoint(path) -> dict[str, np.ndarray]:
    """Any supported checkpoint -> flat state_dict: .pth/.pt/.ckpt, .safetensors, Orbax directory."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        return read_orbax(path)
    if path.suffix in (".pth", ".pt", ".ckpt", ".bin"):
        return read_pth(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    raise ValueError(f"{path}: unknown checkpoint type (expected .pth/.pt/.ckpt, .safetensors or an Orbax directory)")


# ----------------------------------------------------------------------------- model loaders

RECOMPUTED_BUFFERS = ("relative_position_index", "attn_mask")


def _build(factory):
    """Construct abstractly (no random init) when all state is parameters, else concretely."""
    abstract = nnx.eval_shape(factory)
    if jax.tree.leaves(nnx.state(abstract, nnx.Not(nnx.Param))):
        return factory()
    return abstract


def load_into(module: nnx.Module, path, state_dict=None) -> nnx.Module:
    sd = read_checkpoint(path) if state_dict is None else state_dict
    load_state_dict_into(module, sd, ignore_suffixes=RECOMPUTED_BUFFERS, source=str(path))
    return module


def load_unet(path, config="realsr_v3", *, dtype=jnp.float32) -> nnx.Module:
    """UNetModelSwin built from `config` (name, path or ConfigDict) with the weights in `path`."""
    cfg = load_config(config)
    sd = read_checkpoint(path)
    return load_into(_build(lambda: UNetModelSwin(cfg.model, dtype=dtype, rngs=nnx.Rngs(0))), path, sd)


def load_vqgan(path, config="realsr_v3", *, dtype=jnp.float32, **model_kwargs) -> nnx.Module:
    """VQModel built from `config`'s autoencoder section with the weights in `path`."""
    cfg = load_config(config)
    sd = read_checkpoint(path)
    return load_into(_build(lambda: VQModel(cfg.autoencoder, dtype=dtype, **model_kwargs, rngs=nnx.Rngs(0))), path, sd)


def load_first_stage(config, path=None, *, dtype=jnp.float32, **model_kwargs) -> nnx.Module:
    """The first stage of `config` (`autoencoder.kind`, models/first_stage.py), ready to use.

    - "vq": the VQModel with the weights in `path`, or, when `path` is None/empty, in the
      config's `autoencoder.ckpt_path` (resolved against the project root).
    - "space_to_depth": the parameter-free SpaceToDepth by `diffusion.sf`; it has no weights,
      so a `path` is an error (it would be silently ignored otherwise).
    `model_kwargs` go to VQModel (e.g. attn_impl)."""
    cfg = load_config(config)
    kind = first_stage.kind_of(cfg)
    if kind == "space_to_depth":
        if path:
            raise ValueError(f"autoencoder.kind='space_to_depth' is parameter-free: it takes no checkpoint, "
                             f"but got {str(path)!r} (drop the first-stage/VAE checkpoint, or use a config "
                             "with autoencoder.kind='vq')")
        return first_stage.build_first_stage(cfg, dtype=dtype)
    if not path:
        path = str(cfg.autoencoder.ckpt_path or "")
        if not path:
            raise ValueError("autoencoder.kind='vq' needs trained weights: give a path or set "
                             "autoencoder.ckpt_path (e.g. weights/autoencoder_vq_f4.pth)")
        path = resolve_project_path(path)
    return load_vqgan(path, cfg, dtype=dtype, **model_kwargs)


# ----------------------------------------------------------------------------- LPIPS


def _read_lpips_part(source, what: str) -> dict:
    """A state dict from a path (.pth via the restricted unpickler, .safetensors, Orbax dir)
    through read_checkpoint, or an already-read dict."""
    if isinstance(source, dict):
        return {k: np.asarray(v) for k, v in source.items()}
    try:
        return dict(read_checkpoint(source))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"LPIPS {what} weights: {e}") from e


def lpips_state_dict(backbone: dict, heads: dict | None, net: str) -> dict:
    """Merge torchvision backbone + lpips heads (or one saved lpips.LPIPS state_dict) into our
    key layout: `features.N.{weight,bias}` and `linK.model.1.weight`."""
    out = {}
    layers, taps, _ = LPIPS_NETS[net]
    conv_idx = {i for i, s in enumerate(layers) if s[0] == "conv"}
    for src in (backbone, heads or {}):
        for key, val in src.items():
            parts = key.split(".")
            if parts[0] == "module":  # DataParallel prefix
                parts = parts[1:]
            if parts[:1] == ["net"] and len(parts) == 4 and parts[1].startswith("slice"):
                parts = ["features", parts[2], parts[3]]  # lpips keeps torchvision's numbering
            if parts[0] == "features":
                if int(parts[1]) in conv_idx:
                    out[".".join(parts)] = val
            elif parts[0].startswith("lin") and parts[1:] == ["model", "1", "weight"]:
                out[".".join(parts)] = val
            # classifier.*, scaling_layer.* (constants) and anything else are not ours
    return out


def load_lpips(net: str = "vgg", backbone_path=None, heads_path=None, *, dtype=jnp.float32) -> LPIPS:
    """LPIPS with pretrained weights: `backbone_path` = torchvision vgg16-397923af.pth /
    alexnet-owt-7be5be79.pth (or a whole lpips.LPIPS state_dict), `heads_path` = lpips
    v0.1 vgg.pth / alex.pth. Paths or already-read state dicts. Strict: every parameter must
    be found with the right shape."""
    if backbone_path is None:
        raise ValueError("load_lpips: backbone_path (torchvision features weights) is required")
    model = empty_lpips(net, dtype=dtype)
    sd = lpips_state_dict(_read_lpips_part(backbone_path, "backbone"),
                          _read_lpips_part(heads_path, "heads") if heads_path is not None else None, net)
    src = f"LPIPS-{net} weights ({backbone_path}" + (f", {heads_path})" if heads_path is not None else ")")
    load_state_dict_into(model, sd, source=src)
    return model


# ----------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resshift_jax.weights",
                                     description="Convert official ResShift checkpoints without PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="check a checkpoint against the model and rewrite it")
    conv.add_argument("input", help=".pth/.pt/.ckpt, .safetensors or Orbax directory")
    conv.add_argument("output", help="OUT.safetensors, or a directory (written with Orbax)")
    conv.add_argument("--kind", required=True, choices=("unet", "vqgan"))
    conv.add_argument("--config", default="realsr_v3", help="config name or path (default realsr_v3)")
    args = parser.parse_args(argv)
    try:
        out = pathlib.Path(args.output)
        if out.suffix not in ("", ".safetensors"):
            raise ValueError(f"{out}: output must end in .safetensors or be a directory (Orbax)")
        loader = load_unet if args.kind == "unet" else load_vqgan
        model = loader(args.input, args.config)
        if out.suffix == ".safetensors":
            save_checkpoint(model, out)
        else:
            save_orbax(model, out)
    except Exception as e:  # noqa: BLE001 - a CLI reports every failure the same way
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    n = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(f"wrote {args.output} ({args.kind}, {n:,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""resshift-jax: ResShift (residual-shifting diffusion super-resolution) in JAX/Flax NNX.

Public API (imported lazily so `import resshift_jax` stays fast):
    load_unet(path, config)   -> UNetModelSwin with official weights
    load_vqgan(path, config)  -> VQModel with official weights
    SRPipeline(unet, vqgan, config)
    load_config(name_or_path)
"""

__version__ = "0.1.0"

_LAZY = {
    "load_unet": "resshift_jax.weights",
    "load_vqgan": "resshift_jax.weights",
    "SRPipeline": "resshift_jax.pipeline",
    "load_config": "resshift_jax.config",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'resshift_jax' has no attribute {name!r}")

"""The residual-shifting schedule (η_t, κ, p) and every table derived from it.

Pure numpy: tables are built in float64 exactly as the reference builds them and handed to
JAX as float32 (`Schedule.f32`). Indices are the 0-based array index t = 0..T-1 used by the
reference code; the paper's t = 1..T is index t-1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax.numpy as jnp
import numpy as np

PREDICT_TYPES = ("xstart", "epsilon", "epsilon_scale", "residual")


def exponential_sqrt_etas(steps: int, min_noise_level: float, etas_end: float = 0.99,
                          kappa: float = 1.0, power: float = 0.3) -> np.ndarray:
    """sqrt(η_t) of the 'exponential' schedule: √η_t = √η_1 · b^{((t/(T−1))^p)(T−1)}.

    √η_1 = min(min_noise_level/κ, min_noise_level), √η_T = etas_end, b = (√η_T/√η_1)^{1/(T−1)}.
    """
    if steps < 2:
        raise ValueError(f"the exponential schedule needs at least 2 steps, got {steps}")
    sqrt_eta_1 = min(min_noise_level / kappa, min_noise_level)
    if not 0 < sqrt_eta_1 < etas_end <= 1:
        raise ValueError(f"need 0 < min(min_noise_level/kappa, min_noise_level) = {sqrt_eta_1} "
                         f"< etas_end = {etas_end} <= 1")
    b = math.exp(1 / (steps - 1) * math.log(etas_end / sqrt_eta_1))
    exponent = np.linspace(0, 1, steps, endpoint=True) ** power * (steps - 1)
    return np.power(np.full((steps,), b), exponent) * sqrt_eta_1


def respace(sqrt_etas: np.ndarray, section_count: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Keep K of T steps, as the reference's `space_timesteps` with an integer K.

    Kept original indices are {⌊(T/K)·x⌋ : x = 0..K−1}; returns (kept sqrt_etas, timestep_map).
    """
    T = len(sqrt_etas)
    if section_count is None or section_count == T:
        return np.asarray(sqrt_etas, np.float64), np.arange(T, dtype=np.int64)
    if not 1 <= section_count <= T:
        raise ValueError(f"timestep_respacing={section_count} must be in [1, {T}]")
    frac_stride = T / section_count
    kept = sorted({int(x * frac_stride) for x in range(section_count)})
    kept = np.asarray(kept, np.int64)
    return np.asarray(sqrt_etas, np.float64)[kept], kept


def derived_tables(sqrt_etas: np.ndarray, kappa: float, predict_type: str = "xstart") -> dict[str, np.ndarray]:
    """All per-timestep float64 tables of `GaussianDiffusion.__init__`."""
    sqrt_etas = np.asarray(sqrt_etas, np.float64)
    etas = sqrt_etas ** 2
    if not ((etas > 0).all() and (etas <= 1).all()):
        raise ValueError(f"every eta_t must lie in (0, 1]; got {etas}")
    etas_prev = np.append(0.0, etas[:-1])
    alpha = etas - etas_prev
    posterior_variance = kappa ** 2 * etas_prev / etas * alpha
    posterior_variance_clipped = np.append(posterior_variance[1], posterior_variance[1:])
    if predict_type in ("xstart", "residual"):
        weight_loss_mse = 0.5 / posterior_variance_clipped * (alpha / etas) ** 2
    elif predict_type in ("epsilon", "epsilon_scale"):
        weight_loss_mse = 0.5 / posterior_variance_clipped * (kappa * alpha / ((1 - etas) * sqrt_etas)) ** 2
    else:
        raise ValueError(f"predict_type {predict_type!r} not in {PREDICT_TYPES}")
    return dict(
        sqrt_etas=sqrt_etas,
        etas=etas,
        etas_prev=etas_prev,
        alpha=alpha,
        posterior_variance=posterior_variance,
        posterior_variance_clipped=posterior_variance_clipped,
        posterior_log_variance_clipped=np.log(posterior_variance_clipped),
        posterior_mean_coef1=etas_prev / etas,
        posterior_mean_coef2=alpha / etas,
        weight_loss_mse=weight_loss_mse,
        # products the reference forms in float64 before its float32 cast
        kappa_sqrt_etas=kappa * sqrt_etas,
        kappa=np.full_like(sqrt_etas, kappa),
        one_minus_etas=1 - etas,
    )


def generalized_step_tables(tables: dict, noise_scale: float) -> dict[str, np.ndarray]:
    """Coefficients (float64, (T,)) of the reverse step with noise scale s in [0, 1]
    (`diffusion.generalized_step`): x_{t−1} = a_t x̂0 + b_t y + c_t x_t + σ_t z, with
    σ_t = s·√(κ² α_t η_{t−1}/η_t), c_t = √(η_{t−1}/η_t · (1 − s² α_t/η_t)),
    a_t = 1 − η_{t−1} − c_t (1 − η_t), b_t = η_{t−1} − c_t η_t (κ cancels in c_t).
    s = 1: a_t = α_t/η_t, b_t = 0, c_t = η_{t−1}/η_t (the posterior mean); s = 0: SinSR's
    deterministic step (σ_t = 0, c_t = √(η_{t−1}/η_t))."""
    if not 0.0 <= float(noise_scale) <= 1.0:
        raise ValueError(f"noise_scale must be in [0, 1], got {noise_scale}")
    etas, etas_prev, alpha = (np.asarray(tables[k], np.float64) for k in ("etas", "etas_prev", "alpha"))
    s2 = float(noise_scale) ** 2
    c = np.sqrt(etas_prev / etas * np.maximum(1.0 - s2 * alpha / etas, 0.0))
    return dict(step_coef_x0=1.0 - etas_prev - c * (1.0 - etas), step_coef_y=etas_prev - c * etas, step_coef_xt=c,
                step_sigma=np.sqrt(s2 * np.asarray(tables["posterior_variance"], np.float64)))


# --------------------------------------------------------------------------- w_t schemes
# A scheme maps the float64 tables to per-timestep loss weights w_t (float64, shape (T,)).
WeightScheme = Callable[[dict], np.ndarray]
WEIGHT_SCHEMES: dict[str, WeightScheme] = {}


def register_weight_scheme(name: str):
    """Decorator: add a w_t scheme to the registry under `name`."""
    def deco(fn: WeightScheme) -> WeightScheme:
        if name in WEIGHT_SCHEMES:
            raise ValueError(f"w_t scheme {name!r} is already registered")
        WEIGHT_SCHEMES[name] = fn
        return fn
    return deco


@register_weight_scheme("uniform")
def uniform_weights(tables: dict) -> np.ndarray:
    """w_t = 1 (the official configs, weighted_mse=False)."""
    return np.ones_like(tables["etas"])


@register_weight_scheme("kl")
def kl_weights(tables: dict) -> np.ndarray:
    """w_t = weight_loss_mse = 0.5/σ²_t · (α_t/η_t)² (the reference's weighted_mse=True).

    For x0-prediction this is α_t / (2κ²η_tη_{t−1}) of the paper's KL bound, with σ²_0 clipped
    to σ²_1 (so w_0 is finite).
    """
    return tables["weight_loss_mse"]


@register_weight_scheme("kl_mean1")
def kl_mean1_weights(tables: dict) -> np.ndarray:
    """w_t = kl_t / mean_s(kl_s): the KL weights rescaled to mean 1 (same effective lr as uniform)."""
    w = tables["weight_loss_mse"]
    return w / w.mean()


@register_weight_scheme("kl_clipped")
def kl_clipped_weights(tables: dict, max_ratio: float = 10.0) -> np.ndarray:
    """w_t = min(kl_t / min_s kl_s, max_ratio): KL weights relative to the smallest, capped.

    The KL weight of the first step dwarfs the rest (~226 vs ~1 for v1); capping the ratio keeps
    its shape without letting one step dominate.
    """
    w = tables["weight_loss_mse"]
    return np.minimum(w / w.min(), max_ratio)


@register_weight_scheme("snr")
def snr_weights(tables: dict) -> np.ndarray:
    """w_t = SNR_t = 1 / (κ² η_t): the latent has unit scale, the noise variance is κ²η_t."""
    return 1.0 / (tables["kappa"] ** 2 * tables["etas"])


@register_weight_scheme("min_snr")
def min_snr_weights(tables: dict, gamma: float = 5.0) -> np.ndarray:
    """Min-SNR-γ for x0-prediction (Hang et al. 2023): w_t = min(SNR_t, γ), SNR_t = 1/(κ²η_t)."""
    return np.minimum(1.0 / (tables["kappa"] ** 2 * tables["etas"]), gamma)


def weight_scheme(name: str) -> WeightScheme:
    try:
        return WEIGHT_SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown w_t scheme {name!r}; registered: {', '.join(sorted(WEIGHT_SCHEMES))}") from None


# --------------------------------------------------------------------------- t sampling
# A sampler maps the tables to probabilities p_t (sum 1). Training draws t ~ p and multiplies the
# loss by the importance weight 1/(T p_t), so the expected objective stays Σ_t w_t·E‖·‖²/T.
T_SAMPLERS: dict[str, Callable[[dict], np.ndarray]] = {
    "uniform": lambda tab: np.full_like(tab["etas"], 1.0 / len(tab["etas"])),
    # sample where the KL weight is large, proportional to sqrt(kl) (a softened version)
    "kl_sqrt": lambda tab: np.sqrt(tab["weight_loss_mse"]) / np.sqrt(tab["weight_loss_mse"]).sum(),
    # more samples at the noisy end (large η): p_t ∝ η_t
    "eta": lambda tab: tab["etas"] / tab["etas"].sum(),
}


def t_probabilities(name: str, tables: dict) -> np.ndarray:
    try:
        p = np.asarray(T_SAMPLERS[name](tables), np.float64)
    except KeyError:
        raise ValueError(f"unknown t sampler {name!r}; registered: {', '.join(sorted(T_SAMPLERS))}") from None
    if not (np.all(p > 0) and abs(p.sum() - 1) < 1e-9):
        raise ValueError(f"t sampler {name!r} must give positive probabilities summing to 1, got {p}")
    return p


# --------------------------------------------------------------------------- Schedule
@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """The (possibly respaced) schedule: float64 tables, κ, timestep map, prediction type."""

    tables: dict  # name -> float64 (T,)
    kappa: float
    timestep_map: np.ndarray  # respaced index -> original index (int64)
    predict_type: str = "xstart"
    normalize_input: bool = True
    latent_flag: bool = True
    loss_weighting: str = "uniform"
    loss_weighting_kwargs: tuple = ()  # ((name, value), ...) passed to the scheme
    t_sampling: str = "uniform"

    @property
    def num_timesteps(self) -> int:
        return len(self.tables["etas"])

    def f32(self, name: str) -> jnp.ndarray:
        """A table as float32 (the reference gathers from float64, then casts)."""
        return jnp.asarray(np.asarray(self.tables[name], np.float64).astype(np.float32))

    def loss_weights(self, name: str | None = None, **kwargs) -> np.ndarray:
        """w_t of a registered scheme (default: this schedule's `loss_weighting` and its
        kwargs), float64 (T,)."""
        if name is None:
            name, kwargs = self.loss_weighting, {**dict(self.loss_weighting_kwargs), **kwargs}
        return np.asarray(weight_scheme(name)(self.tables, **kwargs), np.float64)

    def t_probabilities(self) -> np.ndarray:
        """p_t of this schedule's t sampler (float64, sums to 1)."""
        return t_probabilities(self.t_sampling, self.tables)

    def step_tables(self, noise_scale: float) -> dict[str, jnp.ndarray]:
        """`generalized_step_tables` as float32 (computed in float64, then cast, as `f32`)."""
        return {k: jnp.asarray(v.astype(np.float32)) for k, v in generalized_step_tables(self.tables, noise_scale).items()}

    def importance_weights(self) -> np.ndarray:
        """1 / (T p_t): makes non-uniform t sampling unbiased for the uniform-t objective."""
        return 1.0 / (self.num_timesteps * self.t_probabilities())


def make_schedule(*, steps: int, min_noise_level: float, etas_end: float = 0.99, kappa: float = 2.0,
                  power: float = 0.3, timestep_respacing: int | None = None, predict_type: str = "xstart",
                  normalize_input: bool = True, latent_flag: bool = True, loss_weighting: str = "uniform",
                  loss_weighting_kwargs: dict | None = None, t_sampling: str = "uniform",
                  schedule_name: str = "exponential") -> Schedule:
    if schedule_name != "exponential":
        raise ValueError(f"schedule_name {schedule_name!r} is not supported (only 'exponential')")
    weight_scheme(loss_weighting)  # fail early on a typo
    sqrt_etas = exponential_sqrt_etas(steps, min_noise_level, etas_end, kappa, power)
    kept, tmap = respace(sqrt_etas, timestep_respacing)
    s = Schedule(tables=derived_tables(kept, kappa, predict_type), kappa=float(kappa), timestep_map=tmap,
                 predict_type=predict_type, normalize_input=normalize_input, latent_flag=latent_flag,
                 loss_weighting=loss_weighting, loss_weighting_kwargs=tuple(sorted((loss_weighting_kwargs or {}).items())),
                 t_sampling=t_sampling)
    s.loss_weights()  # fail early on bad scheme kwargs
    s.t_probabilities()
    return s


def from_config(diffusion_cfg) -> Schedule:
    """Schedule from the `diffusion` section of a config (official key names)."""
    d = diffusion_cfg
    weighting = d.loss_weighting
    if d.weighted_mse and weighting == "uniform":
        weighting = "kl"
    return make_schedule(steps=d.steps, min_noise_level=d.min_noise_level, etas_end=d.etas_end,
                         kappa=d.kappa, power=d.schedule_kwargs.power,
                         timestep_respacing=d.timestep_respacing,
                         predict_type=d.predict_type, normalize_input=d.normalize_input,
                         latent_flag=d.latent_flag, loss_weighting=weighting,
                         loss_weighting_kwargs=dict(d.loss_weighting_kwargs or {}),
                         t_sampling=d.t_sampling, schedule_name=d.schedule_name)

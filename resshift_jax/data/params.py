"""Host-side drawing of every Real-ESRGAN degradation parameter of one training example.

All randomness of a pair comes from one `np.random.Generator` made by `example_rng(seed,
epoch, index)`, so a given (seed, epoch, index) always gives the same pair, whatever the
sharding, worker count or batch it lands in. The device only receives numbers (kernels,
sizes, modes, levels, qualities and a noise seed) and is deterministic given them.

Deviation from the reference, on purpose: the reference draws the resize scale/mode, the
Gaussian-vs-Poisson choice, the second-stage and the final-order choices once per *batch*
(Python `random` in `prepare_data`); here every example draws its own, with the same
probabilities and ranges, so the marginal distribution of a pair is the reference's.
Likewise the gray Gaussian noise field: basicsr's `random_add_gaussian_noise_pt` draws one
(H, W) gray field per *batch* (`torch.randn(*img.size()[2:4])`, scaled by each sample's
sigma), so gray-noise samples of one batch share a pattern; here each example draws its own
field (ops.add_gaussian_noise, from its noise seed). Poisson gray noise is per sample in both.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from resshift_jax.data import kernels

UP, DOWN, KEEP = 0, 1, 2


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=[int(seed) & (2**64 - 1),
                                                     (int(epoch) << 32) | (int(index) & 0xFFFFFFFF)]))


@dataclasses.dataclass(frozen=True)
class DegradationSpec:
    """All ranges/probabilities of the `degradation` and `data.train` config sections."""
    gt_size: int = 256
    sf: int = 4
    resize_prob: tuple = (0.2, 0.7, 0.1)
    resize_range: tuple = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple = (1.0, 30.0)
    poisson_scale_range: tuple = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple = (30.0, 95.0)
    second_order_prob: float = 0.5
    second_blur_prob: float = 0.8
    resize_prob2: tuple = (0.3, 0.4, 0.3)
    resize_range2: tuple = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple = (1.0, 25.0)
    poisson_scale_range2: tuple = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple = (30.0, 95.0)
    blur_kernel_size: int = 21
    kernel_list: tuple = kernels.KERNEL_TYPES
    kernel_prob: tuple = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    blur_sigma: tuple = (0.2, 3.0)
    betag_range: tuple = (0.5, 4.0)
    betap_range: tuple = (1.0, 2.0)
    sinc_prob: float = 0.1
    blur_kernel_size2: int = 15
    kernel_list2: tuple = kernels.KERNEL_TYPES
    kernel_prob2: tuple = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    blur_sigma2: tuple = (0.2, 1.5)
    betag_range2: tuple = (0.5, 4.0)
    betap_range2: tuple = (1.0, 2.0)
    sinc_prob2: float = 0.1
    final_sinc_prob: float = 0.8
    use_sharp: bool = False  # USM-sharpen the GT first (degradation.use_sharp)

    @classmethod
    def from_config(cls, cfg) -> "DegradationSpec":
        """From a full config (`cfg.degradation` + `cfg.data.train`) with official key names."""
        fields = {f.name for f in dataclasses.fields(cls)}
        vals = {}
        for section in (cfg.data.train, cfg.degradation):  # degradation wins on shared keys
            for k in fields:
                if k in section:
                    v = section[k]
                    vals[k] = tuple(v) if isinstance(v, (list, tuple)) else v
        if not isinstance(vals.get("sf", 4), int):
            raise ValueError(f"degradation.sf must be an int here, got {vals['sf']!r}")
        return cls(**vals)

    def canvas1(self) -> int:
        """Canvas side after the first resize: largest output, rounded up to 16 (JPEG MCUs)."""
        n = max(self.gt_size, math.floor(self.gt_size * self.resize_range[1]))
        return -(-n // 16) * 16

    def canvas2(self) -> int:
        n = max(self.gt_size // self.sf, int(self.gt_size / self.sf * self.resize_range2[1]))
        return -(-n // 16) * 16


def _updown_scale(rng, probs, rng_range) -> float:
    kind = kernels.draw_choice(rng, probs)
    if kind == UP:
        return float(rng.uniform(1, rng_range[1]))
    if kind == DOWN:
        return float(rng.uniform(rng_range[0], 1))
    return 1.0


def _noise(rng, gauss_prob, sigma_range, poisson_range, gray_prob):
    return dict(gaussian=np.int32(rng.uniform() < gauss_prob),
                sigma=np.float32(rng.uniform(*sigma_range)),
                poisson=np.float32(rng.uniform(*poisson_range)),
                gray=np.int32(rng.uniform() < gray_prob))


def draw_params(rng: np.random.Generator, spec: DegradationSpec, gt_hw=None) -> dict[str, np.ndarray]:
    """Every parameter of one example's degradation, as a flat dict of NumPy arrays."""
    h, w = gt_hw or (spec.gt_size, spec.gt_size)
    s = spec
    k1 = kernels.random_blur_kernel(rng, max_size=s.blur_kernel_size, kernel_list=s.kernel_list,
                                    kernel_prob=s.kernel_prob, sigma_range=s.blur_sigma,
                                    betag_range=s.betag_range, betap_range=s.betap_range, sinc_prob=s.sinc_prob)
    k2 = kernels.random_blur_kernel(rng, max_size=s.blur_kernel_size2, kernel_list=s.kernel_list2,
                                    kernel_prob=s.kernel_prob2, sigma_range=s.blur_sigma2,
                                    betag_range=s.betag_range2, betap_range=s.betap_range2, sinc_prob=s.sinc_prob2)
    sinc = kernels.random_final_sinc(rng, size=s.blur_kernel_size2, final_sinc_prob=s.final_sinc_prob)
    p: dict[str, np.ndarray] = dict(kernel1=k1.astype(np.float32), sinc=sinc.astype(np.float32))
    # first stage
    scale = _updown_scale(rng, s.resize_prob, s.resize_range)
    p["resize1_hw"] = np.array([math.floor(h * scale), math.floor(w * scale)], np.int32)
    p["resize1_ratio"] = np.full(2, 1.0 / scale, np.float32)  # torch uses 1/scale_factor
    p["resize1_mode"] = np.int32(rng.integers(3))
    p.update({f"noise1_{k}": v for k, v in _noise(rng, s.gaussian_noise_prob, s.noise_range,
                                                     s.poisson_scale_range, s.gray_noise_prob).items()})
    p["jpeg1"] = np.float32(rng.uniform(*s.jpeg_range))
    # second stage
    p["second"] = np.int32(rng.uniform() < s.second_order_prob)
    blur2 = rng.uniform() < s.second_blur_prob
    pulse = kernels.random_final_sinc(rng, size=s.blur_kernel_size2, final_sinc_prob=0.0)
    p["kernel2"] = (k2 if blur2 else pulse).astype(np.float32)
    scale2 = _updown_scale(rng, s.resize_prob2, s.resize_range2)
    p["resize2_hw"] = np.array([int(h / s.sf * scale2), int(w / s.sf * scale2)], np.int32)
    p["resize2_mode"] = np.int32(rng.integers(3))
    p.update({f"noise2_{k}": v for k, v in _noise(rng, s.gaussian_noise_prob2, s.noise_range2,
                                                     s.poisson_scale_range2, s.gray_noise_prob2).items()})
    # final stage: order 1 = [resize + sinc] then JPEG, 0 = JPEG then [resize + sinc]
    p["final_order"] = np.int32(rng.uniform() < 0.5)
    p["final_mode"] = np.int32(rng.integers(3))
    p["jpeg2"] = np.float32(rng.uniform(*s.jpeg_range2))
    p["noise_seed"] = np.uint32(rng.integers(2**32, dtype=np.uint64))
    return p


def stack_params(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([it[k] for it in items]) for k in items[0]}

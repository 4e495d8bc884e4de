"""schedule.py against the reference's float64 tables (schedules.npz) and hand-derived facts."""

import json

import numpy as np
import pytest

from resshift_jax import schedule
from resshift_jax.config import load_config

CONFIGS = {"v1": "realsr_v1", "v3": "realsr_v3", "bicsr": "bicsr"}
TABLES = ("sqrt_etas", "etas", "etas_prev", "alpha", "posterior_variance", "posterior_variance_clipped",
          "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "weight_loss_mse")


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return np.load(fixtures_dir / "schedules.npz")


@pytest.mark.parametrize("cfg", sorted(CONFIGS))
def test_every_table_matches_reference(ref, cfg):
    s = schedule.from_config(load_config(CONFIGS[cfg]).diffusion)
    assert s.num_timesteps == int(ref[f"{cfg}/num_timesteps"])
    assert s.kappa == float(ref[f"{cfg}/kappa"])
    for name in TABLES:
        np.testing.assert_allclose(s.tables[name], ref[f"{cfg}/{name}"], rtol=1e-12, atol=0, err_msg=name)
        assert s.tables[name].dtype == np.float64
    np.testing.assert_array_equal(s.timestep_map, ref[f"{cfg}/timestep_map"])
    np.testing.assert_allclose(s.tables["sqrt_etas"], ref[f"{cfg}/sqrt_etas_unspaced"], rtol=1e-12)
    # the reference divides by the float32 sqrt(η κ² + 1); its multiplier agrees to ~1 ulp
    mult = 1 / np.sqrt(s.f32("etas") * np.float32(s.kappa ** 2) + 1)
    np.testing.assert_allclose(mult, ref[f"{cfg}/scale_input_multiplier"], rtol=3e-7)


def test_config_json_matches_our_config(ref):
    for cfg, name in CONFIGS.items():
        official = json.loads(str(ref[f"{cfg}/config_json"]))
        ours = load_config(name).diffusion
        for key, value in official.items():
            if key == "schedule_kwargs":
                assert dict(ours.schedule_kwargs) == value
            else:
                assert ours[key] == value, (cfg, key)


def test_spec_numbers_v3():
    s = schedule.from_config(load_config("realsr_v3").diffusion)
    np.testing.assert_allclose(s.tables["sqrt_etas"], [0.1, 0.52009637, 0.76138199, 0.99], atol=5e-9)
    np.testing.assert_allclose(s.tables["posterior_mean_coef1"], [0, 0.03696854, 0.46661903, 0.59147285], atol=5e-9)
    # η_T = etas_end², not etas_end
    assert s.tables["etas"][-1] == pytest.approx(0.99 ** 2, rel=1e-15)


@pytest.mark.parametrize("T,kappa,p,mn,end", [(2, 1.0, 1.0, 0.1, 0.5), (7, 0.5, 0.7, 0.3, 0.9), (50, 4.0, 0.3, 0.04, 0.99)])
def test_any_schedule_is_consistent(T, kappa, p, mn, end):
    s = schedule.make_schedule(steps=T, min_noise_level=mn, etas_end=end, kappa=kappa, power=p)
    t = s.tables
    assert t["sqrt_etas"][0] == pytest.approx(min(mn / kappa, mn), rel=1e-14)
    assert t["sqrt_etas"][-1] == pytest.approx(end, rel=1e-13)
    assert np.all(np.diff(t["etas"]) > 0)
    # the posterior mean coefficients reproduce the forward marginals: coef1 η_t + coef2·... = η_{t-1}
    np.testing.assert_allclose(t["posterior_mean_coef1"] + t["posterior_mean_coef2"], 1.0, rtol=1e-14)
    np.testing.assert_allclose(t["posterior_variance"][1:],
                               kappa ** 2 * t["etas_prev"][1:] * t["alpha"][1:] / t["etas"][1:], rtol=1e-14)


def test_respacing_keeps_reference_indices():
    full = schedule.make_schedule(steps=15, min_noise_level=0.04)
    s = schedule.make_schedule(steps=15, min_noise_level=0.04, timestep_respacing=5)
    np.testing.assert_array_equal(s.timestep_map, [0, 3, 6, 9, 12])
    np.testing.assert_array_equal(s.tables["sqrt_etas"], full.tables["sqrt_etas"][[0, 3, 6, 9, 12]])
    # derived tables are recomputed on the shorter chain
    assert s.tables["etas_prev"][1] == full.tables["etas"][0]
    with pytest.raises(ValueError, match="timestep_respacing"):
        schedule.make_schedule(steps=4, min_noise_level=0.2, timestep_respacing=9)


def test_weight_schemes_registry():
    s = schedule.make_schedule(steps=4, min_noise_level=0.2)
    np.testing.assert_array_equal(s.loss_weights("uniform"), np.ones(4))
    np.testing.assert_array_equal(s.loss_weights("kl"), s.tables["weight_loss_mse"])
    # paper form of the KL weight for t >= 1: α_t / (2 κ² η_t η_{t−1})
    t = s.tables
    paper = t["alpha"][1:] / (2 * s.kappa ** 2 * t["etas"][1:] * t["etas_prev"][1:])
    np.testing.assert_allclose(s.loss_weights("kl")[1:], paper, rtol=1e-12)
    with pytest.raises(ValueError, match="unknown w_t scheme 'nope'"):
        s.loss_weights("nope")
    cfg = load_config("realsr_v1").diffusion
    cfg.weighted_mse = True
    assert schedule.from_config(cfg).loss_weighting == "kl"


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="at least 2 steps"):
        schedule.make_schedule(steps=1, min_noise_level=0.2)
    with pytest.raises(ValueError, match="etas_end"):
        schedule.make_schedule(steps=4, min_noise_level=0.2, etas_end=1.5)
    with pytest.raises(ValueError, match="predict_type"):
        schedule.make_schedule(steps=4, min_noise_level=0.2, predict_type="v")


def test_study_schemes_follow_their_formulas():
    s = schedule.from_config(load_config("realsr_v1").diffusion)
    t = s.tables
    kl = t["weight_loss_mse"]
    np.testing.assert_allclose(s.loss_weights("kl_mean1").mean(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(s.loss_weights("kl_mean1") * kl.mean(), kl, rtol=1e-12)
    clipped = s.loss_weights("kl_clipped", max_ratio=10.0)
    assert clipped.min() == pytest.approx(1.0) and clipped.max() == pytest.approx(10.0)
    assert kl[0] / kl.min() > 10  # v1's first-step KL weight is far above the rest: the clip bites
    snr = s.loss_weights("snr")
    np.testing.assert_allclose(snr, 1 / (4.0 * t["etas"]), rtol=1e-12)
    np.testing.assert_allclose(s.loss_weights("min_snr", gamma=5.0), np.minimum(snr, 5.0), rtol=1e-12)
    assert s.loss_weights("min_snr", gamma=5.0).max() == 5.0
    with pytest.raises(TypeError):
        s.loss_weights("uniform", gamma=1.0)


def test_scheme_kwargs_and_t_sampling_from_config():
    cfg = load_config("realsr_v3").diffusion
    cfg.loss_weighting = "min_snr"
    cfg.loss_weighting_kwargs = {"gamma": 2.0}
    cfg.t_sampling = "eta"
    s = schedule.from_config(cfg)
    np.testing.assert_allclose(s.loss_weights(), np.minimum(1 / (4.0 * s.tables["etas"]), 2.0))
    p = s.t_probabilities()
    np.testing.assert_allclose(p, s.tables["etas"] / s.tables["etas"].sum())
    # importance weights make E_p[iw · f(t)] equal the uniform mean of f
    f = np.arange(4.0) ** 2
    assert np.sum(p * s.importance_weights() * f) == pytest.approx(f.mean())
    cfg.t_sampling = "nope"
    with pytest.raises(ValueError, match="unknown t sampler 'nope'"):
        schedule.from_config(cfg)


def test_register_custom_scheme():
    name = "test_linear_ramp"
    if name not in schedule.WEIGHT_SCHEMES:
        schedule.register_weight_scheme(name)(lambda tab: np.linspace(1, 2, len(tab["etas"])))
    s = schedule.make_schedule(steps=4, min_noise_level=0.2, loss_weighting=name)
    np.testing.assert_allclose(s.loss_weights(), [1, 4 / 3, 5 / 3, 2])
    with pytest.raises(ValueError, match="already registered"):
        schedule.register_weight_scheme("uniform")(lambda tab: tab["etas"])

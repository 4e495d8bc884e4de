"""The study's arms and the training config of each run (scheme, seed)."""

from __future__ import annotations

import copy
import re

from resshift_jax import schedule


def scheme_specs(cfg) -> list[dict]:
    """The study's arms as plain dicts (label, weighting, kwargs, t_sampling), checked against the
    registries, filtered by `study.only`."""
    out = []
    for i, s in enumerate(cfg.study.schemes):
        s = dict(s)
        if "weighting" not in s:
            raise ValueError(f"study.schemes[{i}] = {s} has no 'weighting' "
                             f"(one of {', '.join(sorted(schedule.WEIGHT_SCHEMES))})")
        kwargs = dict(s.get("kwargs") or {})
        label = s.get("label") or s["weighting"]
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", label):
            raise ValueError(f"study.schemes[{i}]: label {label!r} must be a plain folder name")
        spec = dict(label=label, weighting=s["weighting"], kwargs=kwargs,
                    t_sampling=s.get("t_sampling", "uniform"))
        schedule.weight_scheme(spec["weighting"])  # fail before any training on a typo
        if spec["t_sampling"] not in schedule.T_SAMPLERS:
            raise ValueError(f"study.schemes[{i}]: unknown t_sampling {spec['t_sampling']!r}; "
                             f"registered: {', '.join(sorted(schedule.T_SAMPLERS))}")
        out.append(spec)
    labels = [s["label"] for s in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"study.schemes: labels must be unique, got {labels}")
    only = [x.strip() for x in str(cfg.study.only or "").split(",") if x.strip()]
    if only:
        missing = sorted(set(only) - set(labels))
        if missing:
            raise ValueError(f"study.only names unknown labels {missing}; labels: {labels}")
        out = [s for s in out if s["label"] in only]
    return out


def run_name(label: str, seed: int) -> str:
    return f"{label}__seed{int(seed)}"


def run_config(cfg, spec: dict, seed: int):
    """The training config of one run: the base config without `study`, the scheme, the seed."""
    rc = copy.deepcopy(cfg)
    with rc.unlocked():
        if "study" in rc:
            del rc["study"]
        rc.diffusion.loss_weighting = spec["weighting"]
        rc.diffusion.loss_weighting_kwargs = dict(spec["kwargs"])
        rc.diffusion.t_sampling = spec["t_sampling"]
        rc.diffusion.weighted_mse = False  # the scheme decides (weighted_mse=True would mean 'kl')
        rc.train.seed = int(seed)
        rc.train.data_seed = int(cfg.study.data_seed)
        rc.train.val_freq = 0  # evaluation happens once, after training, with the study's own noise
    schedule.from_config(rc.diffusion)  # bad kwargs fail here, before training
    return rc

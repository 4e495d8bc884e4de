"""train.py end to end on the micro config: kill-and-resume exactness (SIGKILL), and a 2-process
run on 127.0.0.1 matching 1 process with the same global batch. Subprocesses share a persistent
compilation cache so only the first run of each program compiles."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CFG = ROOT / "tests" / "_train_cfg.py"
ITERS = 6
ADAM_NOISE_RTOL = 5e-5  # see test_two_processes_match_one
TIMEOUT = 600


def _env(cache, devices=8):
    env = dict(os.environ)
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    return env


def _cmd(workdir, *extra):
    return [sys.executable, str(ROOT / "train.py"), f"--config={CFG}", f"--workdir={workdir}",
            f"--config.train.iterations={ITERS}", "--config.train.save_freq=2", "--noprogress",
            "--novalidate", *extra]


def _records(workdir):
    recs = [json.loads(ln) for ln in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return [r for r in recs if "loss" in r]


def _losses(workdir):
    recs = _records(workdir)
    return [r["step"] for r in recs], np.array([r["loss"] for r in recs])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, cache):
    wd = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(_cmd(wd), env=_env(cache), check=True, timeout=TIMEOUT, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    steps, losses = _losses(wd)
    assert steps == list(range(1, ITERS + 1))
    assert losses[-1] < 0.9 * losses[0], f"the loss does not fall: {losses}"  # 30%: bench_train.py --loss_drop
    assert (wd / "checkpoints" / "2" / "pool").is_dir()  # training-pair pool checkpointed (swapping from step 3)
    assert (wd / "ema" / f"ema_model_{ITERS}.safetensors").is_file()
    assert any((wd / "tb").iterdir())  # TensorBoard event file
    return wd


@pytest.fixture(scope="module")
def reference(reference_run):
    return _losses(reference_run)[1]


def test_kill_and_resume_is_exact(tmp_path, cache, reference):
    wd = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(wd), env=_env(cache), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + TIMEOUT
    try:
        while time.time() < deadline and proc.poll() is None:
            m = wd / "metrics.jsonl"
            if m.exists() and len(m.read_text().splitlines()) >= 3 and (wd / "checkpoints" / "2").is_dir():
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    subprocess.run(_cmd(wd), env=_env(cache), check=True, timeout=TIMEOUT, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    steps, losses = _losses(wd)
    assert steps == list(range(1, ITERS + 1))
    np.testing.assert_array_equal(losses, reference)


def test_two_processes_match_one(tmp_path, cache, reference, reference_run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wd = tmp_path / "two"
    procs = [subprocess.Popen(_cmd(wd, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                                   f"--process_id={i}"),
                              env=_env(cache, devices=4), cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
             for i in range(2)]
    try:
        for p in procs:
            _, err = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, err.decode()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    steps, losses = _losses(wd)
    assert steps == list(range(1, ITERS + 1))
    # Step 1 (same data, same parameters; only the gradient all-reduce is split over processes):
    # loss and gradient norm agree to float32 rounding.
    first, ref_first = _records(wd)[0], _records(reference_run)[0]
    np.testing.assert_allclose([first["loss"], first["grad_norm"]], [ref_first["loss"], ref_first["grad_norm"]],
                               rtol=2e-6, atol=0)
    # Later steps: a different all-reduce order changes gradients by ~1e-6 absolute, and Adam's
    # first updates move every component by ~lr·sign(g), so components whose gradient is at that
    # noise level move differently: measured 1e-5 to 2.1e-5 relative on the loss by step 2.
    np.testing.assert_allclose(losses, reference, rtol=ADAM_NOISE_RTOL, atol=0)

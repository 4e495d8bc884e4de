"""app.py in a real browser: the demo served on a free port of 127.0.0.1, driven by headless
Chromium (Debian's chromium + chromium-driver, installed by scripts/install_browser.sh when
missing; the test is skipped with that script's reason where they cannot be installed).

One session, as a user would: the official models are greyed out with the reason (no weights
here), pick the compact bicsr model and a seed, upload an example, run, see both sides of the
comparison at 4x the input's size, download the result and find it byte-identical to what
`infer.py` writes with the command the page shows; then a corrupt upload is answered by a
message on the page and the next upload is still super-resolved.

RESSHIFT_DEMO_SCREENSHOT=path also saves the page after the first result there (the README's
docs/demo_screenshot.png is made so).
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rocket.png"   # 96 x 104
EXAMPLE2 = ROOT / "examples" / "chelsea.png"  # 112 x 75
RUN_TIMEOUT = 300  # s per request: model loading and one XLA compile of a small program on a 2-core CPU


@pytest.fixture(scope="module")
def chromium():
    try:  # (apt downloads ~100 MB; a stalled mirror must not stall the suite)
        r = subprocess.run(["bash", str(ROOT / "scripts" / "install_browser.sh")], capture_output=True, text=True,
                           timeout=420)
    except subprocess.TimeoutExpired:
        pytest.skip("headless Chromium unavailable: scripts/install_browser.sh took over 420 s (apt mirrors?)")
    if r.returncode != 0:
        why = (r.stdout + r.stderr).strip().splitlines()
        pytest.skip(f"headless Chromium unavailable: {why[-1] if why else f'install_browser.sh exited {r.returncode}'}")
    return "/usr/bin/chromium", "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp) -> dict:
    """The app's and infer.py's environment: one CPU device, as on a laptop (the tests' 8 fake
    devices would pad every tile batch to 8), and a shared compilation cache folder."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env.update(XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu", RESSHIFT_JAX_CACHE_DIR=str(tmp / "xla"),
               GRADIO_TEMP_DIR=str(tmp / "gradio"), GRADIO_ANALYTICS_ENABLED="False")
    return env


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    (tmp / "weights").mkdir()
    port = _free_port()
    log = open(tmp / "app.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--weights_dir",
                             str(tmp / "weights"), "--work_dir", str(tmp / "work")],
                            cwd=ROOT, env=_env(tmp), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"app.py did not serve {url}:\n{(tmp / 'app.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield type("App", (), dict(url=url, tmp=tmp, log=tmp / "app.log"))
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    tmp = tmp_path_factory.mktemp("chromium")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium[0]
    # as root, on a closed network: no sandbox, no background connections (they are refused)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp / 'profile'}", "--window-size=1400,1300"):
        opts.add_argument(a)
    (tmp / "downloads").mkdir()
    opts.add_experimental_option("prefs", {"download.default_directory": str(tmp / "downloads"),
                                           "download.prompt_for_download": False})
    drv = webdriver.Chrome(service=Service(chromium[1]), options=opts)
    drv.downloads = tmp / "downloads"
    yield drv
    drv.quit()


def _wait(drv, cond, timeout=60, what=""):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        return WebDriverWait(drv, timeout, poll_frequency=0.25).until(lambda d: cond(d))
    except TimeoutException:
        status = drv.find_elements("css selector", "#status")
        raise AssertionError(f"timed out ({timeout} s) waiting for {what}; status: "
                             f"{status[0].text if status else '?'!r}") from None


def _upload(drv, path):
    """Clear the file box if it holds a file, then give `path` to its file input."""
    for b in drv.find_elements("css selector", "#upload button[aria-label=Clear]"):
        b.click()
    inp = _wait(drv, lambda d: d.find_elements("css selector", "#upload input[type=file]"), what="the file input")
    inp[0].send_keys(str(path))
    _wait(drv, lambda d: d.find_elements("css selector", f'#upload td.filename[aria-label="{path.name}"]'),
          what=f"{path.name} in the upload box")


def _status_with(drv, text, timeout=RUN_TIMEOUT):
    return _wait(drv, lambda d: text in d.find_element("css selector", "#status").text, timeout,
                 what=f"{text!r} in the status line")


def _result_sizes(drv):
    """(natural width, height) of both images of the comparison, once both have loaded."""
    imgs = drv.find_elements("css selector", "#compare img")
    sizes = [drv.execute_script("return arguments[0].complete && [arguments[0].naturalWidth, "
                                "arguments[0].naturalHeight]", i) for i in imgs]
    return sizes if len(sizes) == 2 and all(sizes) else None


def test_upload_run_compare_download_in_chromium(app, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.keys import Keys

    drv = browser
    drv.get(app.url)
    _wait(drv, lambda d: d.find_elements("css selector", "#run"), what="the page")

    radios = {r.get_attribute("value"): r for r in drv.find_elements("css selector", "#model input[type=radio]")}
    assert set(radios) >= {"compact realsr (bundled)", "compact bicsr (bundled)", "official realsr v3"}
    _wait(drv, lambda d: radios["official realsr v3"].get_attribute("disabled") == "true",
          what="the official models greyed out")
    assert radios["compact bicsr (bundled)"].get_attribute("disabled") is None
    greyed = drv.find_element("css selector", "#unavailable").text
    assert f"weights not found in {app.tmp / 'weights'}" in greyed
    assert "official realsr v3: resshift_realsrx4_s4_v3.pth, autoencoder_vq_f4.pth" in greyed

    radios["compact bicsr (bundled)"].click()  # its default is 1 network call (the config's x0_after)
    _wait(drv, lambda d: d.find_element("css selector", "#steps input[type=number]").get_attribute("value") == "1",
          what="the steps of compact bicsr")
    seed = drv.find_element("css selector", "#seed input")
    seed.send_keys(Keys.CONTROL, "a")
    seed.send_keys("7", Keys.TAB)

    _upload(drv, EXAMPLE)
    drv.find_element("css selector", "#run").click()
    _status_with(drv, "rocket.png: 96 x 104 → 384 x 416")
    assert _wait(drv, lambda d: _result_sizes(d), 30, "the comparison images") == [[384, 416], [384, 416]]
    shot = tmp_path / "demo.png"
    drv.save_screenshot(str(shot))
    if os.environ.get("RESSHIFT_DEMO_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["RESSHIFT_DEMO_SCREENSHOT"])

    command = drv.find_element("css selector", "#command .cm-content").text.strip()
    assert command == "python infer.py -i rocket.png -o results --task bicsr -v compact --seed 7 --x0_after 1"
    link = drv.find_element("css selector", "#download a[download]")
    assert link.get_attribute("download") == "rocket.png"
    link.click()
    got = drv.downloads / "rocket.png"
    _wait(drv, lambda d: got.is_file() and not list(drv.downloads.glob("*.crdownload")), 30, "the download")

    argv = command.split()[2:]
    argv[argv.index("-i") + 1] = str(EXAMPLE)
    argv[argv.index("-o") + 1] = str(tmp_path / "cli")
    r = subprocess.run([sys.executable, str(ROOT / "infer.py"), *argv, "--no_progress"], cwd=ROOT,
                       env=_env(app.tmp), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert got.read_bytes() == (tmp_path / "cli" / "rocket.png").read_bytes()
    with Image.open(got) as im:
        assert im.size == (384, 416)

    bad = tmp_path / "broken.png"
    bad.write_bytes(EXAMPLE.read_bytes()[:2000])  # a PNG cut short
    _upload(drv, bad)
    drv.find_element("css selector", "#run").click()
    _status_with(drv, "broken.png: corrupt or truncated image")
    assert "Could not process" in drv.find_element("css selector", "#status").text

    _upload(drv, EXAMPLE2)  # the app keeps serving: the next upload is super-resolved
    drv.find_element("css selector", "#run").click()
    _status_with(drv, "chelsea.png: 112 x 75 → 448 x 300")
    assert _wait(drv, lambda d: _result_sizes(d), 30, "the comparison images") == [[448, 300], [448, 300]]

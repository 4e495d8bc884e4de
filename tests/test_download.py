"""Weights download against a local HTTP server on 127.0.0.1: verified, atomic, clear offline text."""

import functools
import http.server
import socket
import threading

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from resshift_jax import download as dl


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        if self.path.startswith("/trunc/"):  # announce the full size, send half, hang up
            body = (self.directory_path / self.path.split("/")[-1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    save_file({"w": np.arange(4096, dtype=np.float32)}, str(root / "tiny_unet.safetensors"))
    save_file({"q": np.ones((8, 3), np.float32)}, str(root / "autoencoder_vq_f4.safetensors"))
    (root / "garbage.safetensors").write_bytes(b"\x00" * 1000)
    handler = functools.partial(_Handler, directory=str(root))
    _Handler.directory_path = root
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def strict_loader(expected_keys):
    def load(path):
        sd = load_file(str(path))
        if set(sd) != set(expected_keys):
            raise ValueError(f"keys {sorted(sd)} != {sorted(expected_keys)}")
        return sd
    return load


def test_official_names_and_urls(tmp_path, monkeypatch):
    monkeypatch.delenv("RESSHIFT_WEIGHTS_URL", raising=False)
    f = dl.official_files("realsr", "v3", tmp_path)
    assert f["unet"].url == "https://github.com/zsyOAOA/ResShift/releases/download/v2.0/resshift_realsrx4_s4_v3.pth"
    assert f["unet"].path == tmp_path / "resshift_realsrx4_s4_v3.pth"
    assert f["vqgan"].url.endswith("/v2.0/autoencoder_vq_f4.pth")
    assert dl.official_files("realsr", "v1")["unet"].path.name == "resshift_realsrx4_s15_v1.pth"
    assert dl.official_files("realsr", "v2")["unet"].path.name == "resshift_realsrx4_s15_v2.pth"
    assert dl.official_files("bicsr", "v1")["unet"].path.name == "resshift_bicsrx4_s4.pth"
    monkeypatch.setenv("RESSHIFT_WEIGHTS_URL", "http://mirror.example/x/")
    assert dl.official_files("bicsr", "v3")["vqgan"].url == "http://mirror.example/x/autoencoder_vq_f4.pth"
    with pytest.raises(ValueError, match="no released checkpoint"):
        dl.official_files("realsr", "v9")


def test_download_verified_then_renamed(server, tmp_path):
    url, _ = server
    dest = tmp_path / "w" / "tiny_unet.safetensors"
    sd = dl.download(f"{url}/tiny_unet.safetensors", dest, verify=strict_loader(["w"]), progress=False)
    assert dest.is_file() and np.array_equal(sd["w"], np.arange(4096, dtype=np.float32))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny_unet.safetensors"]  # no temp left


def test_truncated_or_bad_download_never_becomes_the_file(server, tmp_path):
    url, _ = server
    dest = tmp_path / "tiny_unet.safetensors"
    with pytest.raises(dl.DownloadError, match="truncated|interrupted"):
        dl.download(f"{url}/trunc/tiny_unet.safetensors", dest, verify=strict_loader(["w"]), progress=False)
    assert list(tmp_path.iterdir()) == []
    dest = tmp_path / "garbage.safetensors"
    with pytest.raises(dl.DownloadError, match="does not load"):
        dl.download(f"{url}/garbage.safetensors", dest, verify=strict_loader(["w"]), progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download(f"{url}/nope.pth", tmp_path / "nope.pth", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ensure_and_load_downloads_missing_and_reuses_present(server, tmp_path):
    url, _ = server
    unet = dl.WeightFile("UNet", tmp_path / "tiny_unet.safetensors", f"{url}/tiny_unet.safetensors")
    vq = dl.WeightFile("VQ", tmp_path / "autoencoder_vq_f4.safetensors", f"{url}/autoencoder_vq_f4.safetensors")
    a, b = dl.ensure_and_load([(unet, strict_loader(["w"])), (vq, strict_loader(["q"]))], progress=False)
    assert a["w"].shape == (4096,) and b["q"].shape == (8, 3)
    calls = []
    dl.ensure_and_load([(unet, lambda p: calls.append(p))], progress=False)  # present: no download
    assert calls == [unet.path]


def test_offline_message_lists_what_goes_where(tmp_path):
    with socket.socket() as s:  # a port with nothing listening: connection refused, like offline
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    files = [dl.WeightFile("UNet realsr v3", tmp_path / "resshift_realsrx4_s4_v3.pth", f"{dead}/resshift_realsrx4_s4_v3.pth"),
             dl.WeightFile("autoencoder", tmp_path / "autoencoder_vq_f4.pth", f"{dead}/autoencoder_vq_f4.pth")]
    with pytest.raises(dl.WeightsUnavailableError) as err:
        dl.ensure_and_load([(f, load_file) for f in files], progress=False)
    msg = str(err.value)
    for f in files:
        assert str(f.path) in msg and f.url in msg
    assert "cannot connect" in msg
    assert list(tmp_path.iterdir()) == []


def test_error_reason_is_one_line(tmp_path):
    files = [dl.WeightFile("UNet", tmp_path / "u.pth", "http://127.0.0.1:9/u.pth"),
             dl.WeightFile("VQ", tmp_path / "v.pth", "http://127.0.0.1:9/v.pth")]
    err = dl.WeightsUnavailableError("msg", files, ["http://127.0.0.1:9/u.pth: cannot connect (refused)",
                                                    "http://127.0.0.1:9/v.pth: cannot connect (refused)"])
    assert err.reason == (f"{tmp_path / 'u.pth'}, {tmp_path / 'v.pth'} missing; "
                          "http://127.0.0.1:9/u.pth: cannot connect (refused) (+1 more)")
    assert dl.WeightsUnavailableError("msg", files[:1]).reason == f"{tmp_path / 'u.pth'} missing; downloads off"
    with pytest.raises(dl.WeightsUnavailableError, match=r"missing \(downloads off\)") as e:
        dl.ensure_and_load([(files[0], load_file)], allow_download=False)
    assert e.value.missing == files[:1] and e.value.errors == [] and "\n" not in e.value.reason


def test_bundled_compact_models(tmp_path, monkeypatch):
    assert dl.bundled_file("bicsr") == dl.BUNDLED_DIR / "compact_bicsr.safetensors"
    assert dl.bundled_file("realsr").parent.parts[-3:] == ("resshift_jax", "assets", "compact")
    assert dl.compact_config("realsr") == "compact_realsr"
    monkeypatch.setitem(dl.COMPACT_CONFIGS, "realsr", str(tmp_path / "compact_realsr.py"))  # a config file
    monkeypatch.setattr(dl, "BUNDLED_DIR", tmp_path)
    assert dl.compact_name("realsr") == "compact_realsr"
    assert dl.bundled_file("realsr") == tmp_path / "compact_realsr.safetensors"
    with pytest.raises(ValueError, match="no bundled compact model"):
        dl.bundled_file("denoise")
    err = dl.WeightsUnavailableError(dl.offline_message([dl.WeightFile("UNet", tmp_path / "u.pth", "http://x/u.pth")]))
    msg = dl.no_model_message(err, dl.bundled_file("realsr"))
    assert str(tmp_path / "u.pth") in msg and "http://x/u.pth" in msg
    assert str(tmp_path / "compact_realsr.safetensors") in msg and "-v compact" in msg

"""torch_pickle.py: reading torch.save files without torch (zip and legacy formats, views,
dtypes, devices) and refusing every pickle that could run code. The torch.save writer below is
shared with the weight-loading tests (test_weights.py, test_train_networks.py)."""

import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from resshift_jax import torch_pickle
from resshift_jax.torch_pickle import UnsafeCheckpointError, load_pth

# ----------------------------------------------------------------------------- a tiny torch.save writer
# Emits the same pickle (protocol 2) + zip layout torch.save produces, from raw opcodes, so the
# tests need no torch. Tensors are given as Tensor(storage, offset, size, stride) views.

_STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
                  np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
                  np.dtype("int32"): "IntStorage", np.dtype("uint8"): "ByteStorage", np.dtype("bool"): "BoolStorage"}


class Tensor:
    def __init__(self, storage, offset=0, size=None, stride=None, storage_global=("torch", None)):
        self.storage_global = storage_global
        self.storage = np.ascontiguousarray(storage).reshape(-1)
        self.offset = offset
        self.size = tuple(np.shape(storage) if size is None else size)
        if stride is None:
            stride = tuple(int(np.prod(self.size[i + 1:])) for i in range(len(self.size)))
        self.stride = tuple(stride)

    @classmethod
    def of(cls, array):
        return cls(np.asarray(array))


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


class _Emitter:
    def __init__(self, location="cpu", legacy=False):
        self.storages = []
        self.location = location
        self.legacy = legacy  # pre-1.6 stream: 6-tuple persistent ids, v1 tensor rebuild

    def emit(self, obj):
        if isinstance(obj, Tensor):
            key = str(len(self.storages))
            self.storages.append(obj.storage)
            module, name = obj.storage_global
            pid = (b"(" + _str("storage") + _global(module, name or _STORAGE_NAMES[obj.storage.dtype]) + _str(key)
                   + _str(self.location) + self.emit(obj.storage.size) + (b"N" if self.legacy else b"") + b"t")
            if self.legacy:
                return (_global("torch._utils", "_rebuild_tensor") + b"(" + pid + b"Q" + self.emit(obj.offset)
                        + self.emit(obj.size) + self.emit(obj.stride) + b"tR")
            return (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + self.emit(obj.offset)
                    + self.emit(obj.size) + self.emit(obj.stride) + b"\x89"
                    + _global("collections", "OrderedDict") + b")R" + b"tR")
        if isinstance(obj, dict):
            head = _global("collections", "OrderedDict") + b")R" if isinstance(obj, OrderedDict) else b"}"
            if not obj:
                return head
            return head + b"(" + b"".join(self.emit(k) + self.emit(v) for k, v in obj.items()) + b"u"
        if isinstance(obj, bool):
            return b"\x88" if obj else b"\x89"
        if isinstance(obj, int):
            return b"J" + struct.pack("<i", obj)
        if isinstance(obj, str):
            return _str(obj)
        if isinstance(obj, tuple):
            return b"(" + b"".join(self.emit(x) for x in obj) + b"t"
        raise TypeError(type(obj))


def write_torch_zip(path, obj=None, *, pickle_bytes=None, location="cpu", name="archive"):
    em = _Emitter(location)
    data = pickle_bytes if pickle_bytes is not None else b"\x80\x02" + em.emit(obj) + b"."
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{name}/data.pkl", data)
        zf.writestr(f"{name}/byteorder", "little")
        for i, st in enumerate(em.storages):
            zf.writestr(f"{name}/data/{i}", st.astype(st.dtype.newbyteorder("<")).tobytes())
    return path


def write_legacy_torch(path, obj):
    em = _Emitter(legacy=True)
    main = b"\x80\x02" + em.emit(obj) + b"."
    out = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
           pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2), main,
           pickle.dumps([str(i) for i in range(len(em.storages))], protocol=2)]
    for st in em.storages:
        out.append(struct.pack("<q", st.size) + st.astype(st.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(b"".join(out))
    return path


def as_tensors(sd, *, prefix=""):
    return OrderedDict((prefix + k, Tensor.of(v)) for k, v in sd.items())


def assert_same_state(a, b):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ----------------------------------------------------------------------------- reading .pth


@pytest.mark.parametrize("name", ["unet_tiny", "vq_tiny"])
def test_load_pth_equals_npz(fixtures_dir, name):
    sd = load_pth(fixtures_dir / f"{name}.pth")
    ref = np.load(fixtures_dir / f"{name}_weights.npz")
    assert set(sd) == set(ref.files)
    for k in ref.files:
        assert sd[k].dtype == ref[k].dtype, k
        np.testing.assert_array_equal(sd[k], ref[k], err_msg=k)


def test_views_offsets_dtypes_and_cuda_location(tmp_path):
    base = np.arange(40, dtype=np.float32)
    obj = OrderedDict(
        transposed=Tensor(base[:12].reshape(3, 4), 0, (4, 3), (1, 4)),  # non-contiguous view
        offset=Tensor(base, 5, (2, 3), (3, 1)),
        strided=Tensor(base, 1, (3, 2), (10, 3)),
        scalar=Tensor(np.array([7.5], np.float32), 0, (), ()),
        empty=Tensor(np.zeros(0, np.float32), 0, (0, 3), (3, 1)),
        i64=Tensor.of(np.arange(6, dtype=np.int64).reshape(2, 3)),
        f16=Tensor.of(np.array([1.5, -2.0], np.float16)),
        mask=Tensor.of(np.array([True, False])),
        untyped=Tensor(np.arange(5, dtype=np.uint8), 1, (2, 2), (2, 1), ("torch", "UntypedStorage")),
        untyped2=Tensor(np.arange(3, dtype=np.uint8), 0, (3,), (1,), ("torch.storage", "UntypedStorage")),
    )
    out = load_pth(write_torch_zip(tmp_path / "v.pth", obj, location="cuda:1"))
    np.testing.assert_array_equal(out["transposed"], base[:12].reshape(3, 4).T)
    np.testing.assert_array_equal(out["offset"], base[5:11].reshape(2, 3))
    np.testing.assert_array_equal(out["strided"], np.array([[1, 4], [11, 14], [21, 24]], np.float32))
    assert out["scalar"].shape == () and out["scalar"] == 7.5
    assert out["empty"].shape == (0, 3)
    assert out["i64"].dtype == np.int64 and out["f16"].dtype == np.float16 and out["mask"].dtype == np.bool_
    assert out["transposed"].flags.c_contiguous
    np.testing.assert_array_equal(out["untyped"], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(out["untyped2"], [0, 1, 2])


def test_out_of_bounds_view_refused(tmp_path):
    path = write_torch_zip(tmp_path / "oob.pth", {"w": Tensor(np.zeros(4, np.float32), 2, (3,), (1,))})
    with pytest.raises(UnsafeCheckpointError, match="past its storage"):
        load_pth(path)


def _payloads(marker):
    cmd = f"touch {marker}"
    p2_system = b"\x80\x02" + _global("os", "system") + _str(cmd) + b"\x85R."
    p2_eval = b"\x80\x02" + _global("builtins", "eval") + _str(f"open({str(marker)!r}, 'w').close()") + b"\x85R."
    # protocol 4: STACK_GLOBAL with memoised operands
    p4_system = (b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94" + b"\x8c" + bytes([len(cmd)]) + cmd.encode()
                 + b"\x94\x85\x94R\x94.")
    # a valid tensor first, then the payload in the same dict
    em = _Emitter()
    mixed = (b"\x80\x02}(" + em.emit("w") + em.emit(Tensor.of(np.ones(2, np.float32))) + _str("x")
             + _global("os", "system") + _str(cmd) + b"\x85Ru.")
    return {"os.system": p2_system, "builtins.eval": p2_eval, "os.system p4": p4_system, "os.system mixed": mixed}


@pytest.mark.parametrize("case", ["os.system", "builtins.eval", "os.system p4", "os.system mixed"])
def test_malicious_pickle_refused_without_side_effect(tmp_path, case):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[case]
    if "mixed" not in case:  # (the mixed one needs torch to unpickle normally)
        pickle.loads(payload)  # sanity: the payload really runs code when unpickled normally
        assert marker.exists()
        marker.unlink()
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/data/0", np.ones(2, np.float32).tobytes())
    with pytest.raises(UnsafeCheckpointError) as err:
        load_pth(path)
    assert str(path) in str(err.value) and case.split()[0] in str(err.value)
    assert not marker.exists()


def test_find_class_guard_alone_refuses(tmp_path):
    """The unpickler itself refuses globals even where the static scan is bypassed."""
    marker = tmp_path / "pwned"
    unp = torch_pickle._RestrictedUnpickler(_payloads(marker)["os.system"], None, "x.pth")
    with pytest.raises(UnsafeCheckpointError, match="refused global os.system"):
        unp.load()
    assert not marker.exists()


def test_legacy_format_reads(tmp_path, fixtures_dir):
    """Pre-1.6 torch.save streams (torchvision VGG16 and lpips head files use this format)."""
    vq_weights = dict(np.load(fixtures_dir / "vq_tiny_weights.npz"))
    obj = as_tensors(vq_weights)
    obj["transposed"] = Tensor(np.arange(12, dtype=np.float32), 0, (4, 3), (1, 4))
    out = load_pth(write_legacy_torch(tmp_path / "old.pth", obj))
    np.testing.assert_array_equal(out.pop("transposed"), np.arange(12, dtype=np.float32).reshape(3, 4).T)
    assert_same_state(out, vq_weights)


def test_legacy_format_refuses_globals(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "old_evil.pth"
    path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
                     + pickle.dumps({}, protocol=2) + _payloads(marker)["os.system"])
    with pytest.raises(UnsafeCheckpointError, match="os.system"):
        load_pth(path)
    assert not marker.exists()


def test_non_torch_files_refused(tmp_path):
    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        load_pth(plain)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        load_pth(junk)

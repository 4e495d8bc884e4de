"""Read PyTorch `.pth` files without PyTorch: a restricted unpickler that only rebuilds tensors.

A `.pth` (torch.save's zip format: `<name>/data.pkl` + `<name>/data/<k>` storages) is a pickle,
and unpickling an untrusted pickle can run arbitrary code. Every global the pickle references is
checked against an allowlist (OrderedDict, the tensor/parameter rebuild functions, storage types)
*before* anything is unpickled; the unpickler's own class lookup is a second guard. Storages map to
numpy arrays (views with offset/stride honoured); the legacy pre-1.6 format is read too.
"""

from __future__ import annotations

import io
import pathlib
import pickle
import pickletools
import zipfile

import numpy as np


_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "UntypedStorage": "u1",
}
_ALLOWED_GLOBALS = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                    ("torch._utils", "_rebuild_tensor"),
                    ("torch._utils", "_rebuild_parameter"), ("torch.storage", "UntypedStorage"),
                    *(("torch", name) for name in _STORAGE_DTYPES)}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A .pth pickle references something other than tensors and plain containers."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name


def _numpy_dtype(spec: str, byteorder: str) -> np.dtype:
    if spec == "bfloat16":
        import ml_dtypes  # ships with jax

        dt = np.dtype(ml_dtypes.bfloat16)
    else:
        dt = np.dtype(spec)
    return dt.newbyteorder(">") if byteorder == "big" and dt.itemsize > 1 else dt


_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8"}
_STACK_NEUTRAL_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "FRAME", "PROTO"}


def _pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """The (module, name) globals a pickle imports, found statically (nothing is executed).

    STACK_GLOBAL operands are resolved by following string pushes and memo gets; one that cannot
    be resolved this way is still checked by the unpickler's find_class before it is used.
    """
    found, recent, memo, memo_count = [], [], {}, 0
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        top = recent[-1] if recent else None
        if name in ("GLOBAL", "INST"):
            found.append(tuple(arg.split(" ", 1)))
        elif name == "STACK_GLOBAL":
            if len(recent) >= 2 and None not in recent[-2:]:
                found.append(tuple(recent[-2:]))
        elif name.startswith("EXT"):
            found.append(("copyreg extension", str(arg)))
        if name in _STRING_OPS:
            recent.append(arg)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = top
        elif name == "MEMOIZE":
            memo[memo_count] = top
            memo_count += 1
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(arg))
        elif name not in _STACK_NEUTRAL_OPS:
            recent.append(None)
        del recent[:-2]
    return found


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, load_storage, source: str):
        super().__init__(io.BytesIO(data) if isinstance(data, bytes) else data)
        self._load_storage = load_storage
        self._source = source

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafeCheckpointError(f"{self._source}: refused global {module}.{name}")
        if module == "collections":
            import collections

            return collections.OrderedDict
        if name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor_v2
        if name == "_rebuild_parameter":
            return _rebuild_parameter
        return _StorageType(name)

    def persistent_load(self, pid):
        # zip: ('storage', type, key, location, numel); legacy: the same + view_metadata
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and self._load_storage is not None):
            raise UnsafeCheckpointError(f"{self._source}: unsupported persistent id {pid!r}")
        _, stype, key, _location, numel, *view = pid  # location 'cpu' / 'cuda:N': irrelevant here
        return self._load_storage(stype.name, str(key), int(numel), *view)


class _LazyStorage:
    """A legacy-format storage whose bytes follow the pickle (filled in after unpickling)."""

    def __init__(self, type_name, numel, base=None, offset=0):
        self.type_name, self.numel, self.base, self.offset, self.array = type_name, numel, base, offset, None

    def resolve(self):
        if self.base is not None:
            return self.base.resolve()[self.offset: self.offset + self.numel]
        return self.array


class _LazyTensor:
    def __init__(self, *args):
        self.args = args


def _resolve_lazy(obj):
    if isinstance(obj, _LazyTensor):
        storage, *rest = obj.args
        return _rebuild_tensor_v2(storage.resolve(), *rest)
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _resolve_lazy(obj[k])
        return obj
    if isinstance(obj, list):
        return [_resolve_lazy(x) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve_lazy(x) for x in obj)
    return obj


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """Tensor view (offset, size, stride in elements) of a flat storage -> contiguous ndarray."""
    if isinstance(storage, _LazyStorage):
        return _LazyTensor(storage, storage_offset, size, stride)
    size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(storage_offset)
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise UnsafeCheckpointError(f"bad tensor geometry: offset {offset}, size {size}, stride {stride}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise UnsafeCheckpointError(f"tensor (offset {offset}, size {size}, stride {stride}) reads past its "
                                    f"storage of {storage.size} elements")
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * item for s in stride],
                                           writeable=False)
    out = np.array(view, order="C")
    return out.astype(out.dtype.newbyteorder("=")) if out.dtype.byteorder == ">" else out


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def load_pth(path) -> object:
    """Unpickle a torch.save file (zip format, or the legacy pre-1.6 stream) without torch;
    tensors become numpy arrays.

    Only tensors, storages, OrderedDict and plain Python containers/scalars are allowed; any other
    global raises UnsafeCheckpointError (naming the file and the global) before anything is built.
    """
    path = pathlib.Path(path)
    if not zipfile.is_zipfile(path):
        raw = path.read_bytes()
        if raw[:1] == b"\x80":
            return _load_legacy(path, raw)
        raise ValueError(f"{path}: not a torch checkpoint (expected a torch.save zip archive)")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            hint = " (TorchScript archives are not supported)" if any(n.endswith("constants.pkl") for n in names) else ""
            raise ValueError(f"{path}: expected exactly one '<name>/data.pkl' entry, found {pkls}{hint}")
        root = pkls[0][: -len("data.pkl")]
        byteorder = zf.read(root + "byteorder").decode().strip() if root + "byteorder" in names else "little"
        data = zf.read(pkls[0])
        refused = [g for g in _pickle_globals(data) if g not in _ALLOWED_GLOBALS]
        if refused:
            raise UnsafeCheckpointError(f"{path}: refused global(s) " + ", ".join(".".join(g) for g in refused)
                                        + "; only tensors and plain containers may appear in a checkpoint")
        cache = {}

        def load_storage(type_name, key, numel):
            if key not in cache:
                entry = f"{root}data/{key}"
                if entry not in names:
                    raise ValueError(f"{path}: storage {key} ({entry}) is missing from the archive")
                dt = _numpy_dtype(_STORAGE_DTYPES[type_name], byteorder)
                raw = zf.read(entry)
                if len(raw) < numel * dt.itemsize:
                    raise ValueError(f"{path}: storage {key} has {len(raw)} bytes, expected {numel * dt.itemsize}")
                cache[key] = np.frombuffer(raw, dtype=dt, count=numel)
            return cache[key]

        try:
            return _RestrictedUnpickler(data, load_storage, str(path)).load()
        except UnsafeCheckpointError as e:
            raise UnsafeCheckpointError(str(e) if str(path) in str(e) else f"{path}: {e}") from None


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _load_legacy(path, raw: bytes):
    """Pre-1.6 torch.save stream: magic, protocol, sys_info, main pickle, storage keys, then for
    each key an int64 element count and the raw bytes, little-endian (torchvision/lpips weight files
    use it)."""
    f = io.BytesIO(raw)

    def next_pickle(load_storage=None):
        start = f.tell()
        try:
            refused = [g for g in _pickle_globals(f) if g not in _ALLOWED_GLOBALS]
        except ValueError as e:
            raise ValueError(f"{path}: not a torch checkpoint (malformed pickle: {e})") from None
        if refused:
            raise UnsafeCheckpointError(f"{path}: refused global(s) " + ", ".join(".".join(g) for g in refused)
                                        + "; only tensors and plain containers may appear in a checkpoint")
        f.seek(start)
        return _RestrictedUnpickler(f, load_storage, str(path)).load()

    if next_pickle() != _LEGACY_MAGIC:
        raise ValueError(f"{path}: not a torch checkpoint (a plain pickle without torch's magic number)")
    if (version := next_pickle()) != 1001:
        raise ValueError(f"{path}: unsupported legacy torch.save protocol {version}")
    next_pickle()  # sys_info; sizes and data are always written little-endian
    roots = {}

    def load_storage(type_name, key, numel, view=None):
        root = roots.setdefault(key, _LazyStorage(type_name, numel))
        if view is None:
            return root
        _view_key, offset, size = view
        return _LazyStorage(type_name, int(size), base=root, offset=int(offset))

    result = next_pickle(load_storage)
    for key in next_pickle():
        if str(key) not in roots:
            raise ValueError(f"{path}: storage {key} is listed but never referenced")
        st = roots[str(key)]
        dt = _numpy_dtype(_STORAGE_DTYPES[st.type_name], "little")
        n = int.from_bytes(f.read(8), "little", signed=True)
        data = f.read(n * dt.itemsize)
        if n != st.numel or len(data) != n * dt.itemsize:
            raise ValueError(f"{path}: storage {key} is truncated or has {n} elements, expected {st.numel}")
        st.array = np.frombuffer(data, dtype=dt)
    missing = [k for k, st in roots.items() if st.array is None]
    if missing:
        raise ValueError(f"{path}: storages {missing[:5]} have no data")
    return _resolve_lazy(result)

"""Reading PyTorch ``.pth`` state dicts without torch and without running code from the file.

Both of PyTorch's serializations are supported: the zip format (``torch.save`` since 1.6) and the
legacy stream format (torchvision's published ``vgg19-dcbb9e9d.pth``, neural-style-pt's Caffe
conversion). The pickle inside either is read by a restricted unpickler that resolves only the few
globals a tensor state dict needs; any other global (``os.system``, ``builtins.eval``, ...) is
refused before it is called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from jaxstyle.errors import WeightsError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


@dataclass
class _Storage:
    """A storage named by the pickle; its bytes are attached once they have been read."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None
    view_of: tuple[_Storage, int] | None = None  # legacy views: (root storage, element offset)

    def array(self) -> np.ndarray:
        if self.view_of is not None:
            root, offset = self.view_of
            return root.array()[offset : offset + self.numel]
        if self.data is None:
            raise WeightsError(f"storage {self.key!r} has no data in the file (truncated?)")
        return self.data


@dataclass
class _TensorRef:
    """A tensor as the pickle describes it; materialised only when asked for."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def numpy(self) -> np.ndarray:
        flat = self.storage.array()
        numel = int(np.prod(self.shape, dtype=np.int64))
        if numel == 0:
            return np.zeros(self.shape, flat.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        if self.offset < 0 or last >= flat.size:
            raise WeightsError(
                f"tensor of shape {self.shape} reaches past its storage of {flat.size} elements"
            )
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise WeightsError("malformed tensor record in the pickle")
    return _TensorRef(storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride)))


def _rebuild_parameter(data, *_unused):
    return data


class _StorageType:
    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED_GLOBALS`; storages are handed to `persistent_load_fn`."""

    def __init__(self, file, persistent_load_fn: Callable[[tuple], object] | None = None):
        super().__init__(file)
        self._persistent_load_fn = persistent_load_fn

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise WeightsError(
                f"refusing to load: the file asks for '{module}.{name}', which a weights file "
                "never needs (it may be trying to run code)"
            ) from None

    def persistent_load(self, pid):
        if self._persistent_load_fn is None:
            raise WeightsError("unexpected persistent reference in the pickle")
        return self._persistent_load_fn(pid)


def _storage_from_pid(pid, storages: dict[str, _Storage]) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        raise WeightsError(f"unsupported persistent reference {pid!r:.80}")
    storage_type, key, _location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
        raise WeightsError("unsupported storage type in the pickle")
    key = str(key)
    if key not in storages:
        storages[key] = _Storage(key, storage_type.dtype, int(numel))
    root = storages[key]
    view_metadata = pid[5] if len(pid) > 5 else None
    if view_metadata is None:
        return root
    view_key, offset, view_numel = view_metadata
    view_key = str(view_key)
    if view_key not in storages:
        storages[view_key] = _Storage(view_key, root.dtype, int(view_numel), view_of=(root, int(offset)))
    return storages[view_key]


def _unpickle(data_file, storages: dict[str, _Storage]):
    unpickler = _RestrictedUnpickler(data_file, lambda pid: _storage_from_pid(pid, storages))
    try:
        return unpickler.load()
    except WeightsError:
        raise
    except Exception as exc:  # pickle raises a zoo of types on malformed input
        raise WeightsError(f"corrupt pickle ({type(exc).__name__}: {exc})") from None


def _read_zip(path: str) -> tuple[object, dict[str, _Storage]]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise WeightsError("zip archive is not a PyTorch checkpoint (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode().strip()
        storages: dict[str, _Storage] = {}
        obj = _unpickle(io.BytesIO(archive.read(pickles[0])), storages)
        for storage in storages.values():
            if storage.view_of is not None:
                continue
            member = f"{prefix}data/{storage.key}"
            try:
                raw = archive.read(member)
            except KeyError:
                raise WeightsError(f"storage {member!r} is missing from the archive") from None
            dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
            expected = storage.numel * dtype.itemsize
            if len(raw) < expected:
                raise WeightsError(f"storage {member!r} is truncated")
            storage.data = np.frombuffer(raw[:expected], dtype=dtype).astype(storage.dtype)
    return obj, storages


def _read_legacy(path: str) -> tuple[object, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as f:
        try:
            magic = _unpickle(f, storages)
        except WeightsError:
            magic = None
        if magic != _LEGACY_MAGIC:
            raise WeightsError("not a PyTorch weights file (neither zip nor legacy format)")
        header = [magic] + [_unpickle(f, storages) for _ in range(2)]
        if header[1] != _LEGACY_PROTOCOL:
            raise WeightsError(f"unsupported legacy PyTorch protocol {header[1]!r}")
        obj = _unpickle(f, storages)
        keys = _unpickle(f, {})
        if not isinstance(keys, list):
            raise WeightsError("corrupt legacy file: no storage key list")
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise WeightsError(f"corrupt legacy file: unknown storage {key!r}")
            head = f.read(8)
            if len(head) != 8:
                raise WeightsError(f"file is truncated before storage {key!r}")
            (numel,) = struct.unpack("<q", head)
            nbytes = numel * storage.dtype.itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise WeightsError(f"file is truncated inside storage {key!r}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<")).astype(
                storage.dtype
            )
    return obj, storages


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict file (zip or legacy format) into NumPy arrays.

    Args:
      path: a ``.pth``/``.pt`` file written by ``torch.save(module.state_dict(), path)``.

    Returns:
      The tensors by key, in the file's order, each a NumPy array of the stored dtype
      (float16/bfloat16 stay as stored; callers convert).

    Raises:
      WeightsError: the file is not a PyTorch state dict, is truncated, or its pickle asks for
        anything a state dict never needs (such a pickle is refused before anything runs).
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        obj, _ = _read_zip(path)
    else:
        obj, _ = _read_legacy(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"file holds a {type(obj).__name__}, not a state dict")
    return {
        str(key): value.numpy() for key, value in obj.items() if isinstance(value, _TensorRef)
    }

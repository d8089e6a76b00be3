"""Writes PyTorch-format state dicts (zip and legacy) without torch, for building test files.

The pickles name the same globals torch writes (``torch._utils._rebuild_tensor_v2``,
``torch.FloatStorage``, ...); while pickling, stand-in modules under those names are placed in
``sys.modules`` so that `pickle` can refer to them, and removed afterwards.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage"}


def _rebuild_tensor_v2(*args):
    raise AssertionError("stand-in, never called")


@contextlib.contextmanager
def _fake_torch():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    _rebuild_tensor_v2.__module__ = "torch._utils"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in _STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module


class _Tensor:
    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, np.ascontiguousarray(array)

    def __reduce__(self):
        stride = tuple(s // self.array.itemsize for s in self.array.strides)
        return (_rebuild_tensor_v2, (self, 0, self.array.shape, stride, False,
                                     collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def __init__(self, file, torch, legacy: bool):
        super().__init__(file, protocol=2)
        self.torch, self.legacy, self.tensors = torch, legacy, []

    def persistent_id(self, obj):
        if isinstance(obj, _Tensor) and getattr(obj, "_as_storage", False):
            storage_type = getattr(self.torch, _STORAGE_NAMES[obj.array.dtype])
            pid = ("storage", storage_type, obj.key, "cpu", obj.array.size)
            return pid + (None,) if self.legacy else pid
        return None

    def reducer_override(self, obj):
        if isinstance(obj, _Tensor) and not getattr(obj, "_as_storage", False):
            storage = _Tensor(obj.key, obj.array)
            storage._as_storage = True
            self.tensors.append(storage)
            stride = tuple(s // obj.array.itemsize for s in obj.array.strides)
            return (_rebuild_tensor_v2, (storage, 0, obj.array.shape, stride, False,
                                         collections.OrderedDict()))
        return NotImplemented


def _pickle_state(state: dict[str, np.ndarray], legacy: bool) -> tuple[bytes, list[_Tensor]]:
    tensors = collections.OrderedDict(
        (k, _Tensor(str(i), v)) for i, (k, v) in enumerate(state.items())
    )
    buffer = io.BytesIO()
    with _fake_torch() as torch:
        pickler = _Pickler(buffer, torch, legacy)
        pickler.dump(tensors)
    return buffer.getvalue(), pickler.tensors


def save_zip(state: dict[str, np.ndarray], path, archive_name: str = "archive") -> None:
    """Like ``torch.save(state, path)`` (the zip format of torch >= 1.6)."""
    data, tensors = _pickle_state(state, legacy=False)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive_name}/data.pkl", data)
        z.writestr(f"{archive_name}/byteorder", "little")
        for t in tensors:
            z.writestr(f"{archive_name}/data/{t.key}", t.array.astype(t.array.dtype.newbyteorder("<")).tobytes())
        z.writestr(f"{archive_name}/version", "3\n")


def save_legacy(state: dict[str, np.ndarray], path) -> None:
    """Like ``torch.save(state, path, _use_new_zipfile_serialization=False)``."""
    data, tensors = _pickle_state(state, legacy=True)
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001,
                                                      "little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(data)
        pickle.dump([t.key for t in tensors], f, protocol=2)
        for t in tensors:
            f.write(struct.pack("<q", t.array.size))
            f.write(t.array.tobytes())


def save_zip_raw_pickle(payload: bytes, path) -> None:
    """A zip checkpoint whose data.pkl is `payload` (for testing hostile pickles)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")

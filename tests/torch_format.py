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
import zlib

import numpy as np

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
                  np.dtype(np.float64): "DoubleStorage", np.dtype(np.int8): "CharStorage"}


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
    """A tensor to pickle: `array` is its storage, `layout` its (offset, shape, stride) over it
    (default: the whole array, C-contiguous), `numel` the storage's size as the pickle states it."""

    def __init__(self, key: str, array: np.ndarray, layout: tuple | None = None,
                 numel: int | None = None):
        self.key, self.array = key, np.ascontiguousarray(array)
        stride = tuple(s // self.array.itemsize for s in self.array.strides)
        self.layout = layout or (0, self.array.shape, stride)
        self.numel = self.array.size if numel is None else numel


def crafted(storage: np.ndarray, offset: int, shape: tuple, stride: tuple,
            numel: int | None = None) -> _Tensor:
    """A state-dict value whose tensor record says any (offset, shape, stride) over `storage`,
    and the storage any `numel`: crafted files for the readers' bounds checks (put it in the dict
    given to `save_zip` or `save_legacy`)."""
    return _Tensor("", storage, (offset, tuple(shape), tuple(stride)), numel)


class _Pickler(pickle.Pickler):
    def __init__(self, file, torch, legacy: bool):
        super().__init__(file, protocol=2)
        self.torch, self.legacy, self.tensors = torch, legacy, []

    def persistent_id(self, obj):
        if isinstance(obj, _Tensor) and getattr(obj, "_as_storage", False):
            storage_type = getattr(self.torch, _STORAGE_NAMES[obj.array.dtype])
            pid = ("storage", storage_type, obj.key, "cpu", obj.numel)
            return pid + (None,) if self.legacy else pid
        return None

    def reducer_override(self, obj):
        if isinstance(obj, _Tensor) and not getattr(obj, "_as_storage", False):
            storage = _Tensor(obj.key, obj.array, numel=obj.numel)
            storage._as_storage = True
            self.tensors.append(storage)
            return (_rebuild_tensor_v2, (storage, *obj.layout, False, collections.OrderedDict()))
        return NotImplemented


def _pickle_state(state: dict, legacy: bool) -> tuple[bytes, list[_Tensor]]:
    tensors = collections.OrderedDict(
        (k, _Tensor(str(i), v.array, v.layout, v.numel) if isinstance(v, _Tensor)
         else _Tensor(str(i), v)) for i, (k, v) in enumerate(state.items())
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
            little = t.array.astype(t.array.dtype.newbyteorder("<"))
            z.writestr(f"{archive_name}/data/{t.key}", little.tobytes())
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


def save_zip_bomb(path, numel: int, inflated: int, stated: int | None = None) -> None:
    """A zip checkpoint of one float32 tensor of `numel` elements whose storage member is
    `inflated` zero bytes, deflated (1 GiB becomes about 1 MB); the member's headers state
    `stated` bytes (default: `inflated`) and the CRC of that many zeros."""
    stated = inflated if stated is None else stated
    data, _ = _pickle_state({"w": crafted(np.zeros(1, np.float32), 0, (numel,), (1,), numel)},
                            legacy=False)
    members = [("archive/data.pkl", zipfile.ZIP_STORED, zlib.crc32(data), len(data), data),
               ("archive/byteorder", zipfile.ZIP_STORED, zlib.crc32(b"little"), 6, b"little"),
               ("archive/data/0", zipfile.ZIP_DEFLATED, _crc32_of_zeros(stated), stated,
                _deflated_zeros(inflated))]
    write_zip(path, members)


_MIB = 1 << 20


def _deflated_zeros(n: int) -> bytes:
    """`n` zero bytes as a raw deflate stream: one compressed MiB, fully flushed (so that it
    stands alone), repeated, then the rest and the final block."""
    piece = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = piece.compress(bytes(_MIB)) + piece.flush(zlib.Z_FULL_FLUSH)
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    return block * (n // _MIB) + last.compress(bytes(n % _MIB)) + last.flush()


def _crc32_of_zeros(n: int) -> int:
    crc, zeros = 0, bytes(_MIB)
    for _ in range(n // _MIB):
        crc = zlib.crc32(zeros, crc)
    return zlib.crc32(bytes(n % _MIB), crc)


def write_zip(file, members: list[tuple[str, int, int, int, bytes]]) -> None:
    """Writes a zip archive of (name, method, crc, stated size, payload) members to `file` (a
    path or a binary file), each payload as given (already compressed), so that the headers say
    whatever a test needs."""
    local, central = bytearray(), bytearray()
    for name, method, crc, size, payload in members:
        fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 0x21, crc, len(payload), size,
                             len(name), 0)
        central += (b"PK\x01\x02" + struct.pack("<H", 20) + fields
                    + struct.pack("<HHHII", 0, 0, 0, 0, len(local)) + name.encode())
        local += b"PK\x03\x04" + fields + name.encode() + payload
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members),
                      len(central), len(local), 0)
    if hasattr(file, "write"):
        file.write(bytes(local + central) + end)
    else:
        with open(file, "wb") as f:
            f.write(bytes(local + central) + end)

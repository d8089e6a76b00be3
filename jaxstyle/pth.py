"""Reading PyTorch ``.pth`` state dicts without running code from them.

Both of PyTorch's serializations are supported: the zip format (``torch.save`` since 1.6) and the
legacy stream format (torchvision's published ``vgg19-dcbb9e9d.pth``, neural-style-pt's Caffe
conversion). Each pickle is read by `jaxstyle.unpickler.RestrictedUnpickler`, resolving only the
few globals a tensor state dict needs, each to a stand-in of jaxstyle's own that checks its
arguments; any other global (``os.system``, ``builtins.eval``, ...) is refused before it is
called.

No number in the file is trusted before it is checked, so that a crafted file can neither make
the reader touch memory outside what it read nor make it allocate without limit:

- every pickle is walked opcode by opcode before it is unpickled: each length it states must lie
  inside it, and each memo index must lie below its position (CPython's unpickler allocates both
  before reading);
- a file's storages hold at most `jaxstyle.unpickler.MAX_ELEMENTS` elements in all, and so do
  its tensors;
- a storage is read only after the file (legacy) or the zip member's central-directory sizes show
  that it holds that many bytes, and zip members may inflate by at most `MAX_INFLATION` bytes in
  all, read with bounded streaming reads;
- each tensor's (offset, shape, stride) must lie inside its storage (exact integer arithmetic);
  negative strides, which torch never writes, are refused; zero strides are read exactly, but no
  tensor may hold more elements than its storage.
"""
from __future__ import annotations

import collections
import io
import math
import os
import pickletools
import struct
import zipfile
import zlib
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from jaxstyle.errors import WeightsError
from jaxstyle.unpickler import (
    MAX_DIMS,
    MAX_ELEMENTS,
    RestrictedUnpickler,
    brief,
    load,
    pickle_end,
)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# How many bytes decompression may add to a zip checkpoint: torch.save stores every member
# uncompressed, so a real file inflates by nothing; a zip bomb is refused from its headers.
MAX_INFLATION = 64 * 2**20

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


class _Unbuildable:
    """Refuses pickle's BUILD (setting attributes after construction): torch never writes it for
    storages and tensors, and it would let a file rewrite a layout after it was checked."""

    def __setstate__(self, state):
        raise WeightsError("the pickle sets attributes of a tensor or storage, which torch never "
                           "writes")


@dataclass
class _Storage(_Unbuildable):
    """A storage named by the pickle; its bytes are attached once they have been read."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None
    view_of: tuple[_Storage, int] | None = None  # legacy views: (root storage, element offset)

    def array(self) -> np.ndarray:
        if self.view_of is not None:
            root, offset = self.view_of
            flat = root.array()
            if offset + self.numel > flat.size:
                raise WeightsError(f"storage view {self.key!r} of {self.numel} elements at "
                                   f"{offset} reaches past its storage of {flat.size}")
            return flat[offset : offset + self.numel]
        if self.data is None:
            raise WeightsError(f"storage {self.key!r} has no data in the file (truncated?)")
        return self.data


@dataclass
class _TensorRef(_Unbuildable):
    """A tensor as the pickle describes it; materialised only when asked for."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def check(self) -> int:
        """The tensor's element count, once its layout is known to lie inside its storage.

        Raises:
          WeightsError: the layout is malformed, reaches outside the storage, or repeats
            elements beyond the storage's size.
        """
        shape, stride, offset = self.shape, self.stride, self.offset
        if len(shape) > MAX_DIMS:
            raise WeightsError(f"{len(shape)} dimensions, more than NumPy's {MAX_DIMS}")
        if len(stride) != len(shape):
            raise WeightsError(f"shape {brief(shape)} and stride {brief(stride)} differ in "
                               "length")
        if min(shape, default=0) < 0:
            raise WeightsError(f"shape {brief(shape)} has a negative dimension")
        if max(shape, default=0) > MAX_ELEMENTS:
            raise WeightsError(f"shape {brief(shape)} has a dimension over {MAX_ELEMENTS}")
        if min(stride, default=0) < 0:
            raise WeightsError(f"stride {brief(stride)} is negative, which torch never writes")
        if offset < 0:
            raise WeightsError(f"storage offset {offset} is negative")
        size = self.storage.array().size
        numel = math.prod(shape)  # Python integers: exact, whatever the file says
        if numel > size:
            raise WeightsError(f"shape {brief(shape)} holds {numel} elements, more than its "
                               f"storage's {size}")
        last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
        if numel and last >= size:
            raise WeightsError(f"shape {brief(shape)} with stride {brief(stride)} at offset "
                               f"{offset} reaches element {last} of a storage of {size}")
        return numel

    def numpy(self) -> np.ndarray:
        """The tensor as a new array; call `check` first."""
        flat = self.storage.array()
        if not math.prod(self.shape):
            return np.zeros(self.shape, flat.dtype)
        # A dimension of size 1 takes any stride in torch; it moves nothing, so NumPy gets 0.
        strides = tuple(s * flat.dtype.itemsize if n > 1 else 0
                        for n, s in zip(self.shape, self.stride))
        view = np.lib.stride_tricks.as_strided(flat[self.offset :], shape=self.shape,
                                               strides=strides, writeable=False)
        return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise WeightsError("malformed tensor record in the pickle")
    return _TensorRef(storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride)))


def _rebuild_parameter(data, *_unused):
    return data


class _StorageType(_Unbuildable):
    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


def _count(value: object, what: str) -> int:
    """`value` as an element count or offset in [0, MAX_ELEMENTS]."""
    count = int(value)
    if not 0 <= count <= MAX_ELEMENTS:
        raise WeightsError(f"{what} {count} is not in [0, {MAX_ELEMENTS}]")
    return count


def _storage_from_pid(pid, storages: dict[str, _Storage]) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        raise WeightsError(f"unsupported persistent reference {brief(pid)}")
    storage_type, key, _location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType) or not isinstance(key, (str, int)):
        raise WeightsError("unsupported storage type in the pickle")
    key = str(key)
    if key not in storages:
        storages[key] = _Storage(key, storage_type.dtype, _count(numel, "storage size"))
    root = storages[key]
    view_metadata = pid[5] if len(pid) > 5 else None
    if view_metadata is None:
        return root
    if root.view_of is not None:
        raise WeightsError(f"storage {key!r} is a view of a view, which torch never writes")
    view_key, offset, view_numel = view_metadata
    view_key = str(view_key)
    if view_key not in storages:
        storages[view_key] = _Storage(view_key, root.dtype, _count(view_numel, "view size"),
                                      view_of=(root, _count(offset, "view offset")))
    return storages[view_key]


def _unpickle(f, storages: dict[str, _Storage], end: int):
    """Unpickles the pickle at `f`'s position (ending before `end`) once `pickle_end` passed it,
    resolving only a state dict's globals."""
    start = f.tell()
    stop = pickle_end(f, end)
    f.seek(start)
    data = f.read(stop - start)
    return load(RestrictedUnpickler(io.BytesIO(data), _ALLOWED_GLOBALS,
                                    lambda pid: _storage_from_pid(pid, storages)))


class _Members:
    """A zip archive's members, each read only once its headers show it fits the budgets."""

    def __init__(self, archive: zipfile.ZipFile):
        self.archive = archive
        self.inflation_left = MAX_INFLATION

    def read(self, name: str, nbytes: int | None = None) -> bytes:
        """The first `nbytes` bytes of member `name` (all of it by default).

        Raises:
          WeightsError: the member is missing, encrypted, compressed other than by deflate,
            shorter than `nbytes`, or would inflate past what is left of `MAX_INFLATION`.
        """
        member = f"zip member {brief(name)}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise WeightsError(f"{member} is missing") from None
        nbytes = info.file_size if nbytes is None else nbytes
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or (
                info.flag_bits & 0x1):
            raise WeightsError(f"{member} is encrypted or compressed with method "
                               f"{info.compress_type}, which torch.save never writes")
        if info.file_size < nbytes:
            raise WeightsError(f"{member} is truncated: it holds {info.file_size} of {nbytes} "
                               "bytes")
        inflation = max(nbytes - info.compress_size, 0)
        if inflation > self.inflation_left:
            raise WeightsError(f"{member} inflates from {info.compress_size} to {nbytes} bytes, "
                               "more than a weights file may (torch.save does not compress)")
        self.inflation_left -= inflation
        with self.archive.open(info) as stream:
            data = stream.read(nbytes)
        if len(data) != nbytes:
            raise WeightsError(f"{member} is truncated")
        return data


def _read_zip(path: str) -> tuple[object, dict[str, _Storage]]:
    with zipfile.ZipFile(path) as archive:
        members = _Members(archive)
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise WeightsError("zip archive is not a PyTorch checkpoint (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = members.read(prefix + "byteorder").decode(errors="replace").strip()
            if byteorder not in ("little", "big"):
                raise WeightsError(f"unknown byte order {brief(byteorder)}")
        storages: dict[str, _Storage] = {}
        data = members.read(pickles[0])
        obj = _unpickle(io.BytesIO(data), storages, len(data))
        roots = [s for s in storages.values() if s.view_of is None]
        total = sum(s.numel for s in roots)
        if total > MAX_ELEMENTS:
            raise WeightsError(f"the storages hold {total} elements, more than the "
                               f"{MAX_ELEMENTS} a weights file may")
        for storage in roots:
            dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
            raw = members.read(f"{prefix}data/{storage.key}", storage.numel * dtype.itemsize)
            storage.data = np.frombuffer(raw, dtype=dtype).astype(storage.dtype, copy=False)
    return obj, storages


def _read_legacy(path: str) -> tuple[object, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        try:
            magic = _unpickle(f, storages, end)
        except WeightsError:
            magic = None
        if magic != _LEGACY_MAGIC:
            raise WeightsError("not a PyTorch weights file (neither zip nor legacy format)")
        header = [magic] + [_unpickle(f, storages, end) for _ in range(2)]
        if header[1] != _LEGACY_PROTOCOL:
            raise WeightsError(f"unsupported legacy PyTorch protocol {brief(header[1])}")
        obj = _unpickle(f, storages, end)
        keys = _unpickle(f, {}, end)
        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            raise WeightsError("corrupt legacy file: no storage key list")
        total = 0
        for key in keys:
            storage = storages.get(key)
            if storage is None or storage.view_of is not None:
                raise WeightsError(f"corrupt legacy file: unknown storage {brief(key)}")
            head = f.read(8)
            if len(head) != 8:
                raise WeightsError(f"file is truncated before storage {key!r}")
            (numel,) = struct.unpack("<q", head)
            nbytes = numel * storage.dtype.itemsize
            if numel < 0 or nbytes > end - f.tell():
                raise WeightsError(f"file is truncated inside storage {key!r} (it states "
                                   f"{numel} elements)")
            total += numel
            if total > MAX_ELEMENTS:
                raise WeightsError(f"the storages hold more than the {MAX_ELEMENTS} elements a "
                                   "weights file may")
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise WeightsError(f"file is truncated inside storage {key!r}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<")).astype(
                storage.dtype, copy=False
            )
    return obj, storages


def is_legacy_torch(path: str | os.PathLike) -> bool:
    """Whether `path` begins as PyTorch's legacy format does: a pickle of its magic number alone
    (read from the first bytes only, opcode by opcode; nothing is unpickled)."""
    with open(path, "rb") as f:
        head = f.read(32)
    try:
        values = [arg for op, arg, _ in pickletools.genops(io.BytesIO(head))
                  if op.name not in ("PROTO", "FRAME", "STOP")]
    except Exception:  # not a pickle, or not one that ends within its first bytes
        return False
    return values == [_LEGACY_MAGIC]


def is_zip_archive(path: str | os.PathLike) -> bool:
    """Whether `path` is a zip archive; False for a damaged one (where `zipfile.is_zipfile` can
    raise `zipfile.BadZipFile`, e.g. on a zip64 record that names several disks)."""
    try:
        return zipfile.is_zipfile(path)
    except (zipfile.BadZipFile, ValueError, struct.error):
        return False


# What zipfile and zlib raise on a damaged archive, beyond what `_Members` checks itself.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error,
               NotImplementedError, RuntimeError, OverflowError)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict file (zip or legacy format) into NumPy arrays.

    Args:
      path: a ``.pth``/``.pt`` file written by ``torch.save(module.state_dict(), path)``.

    Returns:
      The tensors by key, in the file's order, each a NumPy array of the stored dtype
      (float16/bfloat16 stay as stored; callers convert).

    Raises:
      WeightsError: the file is not a PyTorch state dict, is truncated, or its pickle asks for
        anything a state dict never needs (such a pickle is refused before anything runs); a
        tensor reaches outside its storage or repeats elements past its size; the file holds
        more than `MAX_ELEMENTS` elements or a zip member inflates by more than
        `MAX_INFLATION` bytes (both refused before they are read). The message names the
        tensor or member.
    """
    path = os.fspath(path)
    if is_zip_archive(path):
        try:
            obj, _ = _read_zip(path)
        except WeightsError:
            raise
        except _ZIP_ERRORS as exc:
            raise WeightsError(f"corrupt zip archive ({type(exc).__name__}: "
                               f"{brief(str(exc))})") from None
    else:
        obj, _ = _read_legacy(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"file holds a {type(obj).__name__}, not a state dict")
    tensors = {key: value for key, value in obj.items() if isinstance(value, _TensorRef)}
    total = 0
    for key, tensor in tensors.items():
        if not isinstance(key, str):
            raise WeightsError(f"a tensor's key is a {type(key).__name__}, not a string")
        try:
            total += tensor.check()
        except WeightsError as exc:
            raise WeightsError(f"tensor {brief(key)}: {exc}") from None
    if total > MAX_ELEMENTS:
        raise WeightsError(f"the tensors hold {total} elements, more than the {MAX_ELEMENTS} a "
                           "weights file may")
    return {key: tensor.numpy() for key, tensor in tensors.items()}


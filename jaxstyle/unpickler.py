"""A restricted unpickler: resolves only the globals it is given, and walks each pickle opcode by
opcode before it unpickles it, so that a crafted weights file can neither run code nor make the
reader allocate without limit.

Shared by PyTorch's state dicts (`jaxstyle.pth`) and pickles of NumPy arrays
(`jaxstyle.pickled_arrays`); each passes the globals its kind needs, each resolved to a stand-in
of jaxstyle's own that checks its arguments. Any other global (``os.system``, ``builtins.eval``,
...) is refused before it is called.
"""

from __future__ import annotations

import pickle
import pickletools
from collections.abc import Callable

from jaxstyle.errors import WeightsError

# The most elements a file's storages, and its tensors, may hold in all: 2**28, 1 GiB as float32.
# torchvision's VGG19 with its classifier, the largest file jaxstyle reads, holds 143,667,240.
MAX_ELEMENTS = 2**28
MAX_DIMS = 64  # NumPy's limit


def brief(value: object, limit: int = 60) -> str:
    """`value`'s repr on one line, cut to `limit` characters (file contents go into messages)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in `allowed`; storages are handed to `persistent_load_fn`."""

    def __init__(self, file, allowed: dict[tuple[str, str], object],
                 persistent_load_fn: Callable[[tuple], object] | None = None):
        super().__init__(file)
        self._persistent_load_fn = persistent_load_fn
        self._allowed = allowed

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise WeightsError(
                f"refusing to load: the file asks for '{module}.{name}', which a weights file "
                "never needs (it may be trying to run code)"
            ) from None

    def persistent_load(self, pid):
        if self._persistent_load_fn is None:
            raise WeightsError("unexpected persistent reference in the pickle")
        return self._persistent_load_fn(pid)


def pickle_end(f, end: int) -> int:
    """Where the pickle starting at `f`'s position ends (`f` is left there), walking its opcodes.

    Every length the pickle states must lie before `end`, and every memo index below its own
    position: CPython's unpickler allocates either before it reads, so 10 bytes could otherwise
    ask for gigabytes (a memo index of 2**28 makes it zero 4 GiB).
    """
    start = f.tell()
    bounded = _BoundedReader(f, end)
    try:
        for opcode, arg, pos in pickletools.genops(bounded):
            if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and arg > pos - start:
                raise WeightsError(f"corrupt pickle (memo index {arg} at byte {pos - start})")
    except WeightsError:
        raise
    except Exception as exc:  # pickletools raises ValueError and others on malformed input
        raise WeightsError(f"corrupt pickle ({type(exc).__name__}: {brief(str(exc))})") from None
    return f.tell()


class _BoundedReader:
    """`read` and `readline` of a binary file that never go past `end`."""

    def __init__(self, f, end: int):
        self.f, self.end = f, end

    def tell(self) -> int:
        return self.f.tell()

    def read(self, n: int = -1) -> bytes:
        left = max(self.end - self.f.tell(), 0)
        return self.f.read(left if n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.f.readline(max(self.end - self.f.tell(), 0))


def load(unpickler: RestrictedUnpickler) -> object:
    """What `unpickler` reads, any error it meets raised as a `WeightsError`."""
    try:
        return unpickler.load()
    except WeightsError:
        raise
    except RecursionError:
        raise WeightsError("corrupt pickle (nested too deeply)") from None
    except Exception as exc:  # pickle raises a zoo of types on malformed input
        raise WeightsError(f"corrupt pickle ({type(exc).__name__}: {brief(str(exc))})") from None

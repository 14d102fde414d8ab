"""Load pickles that only hold plain data (bytes, str, numbers, lists, tuples, dicts, bools, None), and, where
asked, 1-D ``uint8`` numpy arrays.

Verification sets such as insightface's ``lfw.bin`` are pickles downloaded from the internet, and a pickle
can name any importable callable (``os.system``) to be called while loading. Every class or function
lookup is refused here, so loading can only build plain containers and can never run code. The one
exception, ``uint8_arrays=True``, is for the ``.bin`` files insightface's ``build_eval_pack.py`` writes, whose
images are the ``uint8`` arrays ``cv2.imencode`` returns: the few numpy names such an array's pickle uses
resolve to stand-ins written here, which accept nothing but a 1-D ``uint8`` array's own arguments and build it
from bytes themselves; no numpy callable is ever handed to the unpickler.
"""

from __future__ import annotations

import io
import pickle
import re

import numpy as np

from unlearnkit.errors import DataError

ONLY = "only plain data (bytes, lists, tuples, numbers, bools)"


class _Refused(Exception):
    """A stand-in met arguments that no 1-D uint8 array's pickle has; ``restricted_loads`` words the error."""


class _StandIn:
    """What an allowed numpy name resolves to: calls ``function`` (None: calling is refused, as for
    ``numpy.ndarray``, only ever an argument of ``_reconstruct``). No attributes and no state can be set on it,
    so a pickle cannot change it for later loads."""

    __slots__ = ("function",)

    def __init__(self, function=None) -> None:
        self.function = function

    def __call__(self, *args):
        if self.function is None:
            raise _Refused("a direct call of numpy.ndarray")
        return self.function(*args)

    def __setstate__(self, state) -> None:
        raise _Refused("a change of numpy's own names")


class _Uint8Dtype:
    """What ``numpy.dtype(...)`` builds: a mark that the array's dtype is ``uint8``."""

    def __setstate__(self, state) -> None:
        # numpy's dtype state: (version, byte order, subarray, names, fields, itemsize, alignment, flags)
        if not (isinstance(state, tuple) and len(state) >= 5 and _text(state[1]) == "|"
                and state[2] is None and state[3] is None and state[4] is None):
            raise _Refused(f"a uint8 dtype with the state {state!r:.80}")


def _text(value) -> str | None:
    """``value`` as ``str`` (Python 2 pickles give bytes under ``encoding="bytes"``), else None."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


def _dtype(spec, align=False, copy=False) -> _Uint8Dtype:
    """``numpy.dtype``'s stand-in: only ``'u1'`` (how numpy pickles ``uint8``)."""
    if _text(spec) != "u1":
        raise _Refused(f"a numpy array of dtype {_text(spec) or type(spec).__name__!r}")
    return _Uint8Dtype()


class Uint8Array(np.ndarray):
    """The array ``_reconstruct``'s stand-in returns; its ``__setstate__`` takes only a 1-D uint8 state."""

    def __setstate__(self, state) -> None:
        # (version, shape, dtype, is_fortran, raw data); numpy before 1.0 wrote no version
        if isinstance(state, tuple) and len(state) == 4:
            state = (1, *state)
        if not (isinstance(state, tuple) and len(state) == 5):
            raise _Refused("an array state numpy never writes")
        _, shape, dtype, _, data = state
        data = data.encode("latin-1") if isinstance(data, str) else data
        if not isinstance(dtype, _Uint8Dtype) or not isinstance(data, (bytes, bytearray)):
            raise _Refused("an array whose data is not uint8 bytes")
        _check_shape(shape, len(data))
        np.ndarray.__setstate__(self, (1, (len(data),), np.dtype(np.uint8), False, bytes(data)))


def _check_shape(shape, size: int) -> None:
    if not (isinstance(shape, tuple) and len(shape) == 1 and shape[0] == size):
        raise _Refused(f"an array of shape {shape!r:.40} (only 1-D arrays of encoded bytes are accepted)")


def _reconstruct(subtype, shape, dtype_code) -> Uint8Array:
    """``numpy.core.multiarray._reconstruct``'s stand-in (protocols 0-4): an empty array that ``Uint8Array``'s
    ``__setstate__`` fills."""
    if subtype is not _NDARRAY or shape != (0,):
        raise _Refused("numpy's _reconstruct with arguments other than (numpy.ndarray, (0,), ...)")
    return np.empty(0, np.uint8).view(Uint8Array)


def _frombuffer(buffer, dtype, shape, order) -> Uint8Array:
    """``numpy.core.numeric._frombuffer``'s stand-in (protocol 5): the array of ``buffer``'s bytes."""
    if not isinstance(dtype, _Uint8Dtype) or not isinstance(buffer, (bytes, bytearray)):
        raise _Refused("numpy's _frombuffer over something other than uint8 bytes")
    _check_shape(shape, len(buffer))
    return np.frombuffer(bytes(buffer), np.uint8).view(Uint8Array)


_NDARRAY = _StandIn()
# the numpy names a 1-D uint8 array's pickle uses (numpy 1 says numpy.core, numpy 2 numpy._core), and nothing else
UINT8_ARRAY_GLOBALS = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _StandIn(_dtype),
    ("numpy.core.multiarray", "_reconstruct"): _StandIn(_reconstruct),
    ("numpy._core.multiarray", "_reconstruct"): _StandIn(_reconstruct),
    ("numpy.core.numeric", "_frombuffer"): _StandIn(_frombuffer),
    ("numpy._core.numeric", "_frombuffer"): _StandIn(_frombuffer),
}


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler whose every global lookup fails (the opcodes for plain data need none), except, with
    ``uint8_arrays``, the numpy names of ``UINT8_ARRAY_GLOBALS``, which resolve to their stand-ins."""

    def __init__(self, file, what: str, uint8_arrays: bool = False) -> None:
        # encoding="bytes": Python 2 pickles hold the images as str, which must come back as bytes.
        super().__init__(file, encoding="bytes")
        self.what = what
        self.uint8_arrays = uint8_arrays

    def find_class(self, module: str, name: str):
        if self.uint8_arrays and (module, name) in UINT8_ARRAY_GLOBALS:
            return UINT8_ARRAY_GLOBALS[module, name]
        accepted = f"{ONLY} and 1-D uint8 numpy arrays are" if self.uint8_arrays else f"{ONLY} is"
        raise DataError(
            f"{self.what}: refuses to load this pickle: it asks for {module}.{name}, which could run code; "
            f"{accepted} accepted"
        )

    def persistent_load(self, pid):
        raise DataError(
            f"{self.what}: refuses to load this pickle: it uses persistent ids, which plain data never does"
        )


def restricted_loads(data: bytes, what: str = "pickle", uint8_arrays: bool = False) -> object:
    """Unpickle ``data`` allowing no globals at all, or with ``uint8_arrays`` just those that rebuild a 1-D uint8
    numpy array (returned as ``numpy.ndarray``); ``what`` (e.g. the file name) prefixes error messages."""
    try:
        return _PlainDataUnpickler(io.BytesIO(data), what, uint8_arrays).load()
    except DataError:
        raise
    except _Refused as err:
        raise DataError(
            f"{what}: refuses to load this pickle: it asks for {err}, which is not an image's 1-D uint8 array; "
            f"{ONLY} and 1-D uint8 numpy arrays are accepted"
        ) from None
    except Exception as err:  # a damaged pickle fails in many ways (EOFError, UnpicklingError, ValueError...)
        raise DataError(
            f"{what}: not a readable pickle ({type(err).__name__}: {err}); the file may be truncated"
        ) from err


def weights_only_refusal(err: Exception) -> str:
    """One line saying why ``torch.load(..., weights_only=True)`` failed, without torch's advice to retry unsafely."""
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it asks for {found.group(1)}, which could run code; only tensors and plain data are accepted"
    if text.startswith("Weights only load failed"):
        return "it holds objects other than tensors and plain data, which could run code"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__

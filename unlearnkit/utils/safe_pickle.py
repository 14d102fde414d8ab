"""Load pickles that only hold plain data (bytes, str, numbers, lists, tuples, dicts, bools, None).

Verification sets such as insightface's ``lfw.bin`` are pickles downloaded from the internet, and a pickle
can name any importable callable (``os.system``) to be called while loading. Every class or function
lookup is refused here, so loading can only build plain containers and can never run code.
"""

from __future__ import annotations

import io
import pickle
import re

from unlearnkit.errors import DataError


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler whose every global lookup fails: the opcodes for plain data need none."""

    def __init__(self, file, what: str) -> None:
        # encoding="bytes": Python 2 pickles hold the images as str, which must come back as bytes.
        super().__init__(file, encoding="bytes")
        self.what = what

    def find_class(self, module: str, name: str):
        raise DataError(
            f"{self.what}: refuses to load this pickle: it asks for {module}.{name}, which could run code; "
            "only plain data (bytes, lists, tuples, numbers, bools) is accepted"
        )

    def persistent_load(self, pid):
        raise DataError(
            f"{self.what}: refuses to load this pickle: it uses persistent ids, which plain data never does"
        )


def restricted_loads(data: bytes, what: str = "pickle") -> object:
    """Unpickle ``data`` allowing no globals at all; ``what`` (e.g. the file name) prefixes error messages."""
    try:
        return _PlainDataUnpickler(io.BytesIO(data), what).load()
    except DataError:
        raise
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

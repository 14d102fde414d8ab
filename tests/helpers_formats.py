"""Writers of small data sets in the real on-disk formats, for the format tests and the loading benchmark.

The RecordIO writer follows dmlc-core's framing byte for byte and is written independently of the reader,
so a test that reads its output back checks the reader against the format, not against itself.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)


def jpeg_bytes(seed: int, size: int = 112, quality: int = 90) -> bytes:
    """A smooth random colour image as JPEG (smooth like a face crop, so it encodes to a realistic size)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((size, size), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def smooth_rgb(seed: int, size: int = 32) -> np.ndarray:
    """A smooth random colour image as an ``H×W×3`` uint8 array."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC))


# (file name, PIL mode, format) of one image per kind a face folder may hold: every suffix torchvision's
# ImageFolder reads, and grey, 16-bit, palette, RGBA, CMYK and grey+alpha images
IMAGE_KINDS = [
    ("rgb.jpg", "RGB", "JPEG"), ("grey.jpeg", "L", "JPEG"), ("grey16.png", "I;16", "PNG"),
    ("palette.png", "P", "PNG"), ("rgba.png", "RGBA", "PNG"), ("rgb.ppm", "RGB", "PPM"), ("rgb.bmp", "RGB", "BMP"),
    ("grey.pgm", "L", "PPM"), ("grey16.pgm", "I;16", "PPM"), ("cmyk.tif", "CMYK", "TIFF"),
    ("grey16.tiff", "I;16", "TIFF"), ("rgb.webp", "RGB", "WEBP"), ("grey_alpha.PNG", "LA", "PNG"),
]


def image_of_kind(pixels: np.ndarray, mode: str) -> Image.Image:
    """``pixels`` (8-bit RGB) as an image of ``mode``; a 16-bit image holds the grey values × 257."""
    rgb = Image.fromarray(pixels)
    if mode == "I;16":
        grey = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
        return Image.fromarray(grey)  # uint16 → mode I;16
    if mode == "P":
        return rgb.quantize(16)
    return rgb.convert(mode)


def expected_rgb(image: Image.Image) -> np.ndarray:
    """What a reader should make of ``image``: its 8-bit RGB values (16-bit grey's high byte, not clipped)."""
    if image.mode == "I;16":
        grey = (np.asarray(image) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def write_image(path: Path, image: Image.Image, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}))


def frame(payload: bytes) -> bytes:
    """One logical record as dmlc-core's RecordIOWriter writes it.

    The payload is split wherever the magic word occurs at a 4-byte-aligned position (flag 1 = first part,
    2 = middle, 3 = last; the magic itself is dropped), and only the last part is zero-padded to 4 bytes.
    """
    out = bytearray()
    start = 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i : i + 4] == MAGIC_BYTES:
            flag = 1 if start == 0 else 2
            out += MAGIC_BYTES + struct.pack("<I", (flag << 29) | (i - start)) + payload[start:i]
            start = i + 4
    flag = 3 if start else 0
    out += MAGIC_BYTES + struct.pack("<I", (flag << 29) | (len(payload) - start)) + payload[start:]
    out += b"\0" * (-len(payload) % 4)
    return bytes(out)


def irheader(label: float | list[float], key: int, payload: bytes = b"") -> bytes:
    """mxnet.recordio.pack: struct 'IfQQ' (flag, label, id, id2); several labels follow as float32."""
    if isinstance(label, (list, tuple)):
        return (
            struct.pack("<IfQQ", len(label), 0.0, key, 0) + struct.pack(f"<{len(label)}f", *label) + payload
        )
    return struct.pack("<IfQQ", 0, float(label), key, 0) + payload


def write_recordio(
    root: Path, images: list[tuple[float | list[float], bytes]], header: bool = True, name: str = "train"
) -> list[int]:
    """Write ``<name>.rec`` + ``<name>.idx`` of ``(label, jpeg)`` images; returns the images' record keys.

    With ``header`` the layout is insightface's: record 0 holds labels ``(first identity record, end)``,
    images are keys 1..n, then one record per identity with its image key range ``(a, b)``. Images must be
    grouped by label for the identity records to make sense.
    """
    root.mkdir(parents=True, exist_ok=True)
    records: list[tuple[int, bytes]] = []
    first = 1 if header else 0
    image_keys = list(range(first, first + len(images)))
    for key, (label, data) in zip(image_keys, images):
        records.append((key, irheader(label, key, data)))
    if header:
        ranges: dict[int, list[int]] = {}
        for key, (label, _) in zip(image_keys, images):
            ranges.setdefault(int(label if not isinstance(label, (list, tuple)) else label[0]), []).append(
                key
            )
        id_start = image_keys[-1] + 1
        for n, keys in enumerate(ranges.values()):
            records.append((id_start + n, irheader([keys[0], keys[-1] + 1], id_start + n)))
        records.insert(0, (0, irheader([id_start, id_start + len(ranges)], 0)))
    rec, idx = bytearray(), []
    for key, payload in records:
        idx.append(f"{key}\t{len(rec)}\n")
        rec += frame(payload)
    (root / f"{name}.rec").write_bytes(bytes(rec))
    (root / f"{name}.idx").write_text("".join(idx))
    return image_keys


def write_insightface_bin(path: Path, bins: list[bytes], issame: list[bool]) -> None:
    """Exactly as insightface's lfw2pack / dataset scripts: pickle.dump((bins, issame_list), f, HIGHEST)."""
    with open(path, "wb") as handle:
        pickle.dump((bins, issame), handle, protocol=pickle.HIGHEST_PROTOCOL)


def python2_bin_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """The pickle Python 2 writes for ``(bins, issame)`` with protocol 2: the images are ``str`` (BINSTRING)."""
    out = bytearray(b"\x80\x02(")
    for data in bins:
        out += b"T" + struct.pack("<I", len(data)) + data
    out += b"l("
    out += b"".join(b"\x88" if same else b"\x89" for same in issame)
    out += b"l\x86."
    return bytes(out)


def write_insightface_array_bin(path: Path, jpegs: list[bytes], issame: list[bool]) -> None:
    """As insightface's ``build_eval_pack.py`` writes a .bin: each image the uint8 array ``cv2.imencode``
    returns (here ``np.frombuffer`` of JPEG bytes), ``pickle.dump((bins, issame_list), f, HIGHEST_PROTOCOL)``."""
    bins = [np.frombuffer(data, dtype=np.uint8) for data in jpegs]
    with open(path, "wb") as handle:
        pickle.dump((bins, issame), handle, protocol=pickle.HIGHEST_PROTOCOL)


def _py2_str(text: bytes) -> bytes:
    """A Python 2 ``str`` at protocol 2: SHORT_BINSTRING, or BINSTRING from 256 bytes on."""
    if len(text) < 256:
        return b"U" + bytes([len(text)]) + text
    return b"T" + struct.pack("<I", len(text)) + text


def python2_array_bin_pickle(jpegs: list[bytes], issame: list[bool]) -> bytes:
    """What ``build_eval_pack.py`` wrote under Python 2 and numpy 1 (protocol 2, its highest): each image a uint8
    array rebuilt by ``numpy.core.multiarray._reconstruct``, its dtype ``numpy.dtype('u1', 0, 1)`` and its data
    a ``str``."""
    out = bytearray(b"\x80\x02(")
    for data in jpegs:
        out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R"
        out += b"(K\x01J" + struct.pack("<i", len(data)) + b"\x85"
        out += b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
        out += b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        out += b"\x89" + _py2_str(data) + b"tb"
    out += b"l(" + b"".join(b"\x88" if same else b"\x89" for same in issame) + b"l\x86."
    return bytes(out)


def write_vggface2(root: Path, people: dict[str, tuple[str, int]], split: str = "train") -> list[str]:
    """``root/<split>/<class_id>/<nnnn>_01.jpg``, ``<split>_list.txt`` and ``identity_meta.csv``.

    ``people`` maps class id to (name, image count). The meta file copies the real one's quirks: a space
    after every comma and double-quoted names.
    """
    lines = []
    for n, (class_id, (_, count)) in enumerate(people.items()):
        (root / split / class_id).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            entry = f"{class_id}/{k + 1:04d}_01.jpg"
            (root / split / entry).write_bytes(jpeg_bytes(100 * n + k, size=32))
            lines.append(entry)
    (root / f"{split}_list.txt").write_text("\n".join(lines) + "\n")
    meta = ["Class_ID, Name, Sample_Num, Flag, Gender"]
    for class_id, (name, count) in people.items():
        meta.append(f'{class_id}, "{name}", {count}, {1 if split == "train" else 0}, m')
    (root / "identity_meta.csv").write_text("\n".join(meta) + "\n")
    return lines


def write_celeba(root: Path, rows: list[tuple[str, int, int]]) -> None:
    """``img_align_celeba/<file>``, ``identity_CelebA.txt`` and ``list_eval_partition.txt`` from (file, id, part)."""
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    for n, (name, _, _) in enumerate(rows):
        (root / "img_align_celeba" / name).write_bytes(jpeg_bytes(n, size=32))
    (root / "identity_CelebA.txt").write_text("".join(f"{name} {identity}\n" for name, identity, _ in rows))
    (root / "list_eval_partition.txt").write_text("".join(f"{name} {part}\n" for name, _, part in rows))


def write_lfw_tree(root: Path, people: dict[str, int]) -> None:
    """``root/<Name>/<Name>_<nnnn>.jpg`` as LFW names its files."""
    for n, (name, count) in enumerate(people.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(1, count + 1):
            (root / name / f"{name}_{k:04d}.jpg").write_bytes(jpeg_bytes(50 * n + k, size=32))

"""The public face-recognition training sets in their own on-disk formats, read without their tool chains.

- ``recordio``: insightface's MXNet ``train.rec`` + ``train.idx`` (MS1MV2, Glint360K, CASIA as packed by
  insightface), parsed here byte by byte so that mxnet is not needed;
- ``vggface2``: ``root/train/<class_id>/<image>.jpg`` with ``train_list.txt`` and ``identity_meta.csv``;
- ``celeba``: ``img_align_celeba/`` with ``identity_CelebA.txt`` and ``list_eval_partition.txt``.
"""

from __future__ import annotations

import csv
import math
import os
import struct
from pathlib import Path

from unlearnkit.data.sources import IMAGE_SUFFIXES, SOURCES, FaceSource, read_file, suffix_counts
from unlearnkit.errors import DataError

# MXNet RecordIO framing (dmlc-core recordio): every record starts with the magic word and a word whose top
# 3 bits are a continuation flag and the low 29 bits the length; data is padded to 4 bytes. A payload that
# contains the magic at a 4-byte-aligned position is split there into parts (flag 1 = first, 2 = middle,
# 3 = last) and the magic is put back between the parts when reading.
RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
_LENGTH_MASK = (1 << 29) - 1
# MXNet's image record header IRHeader: flag (number of float32 labels that follow, 0 = one label inline),
# label, id, id2.
IRHEADER = struct.Struct("<IfQQ")


def _padded(length: int) -> int:
    return (length + 3) & ~3


@SOURCES.register("recordio")
class RecordIOSource(FaceSource):
    """insightface's packed training set: one record per image (IRHeader + JPEG), random access by the .idx.

    With insightface's header record (key 0, labels ``(a, b)``) the images are keys ``1 .. a-1`` and keys
    ``a .. b-1`` hold per-identity ranges (ignored); without it every .idx entry is an image. The identity of
    an image is ``str(int(label))`` of its IRHeader (the first label when there are several).

    The file is opened lazily, once per process: DataLoader workers forked from a parent that already read
    from it reopen it instead of sharing the parent's file position.
    """

    def __init__(self, root: str | Path, rec: str = "train.rec", idx: str = "train.idx") -> None:
        self.root = Path(root).expanduser()
        self.rec_path = self.root / rec
        self.idx_path = self.root / idx
        for path, what in ((self.rec_path, "record file"), (self.idx_path, "index file")):
            if not path.is_file():
                raise DataError(
                    f"RecordIO {what} {path} does not exist: expected insightface's train.rec and train.idx "
                    f"in {self.root}"
                )
        self.rec_size = self.rec_path.stat().st_size
        self._handle = None
        self._pid = None
        offsets = self._read_idx()
        with open(self.rec_path, "rb") as handle:
            if handle.read(4) != _MAGIC_BYTES:
                raise DataError(
                    f"{self.rec_path} is not an MXNet RecordIO file (bad magic at offset 0): give the .rec "
                    "written by insightface / mxnet's im2rec"
                )
            # a download that stopped early cuts the last record: check the one at the largest offset whole (the
            # images' frames are checked below, but insightface's identity records after them are never read)
            last = max(offsets, key=offsets.__getitem__)
            self._read_record(handle, last, offsets[last])
            image_keys = self._image_keys(handle, offsets)
            self.offsets = [offsets[k] for k in image_keys]
            self.identities = [str(int(self._label(handle, k, offsets[k]))) for k in image_keys]
        self.record_keys = image_keys
        self.keys = [f"{rec}#{k}" for k in image_keys]
        self.qualities = [math.nan] * len(self.keys)
        if not self.keys:
            raise DataError(f"{self.rec_path} holds no images")

    def _read_idx(self) -> dict[int, int]:
        """The .idx text file, ``key\\toffset`` per line, checked against the size of the .rec."""
        offsets = {}
        with open(self.idx_path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    key, offset = (int(field) for field in line.split())
                except ValueError as err:
                    raise DataError(
                        f"{self.idx_path} line {number} is not 'key<TAB>offset': {line.strip()!r}; "
                        "rebuild the .idx from the .rec"
                    ) from err
                if not 0 <= offset < self.rec_size:
                    raise DataError(
                        f"{self.idx_path} line {number}: offset {offset} lies beyond the end of {self.rec_path} "
                        f"({self.rec_size} bytes): the .rec is truncated or the .idx belongs to another file"
                    )
                offsets[key] = offset
        if not offsets:
            raise DataError(f"{self.idx_path} is empty: rebuild the .idx from the .rec")
        return offsets

    def _image_keys(self, handle, offsets: dict[int, int]) -> list[int]:
        """insightface's header record, when present, says which keys are images."""
        if 0 in offsets:
            header, labels, rest = self._unpack(self._read_record(handle, 0, offsets[0]))
            if header[0] >= 2 and not rest:
                end = int(labels[0])
                missing = [k for k in range(1, end) if k not in offsets]
                if missing:
                    raise DataError(
                        f"{self.idx_path} has no entry for image record {missing[0]} ({len(missing)} missing) "
                        f"although the header record of {self.rec_path} says images are keys 1..{end - 1}: "
                        "rebuild the .idx from the .rec"
                    )
                return list(range(1, end))
        return list(offsets)

    def _label(self, handle, key: int, offset: int) -> float:
        """An image's label, reading only the start of its record (the whole record if it is split)."""
        handle.seek(offset)
        start = handle.read(8 + IRHEADER.size)
        _, word = self._frame(start, key, offset)
        if word >> 29 == 0 and (word & _LENGTH_MASK) >= IRHEADER.size:
            flag, label = IRHEADER.unpack_from(start, 8)[:2]
            if flag == 0:
                return label
        header, labels, _ = self._unpack(self._read_record(handle, key, offset))
        return labels[0] if labels else header[1]

    def _frame(self, start: bytes, key: int, offset: int) -> tuple[int, int]:
        """Check a record's 8-byte frame at ``offset``: the magic, and a length that fits in the file."""
        if len(start) < 8:
            raise DataError(
                f"{self.rec_path} is truncated: record {key} at offset {offset} has no complete header; "
                "re-copy the .rec"
            )
        magic, word = struct.unpack_from("<II", start)
        if magic != RECORDIO_MAGIC:
            raise DataError(
                f"{self.idx_path} disagrees with {self.rec_path}: record {key} at offset {offset} does not start "
                "with the RecordIO magic; the .idx belongs to another .rec: rebuild it"
            )
        if offset + 8 + (word & _LENGTH_MASK) > self.rec_size:
            raise DataError(
                f"{self.rec_path} is truncated: record {key} at offset {offset} needs "
                f"{word & _LENGTH_MASK} bytes but the file ends at {self.rec_size}; re-copy the .rec"
            )
        return magic, word

    def _read_record(self, handle, key: int, offset: int) -> bytes:
        """One logical record, joining the parts of a split record."""
        parts = []
        position = offset
        handle.seek(offset)
        while True:
            _, word = self._frame(handle.read(8), key, position)
            length = word & _LENGTH_MASK
            data = handle.read(_padded(length))
            if len(data) < length:
                raise DataError(f"{self.rec_path} is truncated inside record {key}; re-copy the .rec")
            parts.append(data[:length])
            if word >> 29 in (0, 3):
                return _MAGIC_BYTES.join(parts)
            position += 8 + len(data)

    def _unpack(self, record: bytes) -> tuple[tuple, list[float], bytes]:
        if len(record) < IRHEADER.size:
            raise DataError(
                f"{self.rec_path}: a record of {len(record)} bytes is too short for an image header"
            )
        header = IRHEADER.unpack_from(record)
        flag = header[0]
        end = IRHEADER.size + 4 * flag
        labels = list(struct.unpack_from(f"<{flag}f", record, IRHEADER.size)) if flag else []
        return header, labels, record[end:]

    def _file(self):
        """This process's own handle on the .rec (opened on first use, reopened after a fork)."""
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self.rec_path, "rb", buffering=0)
            self._pid = os.getpid()
        return self._handle

    def read_bytes(self, i: int) -> bytes:
        _, _, image = self._unpack(self._read_record(self._file(), self.record_keys[i], self.offsets[i]))
        return image

    def describe(self, i: int) -> str:
        return f"{self.rec_path} record {self.record_keys[i]}"

    def __getstate__(self) -> dict:
        # a handle must never travel to another process (spawn-started workers pickle the source)
        state = dict(self.__dict__)
        state["_handle"] = state["_pid"] = None
        return state

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and self._pid == os.getpid():
            handle.close()


class _ListedFiles:
    """Checks that listed files exist with one directory listing per folder, not one stat per image."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.listings: dict[str, set[str]] = {}

    def exists(self, relative: str) -> bool:
        folder, _, name = relative.rpartition("/")
        if folder not in self.listings:
            directory = self.root / folder
            self.listings[folder] = set(os.listdir(directory)) if directory.is_dir() else set()
        return name in self.listings[folder]

    def missing(self, list_path: Path, number: int, relative: str) -> DataError:
        """The error for a listed file that is not there, naming the same image under another suffix if the
        folder holds one (a set re-encoded, e.g. CelebA's PNG archive beside a list of .jpg names)."""
        folder, _, name = relative.rpartition("/")
        stem = os.path.splitext(name)[0]
        others = sorted(n for n in self.listings.get(folder, ()) if os.path.splitext(n)[0] == stem)
        fix = (f"; the folder holds {others[0]} instead: the list names {os.path.splitext(name)[1]!r} files, so "
               "rewrite its suffixes to match the images" if others else ": restore the image or remove the line")
        return DataError(f"{list_path} line {number} names {self.root / relative}, which does not exist{fix}")


def check_listed_suffixes(list_path: Path, listed: list[tuple[int, str]]) -> None:
    """A list naming files that are no image type read here (``IMAGE_SUFFIXES``) fails on all of them at once,
    naming the suffixes read and the suffixes found."""
    odd = [(number, name) for number, name in listed if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES]
    if odd:
        raise DataError(
            f"{list_path} names {len(odd)} file(s) that are no image type read here (line {odd[0][0]}: "
            f"{odd[0][1]!r}): the suffixes read are {' '.join(IMAGE_SUFFIXES)}, the list has "
            f"{suffix_counts(name for _, name in odd)}; convert those images or fix the list"
        )


@SOURCES.register("vggface2")
class VGGFace2Source(FaceSource):
    """VGGFace2 as distributed: ``root/<split>/<class_id>/<image>.jpg`` listed by ``root/<split>_list.txt``.

    ``identity_meta.csv`` (optional) gives each class id a person's name in ``names``.
    """

    def __init__(self, root: str | Path, split: str = "train") -> None:
        self.root = Path(root).expanduser()
        self.split = split
        list_path = self.root / f"{split}_list.txt"
        if not list_path.is_file():
            raise DataError(
                f"VGGFace2 list {list_path} does not exist: expected {split}_list.txt and {split}/ in {self.root}"
            )
        files = _ListedFiles(self.root / split)
        self.keys, self.identities = [], []
        with open(list_path) as handle:
            listed = [(number, line.strip()) for number, line in enumerate(handle, 1) if line.strip()]
        check_listed_suffixes(list_path, listed)
        for number, entry in listed:
            if "/" not in entry:
                raise DataError(f"{list_path} line {number} is not '<class_id>/<image>.jpg': {entry!r}")
            if not files.exists(entry):
                raise files.missing(list_path, number, entry)
            self.keys.append(f"{split}/{entry}")
            self.identities.append(entry.split("/", 1)[0])
        if not self.keys:
            raise DataError(f"{list_path} lists no images")
        self.qualities = [math.nan] * len(self.keys)
        self.names = self._read_meta(self.root / "identity_meta.csv")

    @staticmethod
    def _read_meta(path: Path) -> dict[str, str]:
        """``Class_ID, Name, ...`` with a space after each comma and quoted names, as in the real file."""
        if not path.is_file():
            return {}
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            rows = list(csv.reader(handle, skipinitialspace=True))
        if not rows or [c.strip() for c in rows[0][:2]] != ["Class_ID", "Name"]:
            raise DataError(
                f"{path} does not start with the header 'Class_ID, Name, Sample_Num, Flag, Gender'"
            )
        return {row[0].strip(): row[1].strip() for row in rows[1:] if len(row) >= 2}

    def read_bytes(self, i: int) -> bytes:
        return read_file(self.root, self.keys[i])


CELEBA_PARTITIONS = {"train": 0, "val": 1, "valid": 1, "test": 2}


@SOURCES.register("celeba")
class CelebASource(FaceSource):
    """CelebA: ``img_align_celeba/000001.jpg``, identities from ``identity_CelebA.txt``.

    ``partition`` selects the official split by ``list_eval_partition.txt``: 0/"train", 1/"val", 2/"test";
    None keeps every image.
    """

    def __init__(self, root: str | Path, partition: int | str | None = None) -> None:
        self.root = Path(root).expanduser()
        images = self.root / "img_align_celeba"
        if (images / "img_align_celeba").is_dir():  # the Kaggle archive nests the folder once more
            images = images / "img_align_celeba"
        if not images.is_dir():
            raise DataError(
                f"CelebA image folder {images} does not exist: expected {self.root}/img_align_celeba/*.jpg with "
                f"{self.root}/identity_CelebA.txt (and list_eval_partition.txt to pick a partition)"
            )
        folder = images.relative_to(self.root).as_posix()
        wanted = None
        if partition is not None:
            wanted = self._partition_files(self._partition_number(partition))
        files = _ListedFiles(images)
        identity_path = self.root / "identity_CelebA.txt"
        listed = [(number, name, identity) for number, (name, identity) in self._pairs(identity_path)
                  if wanted is None or name in wanted]
        check_listed_suffixes(identity_path, [(number, name) for number, name, _ in listed])
        self.keys, self.identities = [], []
        for number, name, identity in listed:
            if not files.exists(name):
                raise files.missing(identity_path, number, name)
            self.keys.append(f"{folder}/{name}")
            self.identities.append(identity)
        if not self.keys:
            raise DataError(f"{identity_path} lists no images for partition {partition!r}")
        self.qualities = [math.nan] * len(self.keys)

    @staticmethod
    def _partition_number(partition: int | str) -> int:
        if isinstance(partition, str) and partition.lower() in CELEBA_PARTITIONS:
            return CELEBA_PARTITIONS[partition.lower()]
        if str(partition) in ("0", "1", "2"):
            return int(partition)
        raise DataError(f"unknown CelebA partition {partition!r}: use 0/'train', 1/'val', 2/'test' or None")

    def _partition_files(self, number: int) -> set[str]:
        path = self.root / "list_eval_partition.txt"
        return {name for _, (name, part) in self._pairs(path) if part == str(number)}

    @staticmethod
    def _pairs(path: Path):
        """``<file> <value>`` lines, numbered from 1."""
        if not path.is_file():
            raise DataError(f"CelebA file {path} does not exist: download it beside img_align_celeba/")
        with open(path) as handle:
            for number, line in enumerate(handle, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2:
                    raise DataError(f"{path} line {number} is not '<image> <value>': {line.strip()!r}")
                yield number, (fields[0], fields[1])

    def read_bytes(self, i: int) -> bytes:
        return read_file(self.root, self.keys[i])


def open_source(format: str, root: str | Path, **kwargs) -> FaceSource:
    """Open a data set by format name (``folder``, ``recordio``, ``vggface2``, ``celeba``, ...): every format is
    registered in ``SOURCES`` once this module is imported."""
    return SOURCES.get(format)(root, **kwargs)

"""On-disk formats: insightface RecordIO and .bin, VGGFace2, CelebA, LFW pair lists, the shared LFW subset."""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_formats import (
    IMAGE_KINDS,
    expected_rgb,
    frame,
    image_of_kind,
    irheader,
    jpeg_bytes,
    python2_array_bin_pickle,
    python2_bin_pickle,
    smooth_rgb,
    write_celeba,
    write_image,
    write_insightface_array_bin,
    write_insightface_bin,
    write_lfw_tree,
    write_recordio,
    write_vggface2,
)
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from unlearnkit.data.formats import CelebASource, RecordIOSource, VGGFace2Source, open_source
from unlearnkit.data.sources import IMAGE_SUFFIXES
from unlearnkit.data.verification import (
    PairSet,
    covered_pairs_lfw_subset,
    load_bin,
    load_lfw_pairs,
    load_pairs_file,
    write_pairs,
)
from unlearnkit.errors import DataError
from unlearnkit.utils.safe_pickle import restricted_loads


def shared_data() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return Path(os.environ.get("UNLEARNKIT_SHARED_DATA", default))


def lfw_subset() -> Path:
    root = shared_data() / "lfw_subset"
    if not (root / "pairs_same_covered.txt").is_file():
        pytest.skip(
            f"the shared LFW subset is absent ({root}); set UNLEARNKIT_SHARED_DATA to its parent folder"
        )
    return root


# ---------------------------------------------------------------- image folders


def test_folder_suffixes_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert sorted(IMAGE_SUFFIXES) == sorted(IMG_EXTENSIONS)


def test_folder_reads_every_image_type_once_as_8bit_rgb(tmp_path):
    """One image of each suffix and mode (grey, 16-bit grey, palette, RGBA, CMYK, grey+alpha): each is found and
    decoded to the RGB it shows; 16-bit grey is scaled to 8 bits, not clipped to white."""
    pixels = smooth_rgb(0)
    for name, mode, fmt in IMAGE_KINDS:
        write_image(tmp_path / "s1" / name, image_of_kind(pixels, mode), fmt)
    (tmp_path / "s1" / "README.txt").write_text("not an image")
    source = open_source("folder", tmp_path)
    assert sorted(source.keys) == sorted(f"s1/{name}" for name, _, _ in IMAGE_KINDS)
    for name, mode, fmt in IMAGE_KINDS:
        image = source.load(source.keys.index(f"s1/{name}"))
        assert image.mode == "RGB" and image.size == (32, 32), name
        error = np.abs(np.asarray(image, np.int16) - expected_rgb(image_of_kind(pixels, mode))).max()
        assert error <= (16 if fmt == "JPEG" else 0), (name, error)


def test_folder_without_readable_images_names_suffixes_read_and_found(tmp_path):
    for k in range(3):
        write_image(tmp_path / "alice" / f"{k}.gif", Image.fromarray(smooth_rgb(k)), "GIF")
    (tmp_path / "alice" / "embedding.npy").write_bytes(b"x")
    with pytest.raises(DataError, match=r"no images found under .*: expected root/<identity>/<image> with a suffix "
                       r"among \.jpg \.jpeg \.png \.ppm \.bmp \.pgm \.tif \.tiff \.webp; found '\.gif' \(3\), "
                       r"'\.npy' \(1\) in its identity folders"):
        open_source("folder", tmp_path)
    flat = tmp_path / "flat"
    write_image(flat / "0001.png", Image.fromarray(smooth_rgb(0)), "PNG")
    with pytest.raises(DataError, match=r"found 1 images directly in it, none in identity folders"):
        open_source("folder", flat)


# ---------------------------------------------------------------- RecordIO


@pytest.fixture
def rec_images():
    """Three identities (labels 0, 1, 2) with 3, 2, 4 images, grouped as insightface packs them."""
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    return [(label, jpeg_bytes(n, size=40)) for n, label in enumerate(labels)]


def test_recordio_reads_insightface_layout(tmp_path, rec_images):
    keys = write_recordio(tmp_path, rec_images)
    source = open_source("recordio", tmp_path)
    assert isinstance(source, RecordIOSource)
    assert len(source) == len(rec_images) == len(keys)
    # identity records after the images are not images
    assert source.identities == [str(label) for label, _ in rec_images]
    assert source.identity_names == ["0", "1", "2"]
    for i, (_, data) in enumerate(rec_images):
        assert source.read_bytes(i) == data
        image = source.load(i)
        assert image.mode == "RGB" and image.size == (40, 40)
    assert source.keys[0] == "train.rec#1" and "record 1" in source.describe(0)
    assert all(np.isnan(q) for q in source.qualities)


def test_recordio_without_header_and_with_label_vectors(tmp_path):
    images = [(7, jpeg_bytes(1)), ([3.0, 0.5], jpeg_bytes(2)), (7, jpeg_bytes(3))]
    write_recordio(tmp_path, images, header=False, name="faces")
    source = RecordIOSource(tmp_path, rec="faces.rec", idx="faces.idx")
    assert source.identities == ["7", "3", "7"]
    assert [source.read_bytes(i) for i in range(3)] == [data for _, data in images]


def test_recordio_joins_records_split_at_the_magic(tmp_path):
    # a payload holding the magic word at a 4-byte boundary is written as several parts
    data = jpeg_bytes(5)
    data += (
        b"\0" * (-(len(data) + 24) % 4)
        + struct.pack("<I", 0xCED7230A)
        + b"tail"
        + struct.pack("<I", 0xCED7230A)
    )
    assert (
        len(frame(irheader(0, 1, data))) > len(irheader(0, 1, data)) + 8
    )  # really split: one header per part
    write_recordio(tmp_path, [(0, data), (1, jpeg_bytes(6))])
    source = RecordIOSource(tmp_path)
    assert source.read_bytes(0) == data and source.identities == ["0", "1"]
    assert source.load(0).size == (112, 112)  # trailing bytes after the JPEG end do not disturb decoding


class RecordBytes(Dataset):
    """The minimal Dataset a DataLoader needs: bytes of sample i, and which process read them."""

    def __init__(self, source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        data = self.source.read_bytes(i)
        return i, torch.frombuffer(bytearray(data), dtype=torch.uint8), self.source._pid, os.getpid()


def test_recordio_under_two_dataloader_workers(tmp_path, rec_images):
    write_recordio(tmp_path, rec_images)
    source = RecordIOSource(tmp_path)
    source.read_bytes(0)  # the parent opens its handle before the workers fork
    loader = DataLoader(RecordBytes(source), batch_size=None, num_workers=2, shuffle=True)
    seen = {}
    for i, data, handle_pid, worker_pid in loader:
        seen[int(i)] = bytes(data.numpy())
        assert handle_pid == worker_pid != os.getpid()  # every worker opened its own handle
    assert seen == {i: data for i, (_, data) in enumerate(rec_images)}


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_equal_the_transform_of_each_image(tmp_path, rec_images, workers):
    """``FaceDataset.__getitems__`` decodes a batch straight into one tensor (in shared memory inside
    workers): every slot must be exactly the per-image transform, the sampler's flips honoured."""
    from unlearnkit.data.datamodule import FaceDataset, face_loader
    from unlearnkit.data.robust import ResumableSampler
    from unlearnkit.data.samplers import ShuffleSampler
    from unlearnkit.data.transforms import FaceTransform

    write_recordio(tmp_path, rec_images)
    source, transform = RecordIOSource(tmp_path), FaceTransform(40)
    labels = np.array([label for label, _ in rec_images])
    dataset = FaceDataset(source, np.arange(len(source)), labels, transform, random_flip=True)
    sampler = ResumableSampler(ShuffleSampler(np.arange(len(source)), seed=3), seed=3)
    order = list(sampler)
    batches = list(face_loader(dataset, sampler, batch_size=4, num_workers=workers))
    assert [len(b["index"]) for b in batches] == [4, 4, 1]
    images = torch.cat([b["image"] for b in batches])
    assert torch.cat([b["index"] for b in batches]).tolist() == [i for i, _ in order]
    assert torch.cat([b["label"] for b in batches]).tolist() == [int(labels[i]) for i, _ in order]
    assert any(flip for _, flip in order) and not all(flip for _, flip in order)
    for image, (i, flip) in zip(images, order, strict=True):
        assert torch.equal(image, transform(source.load(i), flip=flip))
    assert not torch.equal(transform(source.load(0), flip=True), transform(source.load(0)))


def test_recordio_truncated_record(tmp_path, rec_images):
    write_recordio(tmp_path, rec_images, header=False)
    rec = tmp_path / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        RecordIOSource(tmp_path)


def test_recordio_whose_last_record_is_cut(tmp_path, rec_images):
    """insightface's layout ends with per-identity records the reader never needs: a download that stopped inside
    the last one is still refused when the file opens."""
    write_recordio(tmp_path, rec_images, header=True)
    rec = tmp_path / "train.rec"
    whole = rec.read_bytes()
    last_key, last_offset = (tmp_path / "train.idx").read_text().split()[-2:]
    assert int(last_key) == len(rec_images) + 3 and int(last_offset) + 40 == len(whole)  # the last identity's record
    for cut in (4, 36):  # inside its payload, inside its 8-byte frame
        rec.write_bytes(whole[:-cut])
        with pytest.raises(DataError, match=rf"train\.rec is truncated: record {last_key} at offset {last_offset} "
                                            r".*re-copy the \.rec"):
            RecordIOSource(tmp_path)


def test_recordio_idx_that_disagrees_with_rec(tmp_path, rec_images):
    write_recordio(tmp_path, rec_images)
    idx = tmp_path / "train.idx"
    lines = idx.read_text().splitlines()
    key, offset = lines[2].split("\t")
    lines[2] = f"{key}\t{int(offset) + 4}"
    idx.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="disagrees"):
        RecordIOSource(tmp_path)
    lines[2] = f"{key}\t{10**9}"
    idx.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="beyond the end"):
        RecordIOSource(tmp_path)


def test_recordio_missing_files_and_bad_magic(tmp_path, rec_images):
    with pytest.raises(DataError, match="train.rec does not exist"):
        RecordIOSource(tmp_path)
    write_recordio(tmp_path, rec_images)
    (tmp_path / "train.idx").unlink()
    with pytest.raises(DataError, match="train.idx does not exist"):
        RecordIOSource(tmp_path)
    write_recordio(tmp_path, rec_images)
    rec = tmp_path / "train.rec"
    rec.write_bytes(b"JUNK" + rec.read_bytes()[4:])
    with pytest.raises(DataError, match="bad magic"):
        RecordIOSource(tmp_path)


# ---------------------------------------------------------------- .bin and safe pickles


def test_insightface_bin_loads(tmp_path):
    bins = [jpeg_bytes(k, size=56) for k in range(6)]
    write_insightface_bin(tmp_path / "lfw.bin", bins, [True, False, True])
    pairs = load_bin(tmp_path / "lfw.bin")
    assert isinstance(pairs, PairSet) and pairs.name == "lfw"
    assert len(pairs) == 3 and pairs.num_images == 6
    assert pairs.pairs == [(0, 1), (2, 3), (4, 5)] and pairs.issame == [True, False, True]
    assert pairs.load(5).size == (56, 56) and pairs.load(5).mode == "RGB"
    assert load_bin(tmp_path / "lfw.bin", image_size=(112, 112)).load(0).size == (112, 112)


def test_python2_bin_loads(tmp_path):
    bins = [jpeg_bytes(k) for k in range(4)]
    (tmp_path / "agedb_30.bin").write_bytes(python2_bin_pickle(bins, [False, True]))
    pairs = load_bin(tmp_path / "agedb_30.bin")
    assert pairs.issame == [False, True] and pairs.images.bins == bins


def test_bin_of_uint8_arrays_loads(tmp_path):
    """build_eval_pack.py's flavour: images as the uint8 arrays of cv2.imencode, pickled by Python 3 (protocol 5,
    numpy._core names) and by Python 2 with numpy 1 (protocol 2, numpy.core names, str data)."""
    jpegs = [jpeg_bytes(k, size=48) for k in range(6)]
    write_insightface_array_bin(tmp_path / "cfp_fp.bin", jpegs, [True, False, True])
    assert pickle.loads((tmp_path / "cfp_fp.bin").read_bytes())[0][0].dtype == np.uint8  # the flavour is real
    (tmp_path / "agedb_30.bin").write_bytes(python2_array_bin_pickle(jpegs, [True, False, True]))
    for name in ("cfp_fp.bin", "agedb_30.bin"):
        pairs = load_bin(tmp_path / name)
        assert pairs.images.bins == jpegs, name
        assert pairs.issame == [True, False, True] and pairs.pairs == [(0, 1), (2, 3), (4, 5)]
        assert pairs.load(5).mode == "RGB" and pairs.load(5).size == (48, 48)


class WritesMarker:
    """What an attacker would put in a .bin: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bin_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(([jpeg_bytes(0), jpeg_bytes(1)], [True, WritesMarker(marker)]), protocol=4)
    assert any(op.name == "STACK_GLOBAL" for op, _, _ in pickletools.genops(payload))  # the attack is real
    (tmp_path / "evil.bin").write_bytes(payload)
    with pytest.raises(DataError, match=r"refuses to load.*(posix|os)\.system.*could run code"):
        load_bin(tmp_path / "evil.bin")
    assert not marker.exists()


class Runs:
    """Unpickling this calls ``function(*args)``: each attack below is checked to be live before it is refused."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def attacks(marker: Path) -> dict[str, bytes]:
    """Pickles that create ``marker`` when loaded unrestricted, each shaped like a .bin of uint8 arrays."""
    import builtins
    import subprocess

    from numpy.testing._private.utils import runstring  # exec()s its argument

    images = [np.frombuffer(jpeg_bytes(k, size=32), np.uint8) for k in range(2)]
    touch = f"open({str(marker)!r}, 'w').close()"

    def bin_with(hidden, protocol=pickle.HIGHEST_PROTOCOL) -> bytes:
        return pickle.dumps(([images[0], hidden, images[1], images[0]], [True, False]), protocol=protocol)

    return {
        "os.system": bin_with(Runs(os.system, f"touch {marker}"), protocol=2),
        "exec": bin_with(Runs(builtins.exec, touch)),
        "eval": bin_with(Runs(builtins.eval, touch)),
        "subprocess": bin_with(Runs(subprocess.call, ["touch", str(marker)])),
        "STACK_GLOBAL (protocol 4)": bin_with(Runs(os.system, f"touch {marker}"), protocol=4),
        "a call hidden in the list": pickle.dumps(([images[0], [[Runs(builtins.eval, touch)]]], [True])),
        "a numpy function that runs code": bin_with(Runs(runstring, touch, {})),
    }


def test_bin_attacks_are_refused_with_one_line(tmp_path):
    marker = tmp_path / "pwned"
    for name, payload in attacks(marker).items():
        pickle.loads(payload)  # live: an unrestricted load runs it
        assert marker.exists(), name
        marker.unlink()
        (tmp_path / "evil.bin").write_bytes(payload)
        with pytest.raises(DataError) as refused:
            load_bin(tmp_path / "evil.bin")
        message = str(refused.value)
        assert "\n" not in message and re.search(r"evil\.bin: refuses to load this pickle: it asks for "
                                                 r"\S+, which could run code; only plain data .* and 1-D uint8 "
                                                 r"numpy arrays are accepted$", message), (name, message)
        assert not marker.exists(), name


def test_bin_arrays_other_than_1d_uint8_are_refused(tmp_path):
    """Only the numpy names that rebuild a 1-D uint8 array resolve, and only with such an array's arguments."""
    jpeg = np.frombuffer(jpeg_bytes(0, size=32), np.uint8)
    cases = {
        "float64": (np.zeros(3), r"a numpy array of dtype 'f8'"),
        "column (N, 1)": (jpeg.reshape(-1, 1), r"an array of shape \(\d+, 1\)"),
        "object": (np.array([b"x", None], dtype=object), r"numpy array of dtype 'O8'"),
        "numpy scalar": (np.uint8(3), r"numpy\._core\.multiarray\.scalar, which could run code"),
        "another numpy name": (np.linspace, r"numpy\.linspace, which could run code"),
    }
    for name, (value, pattern) in cases.items():
        for protocol in (2, 4, 5):
            (tmp_path / "odd.bin").write_bytes(pickle.dumps(([jpeg, value], [True]), protocol=protocol))
            with pytest.raises(DataError, match=r"odd\.bin: refuses to load this pickle: it asks for ") as refused:
                load_bin(tmp_path / "odd.bin")
        assert re.search(pattern, str(refused.value)), (name, str(refused.value))


def test_restricted_loads_plain_data_only():
    data = {"a": [1, 2.5, None], "b": (b"x", "y", True)}
    assert restricted_loads(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)) == data
    with pytest.raises(DataError, match="numpy"):
        restricted_loads(pickle.dumps(np.zeros(3)))
    with pytest.raises(DataError, match="not a readable pickle"):
        restricted_loads(b"\x80\x04garbage")


# ---------------------------------------------------------------- VGGFace2 and CelebA


def test_vggface2(tmp_path):
    people = {"n000002": ("A_Fine_Frenzy", 3), "n000010": ("Aaron Eckhart, Jr.", 2)}
    write_vggface2(tmp_path, people)
    source = open_source("vggface2", tmp_path)
    assert isinstance(source, VGGFace2Source)
    assert source.keys[0] == "train/n000002/0001_01.jpg"
    assert source.identities == ["n000002"] * 3 + ["n000010"] * 2
    assert source.names == {"n000002": "A_Fine_Frenzy", "n000010": "Aaron Eckhart, Jr."}
    assert source.load(4).size == (32, 32)

    write_vggface2(tmp_path, {"n000005": ("Someone", 1)}, split="test")
    assert len(VGGFace2Source(tmp_path, split="test")) == 1


def test_vggface2_list_naming_a_missing_file(tmp_path):
    write_vggface2(tmp_path, {"n000002": ("A", 2)})
    (tmp_path / "train" / "n000002" / "0002_01.jpg").unlink()
    with pytest.raises(DataError, match=r"line 2 names .*n000002/0002_01\.jpg, which does not exist"):
        VGGFace2Source(tmp_path)


def test_lists_naming_other_suffixes(tmp_path):
    """VGGFace2 and CelebA lists may name any image type read (here grey PGM and 16-bit PNG); a list naming files
    of no image type, or naming .jpg files the folder holds as .png, is refused naming what was found."""
    write_vggface2(tmp_path / "vgg", {"n000002": ("A", 2), "n000010": ("B", 1)})
    list_path = tmp_path / "vgg" / "train_list.txt"
    for entry, (suffix, mode, fmt) in zip(list_path.read_text().split(), [(".pgm", "L", "PPM"),
                                                                           (".png", "I;16", "PNG"),
                                                                           (".tif", "CMYK", "TIFF")]):
        old = tmp_path / "vgg" / "train" / entry
        write_image(old.with_suffix(suffix), image_of_kind(smooth_rgb(0), mode), fmt)
        old.unlink()
    list_path.write_text(list_path.read_text().replace("n000002/0001_01.jpg", "n000002/0001_01.pgm")
                         .replace("n000002/0002_01.jpg", "n000002/0002_01.png"))
    with pytest.raises(DataError, match=r"line 3 names .*n000010/0001_01\.jpg, which does not exist; the folder "
                       r"holds 0001_01\.tif instead: the list names '\.jpg' files, so rewrite its suffixes"):
        VGGFace2Source(tmp_path / "vgg")
    list_path.write_text(list_path.read_text().replace("n000010/0001_01.jpg", "n000010/0001_01.tif"))
    source = VGGFace2Source(tmp_path / "vgg")
    assert [source.load(i).mode for i in range(3)] == ["RGB"] * 3
    assert np.asarray(source.load(1)).max() < 255  # 16-bit grey scaled, not saturated

    rows = [("000001.jpg", 1, 0), ("000002.jpg", 1, 0), ("000003.jpg", 2, 0)]
    write_celeba(tmp_path / "celeba", rows)
    identities = tmp_path / "celeba" / "identity_CelebA.txt"
    identities.write_text(identities.read_text().replace(".jpg", ".npy"))
    with pytest.raises(DataError, match=r"identity_CelebA\.txt names 3 file\(s\) that are no image type read here "
                       r"\(line 1: '000001\.npy'\): the suffixes read are \.jpg .*\.webp, the list has '\.npy' \(3\)"):
        CelebASource(tmp_path / "celeba")


def test_celeba(tmp_path):
    rows = [("000001.jpg", 2880, 0), ("000002.jpg", 2937, 0), ("000003.jpg", 2880, 1), ("000004.jpg", 12, 2)]
    write_celeba(tmp_path, rows)
    everything = open_source("celeba", tmp_path)
    assert isinstance(everything, CelebASource)
    assert everything.keys[0] == "img_align_celeba/000001.jpg"
    assert everything.identities == ["2880", "2937", "2880", "12"]
    assert CelebASource(tmp_path, partition=0).identities == ["2880", "2937"]
    assert CelebASource(tmp_path, partition="val").keys == ["img_align_celeba/000003.jpg"]
    assert CelebASource(tmp_path, partition="test").load(0).mode == "RGB"
    with pytest.raises(DataError, match="unknown CelebA partition"):
        CelebASource(tmp_path, partition="holdout")
    (tmp_path / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DataError, match="000002.jpg, which does not exist"):
        CelebASource(tmp_path)


# ---------------------------------------------------------------- LFW pairs and pair lists

HEADER_PAIRS = """2\t2
Alice\t1\t2
Bob\t1\t3
Alice\t1\tBob\t2
Carol\t1\tAlice\t3
Carol\t1\t2
Bob\t2\t3
Bob\t3\tCarol\t2
Alice\t2\tCarol\t1
"""


def test_lfw_pairs_with_fold_header(tmp_path):
    write_lfw_tree(tmp_path, {"Alice": 3, "Bob": 3, "Carol": 2})
    (tmp_path / "pairs.txt").write_text(HEADER_PAIRS)
    pairs = load_lfw_pairs(tmp_path / "pairs.txt", tmp_path)
    assert len(pairs) == 8
    assert pairs.issame == [True, True, False, False, True, True, False, False]
    assert pairs.folds == [0, 0, 0, 0, 1, 1, 1, 1]
    assert pairs.keys[pairs.pairs[2][1]] == "Bob/Bob_0002.jpg"
    assert pairs.num_images == len(set(pairs.keys)) == 8
    assert pairs.load(0).size == (32, 32)


def test_lfw_pairs_plain_form_and_missing_images(tmp_path):
    write_lfw_tree(tmp_path, {"Alice": 2, "Bob": 1})
    (tmp_path / "pairs.txt").write_text("Alice 1 2\nAlice 1 Bob 1\nBob 1 2\n")
    with pytest.raises(DataError, match=r"line 3 names .*Bob_0002\.jpg, which does not exist"):
        load_lfw_pairs(tmp_path / "pairs.txt", tmp_path)
    pairs = load_lfw_pairs(tmp_path / "pairs.txt", tmp_path, skip_missing=True)
    assert pairs.issame == [True, False] and pairs.skipped == 1 and pairs.folds is None
    (tmp_path / "short.txt").write_text(HEADER_PAIRS.splitlines()[0] + "\nAlice 1 2\n")
    with pytest.raises(DataError, match="incomplete"):
        load_lfw_pairs(tmp_path / "short.txt", tmp_path)


def test_pairs_file_round_trip(tmp_path):
    write_lfw_tree(tmp_path, {"Alice": 3, "Bob": 3, "Carol": 2})
    (tmp_path / "pairs.txt").write_text(HEADER_PAIRS)
    pairs = load_lfw_pairs(tmp_path / "pairs.txt", tmp_path)
    write_pairs(pairs, tmp_path / "used_pairs.txt")
    again = load_pairs_file(tmp_path / "used_pairs.txt", tmp_path)
    assert (again.keys, again.pairs, again.issame, again.folds) == (
        pairs.keys,
        pairs.pairs,
        pairs.issame,
        pairs.folds,
    )
    (tmp_path / "simple.txt").write_text(
        "Alice/Alice_0001.jpg Bob/Bob_0001.jpg 0\nBob/Bob_0001.jpg Bob/Bob_0002.jpg true\n"
    )
    simple = load_pairs_file(tmp_path / "simple.txt", tmp_path)
    assert simple.issame == [False, True] and simple.pairs == [(0, 1), (1, 2)] and simple.folds is None


def test_pairset_from_decoded_images():
    images = [Image.new("L", (8, 8), color=c) for c in (0, 100, 200)]
    pairs = PairSet(images, pairs=[(0, 1), (1, 2)], issame=[True, False], name="toy")
    assert pairs.keys == ["toy#0", "toy#1", "toy#2"] and pairs.load(2).mode == "RGB"
    with pytest.raises(DataError, match="outside"):
        PairSet(images, pairs=[(0, 3)], issame=[True])


# ---------------------------------------------------------------- the shared LFW subset


def test_lfw_subset_covered_pairs(tmp_path):
    root = lfw_subset()
    pairs = covered_pairs_lfw_subset(root, seed=3)
    assert len(pairs) == 522 and sum(pairs.issame) == 261
    identity = [key.split("/")[0] for key in pairs.keys]
    for (i, j), same in zip(pairs.pairs, pairs.issame):
        assert (identity[i] == identity[j]) == same
    assert pairs.folds == sorted(pairs.folds)  # fold by fold, as pairs.txt
    assert covered_pairs_lfw_subset(root, seed=3).pairs == pairs.pairs
    assert covered_pairs_lfw_subset(root, seed=4).pairs != pairs.pairs
    assert len(covered_pairs_lfw_subset(root, seed=3, n_negative=100)) == 361
    first = pairs.pairs[0]
    assert pairs.load(first[0]).size == (250, 250)
    write_pairs(pairs, tmp_path / "pairs_used.txt")
    assert load_pairs_file(tmp_path / "pairs_used.txt", root).pairs == pairs.pairs


def test_lfw_subset_official_pairs_txt():
    root = lfw_subset()
    with pytest.raises(DataError, match="does not exist"):
        load_lfw_pairs(root / "pairs.txt", root)
    pairs = load_lfw_pairs(root / "pairs.txt", root, skip_missing=True)
    assert len(pairs) == 261 and all(pairs.issame) and pairs.skipped == 6000 - 261

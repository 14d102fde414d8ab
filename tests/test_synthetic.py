"""The synthetic face set: layout, determinism, re-runs, and that identity is not readable from colour."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from unlearnkit.data.synthetic import generate_synthetic, main
from unlearnkit.errors import DataError

SMALL = {"num_identities": 12, "images_per_identity": 6, "image_size": 32, "progress": False}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("syn") / "set", seed=3, workers=1, **SMALL)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _manifest(root):
    with open(root / "manifest.csv", newline="") as f:
        return list(csv.reader(f))


def test_layout_and_manifest(small_set):
    rows = _manifest(small_set)
    assert rows[0] == ["path", "identity", "degradation"]
    rows = rows[1:]
    assert len(rows) == 12 * 6
    assert rows[0][:2] == ["id00000/000.jpg", "id00000"]
    assert sorted({r[1] for r in rows}) == [f"id{i:05d}" for i in range(12)]
    for path, identity, degradation in rows:
        assert path.split("/")[0] == identity and (small_set / path).is_file()
        assert 0.0 <= float(degradation) <= 1.0 and len(degradation.split(".")[1]) == 4
    folders = [p for p in small_set.iterdir() if p.is_dir()]
    assert len(folders) == 12 and all(len(list(f.glob("*.jpg"))) == 6 for f in folders)
    params = json.loads((small_set / "synthetic.json").read_text())
    assert params["num_identities"] == 12 and params["seed"] == 3
    degradations = [float(r[2]) for r in rows]
    assert min(degradations) < 0.2 and max(degradations) > 0.5  # a spread of quality, not a constant


def test_images_have_requested_size(small_set):
    for path in list(small_set.glob("id*/*.jpg"))[:10]:
        with Image.open(path) as image:
            assert image.size == (32, 32) and image.mode == "RGB"


def test_same_seed_is_byte_identical_across_worker_counts(small_set, tmp_path):
    again = generate_synthetic(tmp_path / "again", seed=3, workers=2, **SMALL)
    assert _files(again) == _files(small_set)
    other = generate_synthetic(tmp_path / "other", seed=4, workers=2, **SMALL)
    theirs, ours = _files(other), _files(small_set)
    assert theirs.keys() == ours.keys()
    assert sum(theirs[k] != ours[k] for k in ours if k.endswith(".jpg")) == 12 * 6


def test_rerun_is_a_noop(small_set):
    before = {p: p.stat().st_mtime_ns for p in small_set.rglob("*")}
    assert generate_synthetic(small_set, seed=3, workers=1, **SMALL) == small_set
    assert {p: p.stat().st_mtime_ns for p in small_set.rglob("*")} == before


def test_interrupted_run_is_completed(small_set, tmp_path):
    root = generate_synthetic(tmp_path / "set", seed=3, workers=1, **SMALL)
    (root / "manifest.csv").unlink()
    (root / "id00003" / "002.jpg").unlink()
    generate_synthetic(root, seed=3, workers=1, **SMALL)
    assert _files(root) == _files(small_set)


def test_mismatched_parameters_or_foreign_files_raise(small_set, tmp_path):
    with pytest.raises(DataError, match="other parameters.*seed"):
        generate_synthetic(small_set, seed=4, workers=1, **SMALL)
    with pytest.raises(DataError, match="other parameters.*image_size"):
        generate_synthetic(small_set, seed=3, workers=1, **{**SMALL, "image_size": 40})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        generate_synthetic(foreign, **SMALL)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_identity_is_not_in_the_mean_colour(small_set):
    """Nearest neighbour on mean colour must fail, while one identity's images still differ from each other."""
    rows = _manifest(small_set)[1:]
    images = np.stack([np.asarray(Image.open(small_set / r[0]), dtype=np.float64) for r in rows])
    labels = np.array([r[1] for r in rows])
    colour = images.mean(axis=(1, 2))
    dist = ((colour[:, None] - colour[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    accuracy = (labels[dist.argmin(1)] == labels).mean()
    assert accuracy < 0.3, f"mean colour identifies {accuracy:.0%} of images"
    same = images[labels == "id00000"]
    assert all(np.abs(same[0] - other).mean() > 5 for other in same[1:])


def test_identity_is_in_the_face(small_set):
    """With colour and brightness removed, raw grey pixels already find the same person far above chance."""
    rows = _manifest(small_set)[1:]
    grey = np.stack([np.asarray(Image.open(small_set / r[0]), dtype=np.float64).mean(axis=2).ravel() for r in rows])
    grey = (grey - grey.mean(1, keepdims=True)) / grey.std(1, keepdims=True)
    labels = np.array([r[1] for r in rows])
    similarity = grey @ grey.T
    np.fill_diagonal(similarity, -np.inf)
    accuracy = (labels[similarity.argmax(1)] == labels).mean()
    assert accuracy > 0.35, f"grey pixels find the same identity for only {accuracy:.0%} of images"


def test_command_line(tmp_path, capsys):
    main([str(tmp_path / "cli"), "--identities", "2", "--images", "3", "--size", "24", "--quiet"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert len(_manifest(tmp_path / "cli")) == 1 + 2 * 3
    with pytest.raises(SystemExit, match="other parameters"):
        main([str(tmp_path / "cli"), "--identities", "3", "--images", "3", "--size", "24", "--quiet"])

"""A procedural face-like data set with known identities and a known degradation level per image.

Real face sets (CASIA-WebFace, VGGFace2) are large and licence-bound; this stand-in lets every part of the
pipeline run anywhere, in CASIA-WebFace's layout ``root/<identity>/<n>.jpg``. Identity lives in geometry and
texture (head, hair and feature shapes, skin and hair patterns, moles, birthmarks); pose, lighting, colour cast,
expression, clothes and background change per image, so a model has to learn the person rather than read off
a colour. Each image also gets a degradation level ``d`` in [0, 1] (occlusion, down-sampling, blur, noise,
all growing with ``d``), written to ``manifest.csv`` as ground-truth quality (quality = 1 - d).

Every identity and every image has its own random stream seeded by ``(seed, identity, image)``, so the
output is byte-identical for the same parameters whatever the number of worker processes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from unlearnkit.errors import ConfigError, DataError, UnlearnkitError

GENERATOR_VERSION = 1  # bump when the drawing changes, so old sets on disk are not taken for new ones
JPEG_QUALITY = 95
PARAMS_FILE = "synthetic.json"
MANIFEST_FILE = "manifest.csv"

SKIN_LIGHT = np.array([0.96, 0.80, 0.69])
SKIN_DARK = np.array([0.36, 0.24, 0.17])
HAIR_COLOURS = np.array(
    [[0.08, 0.06, 0.05], [0.30, 0.19, 0.10], [0.55, 0.38, 0.20], [0.85, 0.72, 0.45], [0.60, 0.28, 0.12],
     [0.70, 0.70, 0.70]]
)
IRIS_COLOURS = np.array([[0.30, 0.18, 0.08], [0.25, 0.45, 0.70], [0.30, 0.50, 0.30], [0.45, 0.45, 0.50]])


def _identity(seed: int, index: int) -> dict:
    """The fixed traits of one person: shapes, positions, colours and texture, from (seed, index) only."""
    rng = np.random.default_rng([seed, index, 1])
    u = rng.uniform
    p = {
        "head_a": u(0.38, 0.56), "head_b": u(0.54, 0.74), "head_y": u(0.0, 0.12), "taper": u(0.0, 0.45),
        "eye_y": u(-0.20, 0.02), "eye_x": u(0.14, 0.27), "eye_w": u(0.055, 0.11), "eye_h": u(0.028, 0.06),
        "eye_tilt": u(-0.3, 0.3), "iris_r": u(0.022, 0.045),
        "brow_gap": u(0.06, 0.15), "brow_len": u(0.06, 0.14), "brow_thick": u(0.018, 0.055),
        "brow_curve": u(-0.01, 0.05), "brow_slope": u(-0.3, 0.3), "brow_dx": u(-0.03, 0.03),
        "nose_len": u(0.14, 0.32), "nose_w": u(0.035, 0.09), "nose_bend": u(-0.04, 0.04),
        "mouth_gap": u(0.08, 0.20), "mouth_w": u(0.09, 0.20), "mouth_thick": u(0.022, 0.05),
        "mouth_curve": u(-0.03, 0.03),
        "ear_y": u(-0.05, 0.12), "ear_a": u(0.04, 0.09), "ear_b": u(0.07, 0.13),
        "neck_w": u(0.16, 0.32),
        "hair_vol": u(0.0, 0.14), "hairline": u(0.25, 0.8), "fringe": u(-0.6, 0.8), "part": u(-0.35, 0.35),
        "side_w": u(0.6, 1.0), "sideburn": u(-0.15, 0.15), "long_hair": bool(rng.random() < 0.3),
        "hair_len": u(0.5, 1.1), "hair_freq": u(15, 45), "hair_angle": u(0, math.pi), "hair_amp": u(0.08, 0.3),
        "bald": bool(rng.random() < 0.1), "beard": float(u(0.3, 0.85)) if rng.random() < 0.25 else 0.0,
        "glasses": bool(rng.random() < 0.15), "glasses_r": u(1.1, 1.5), "glasses_colour": u(0.0, 0.6, 3),
        "skin": SKIN_LIGHT + u(0, 1) * (SKIN_DARK - SKIN_LIGHT) + u(-0.04, 0.04, 3),
        "hair": HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * u(0.8, 1.2) + u(-0.04, 0.04, 3),
        "iris": IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] * u(0.8, 1.2),
        "lip": np.array([u(0.65, 0.95), u(0.35, 0.6), u(0.35, 0.6)]),
        "blush": u(0.0, 0.25),
        # skin texture: two gratings fixed to the face, so they move with the pose
        "tex_freq": u(14, 40, 2), "tex_angle": u(0, math.pi, 2), "tex_phase": u(0, 2 * math.pi, 2),
        "tex_amp": u(0.06, 0.16, 2),
        "moles": [(u(-0.8, 0.8), u(-0.6, 0.8), u(0.025, 0.05)) for _ in range(rng.integers(0, 6))],
        # birthmark-like patches, darker or lighter than the skin: bold, pose-following, colour-free cues
        "marks": [
            (u(-0.7, 0.7), u(-0.5, 0.75), u(0.06, 0.15), u(0.06, 0.15), u(0, math.pi),
             u(0.5, 0.75) if rng.random() < 0.5 else u(1.25, 1.5))
            for _ in range(rng.integers(2, 5))
        ],
    }
    if p["bald"]:
        p["hairline"], p["hair_vol"], p["long_hair"] = 1.3, 0.0, False
    # float32 throughout: half the memory traffic of float64, and numpy scalars would otherwise promote
    return {k: v.astype(np.float32) if isinstance(v, np.ndarray) else v for k, v in p.items()}


def _alpha(sdf: np.ndarray, px: float) -> np.ndarray:
    """Coverage of a shape from its (approximate) signed distance, with an edge one pixel wide."""
    return np.clip(0.5 - sdf / px, 0.0, 1.0)


def _paint(img: np.ndarray, alpha: np.ndarray, colour) -> None:
    """Alpha-composite a colour (RGB triple or image) over ``img`` in place."""
    img += alpha[..., None] * (np.asarray(colour, dtype=np.float32) - img)


def _ellipse(x, y, cx, cy, a, b, theta=0.0):
    dx, dy = x - cx, y - cy
    if theta:
        c, s = math.cos(theta), math.sin(theta)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    return (np.sqrt((dx / a) ** 2 + (dy / b) ** 2) - 1.0) * min(a, b)


def _stroke(x, y, cx, cy, half_len, thick, curve, slope):
    """A curved stroke tapering to its ends (brows, lips); ``curve`` > 0 arches it upwards."""
    t = (x - cx) / half_len
    centre = cy + slope * (x - cx) - curve * (1.0 - t * t)
    half = 0.5 * thick * (1.0 - 0.6 * np.minimum(t * t, 1.0))
    return np.maximum(np.abs(y - centre) - half, np.abs(x - cx) - half_len)


def _grating(x, y, freq, angle, phase):
    return np.sin(freq * (x * math.cos(angle) + y * math.sin(angle)) + phase)


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear (triangle-filter) resampling as a matrix; the filter widens when shrinking, to avoid aliasing."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    w = np.clip(1.0 - np.abs(np.arange(n_in) + 0.5 - centres[:, None]) / support, 0.0, None)
    return w / w.sum(axis=1, keepdims=True)


def _gauss_matrix(n: int, sigma: float) -> np.ndarray:
    i = np.arange(n)
    w = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    return w / w.sum(axis=1, keepdims=True)


def _background(rng, X, Y) -> np.ndarray:
    """A random colour with a gradient and a few blobs: nothing here belongs to the identity."""
    base, other = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    angle = rng.uniform(0, 2 * math.pi)
    t = np.clip(0.5 + 0.5 * (X * math.cos(angle) + Y * math.sin(angle)) * rng.uniform(0, 1), 0, 1)
    img = (base + t[..., None] * (other - base)).astype(np.float32)
    px = X[0, 1] - X[0, 0]
    for _ in range(rng.integers(0, 3)):
        cx, cy, a, b = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5)
        _paint(img, _alpha(_ellipse(X, Y, cx, cy, a, b), px), rng.uniform(0, 1, 3))
    return img


def _draw_face(img, p, rng, x, y, px) -> None:
    """Draw one person (fixed traits ``p``) with this image's expression, in face coordinates ``x, y``."""
    yaw = rng.uniform(-1, 1)  # features slide sideways against the head outline, like a turned head
    fx = x - 0.07 * yaw
    skin = p["skin"]
    hair_tex = 1.0 + p["hair_amp"] * _grating(x, y, p["hair_freq"], p["hair_angle"], 0.0)
    hair = p["hair"] * hair_tex[..., None]
    head_y, a, b = p["head_y"], p["head_a"], p["head_b"]
    vol = p["hair_vol"]
    outer = _ellipse(x, y, 0.0, head_y - 0.3 * vol, a + vol, b + 1.3 * vol)

    if p["long_hair"]:
        back = np.maximum(np.abs(x) - (a + vol), np.maximum(y - (head_y + p["hair_len"]), head_y - y))
        _paint(img, _alpha(np.minimum(back, outer), px), hair)
    neck = np.maximum(np.abs(x) - p["neck_w"], head_y - y)
    _paint(img, _alpha(neck, px), skin * 0.8)
    for side in (-1, 1):
        ear = _ellipse(x, y, side * a * 0.97, p["eye_y"] + p["ear_y"], p["ear_a"], p["ear_b"])
        _paint(img, _alpha(ear, px), skin * 0.88)

    # head: an ellipse whose lower half narrows towards the chin, with the person's skin texture
    yy = y - head_y
    width = a * (1.0 - p["taper"] * np.clip(yy / b, 0.0, 1.0) ** 2)
    head = (np.sqrt((x / width) ** 2 + (yy / b) ** 2) - 1.0) * min(a, b)
    tex = 1.0
    for k in range(2):
        tex = tex + p["tex_amp"][k] * _grating(x, y, p["tex_freq"][k], p["tex_angle"][k], p["tex_phase"][k])
    _paint(img, _alpha(head, px), skin * tex[..., None])
    inside = _alpha(head, px)
    for mx, my, ma, mb, angle, factor in p["marks"]:
        mark = _ellipse(x, y, mx * a, head_y + my * b, ma, mb, angle)
        _paint(img, inside * _alpha(mark, 2 * px), np.clip(skin * factor, 0.0, 1.0) * tex[..., None])
    for mx, my, r in p["moles"]:
        _paint(img, inside * _alpha(_ellipse(x, y, mx * a, head_y + my * b, r, r), px), skin * 0.45)
    for side in (-1, 1):
        cheek = _ellipse(fx, y, side * (p["eye_x"] + 0.05), p["eye_y"] + 0.2, 0.1, 0.07)
        _paint(img, p["blush"] * _alpha(cheek, 3 * px), np.array([0.85, 0.35, 0.35]))

    nose_y = p["eye_y"] + p["nose_len"]
    mouth_y = nose_y + p["mouth_gap"]
    if p["beard"]:
        beard = np.maximum(head, nose_y + 0.06 - y)
        _paint(img, p["beard"] * _alpha(beard, 2 * px), hair)

    # eyes, with this image's openness and gaze
    openness = rng.uniform(0.55, 1.1) if rng.random() < 0.85 else rng.uniform(0.15, 0.5)
    gaze = rng.uniform(-0.4, 0.4) * p["eye_w"]
    for side in (-1, 1):
        ex, tilt = side * p["eye_x"], side * p["eye_tilt"]
        eye_h = p["eye_h"] * openness
        white = _ellipse(fx, y, ex, p["eye_y"], p["eye_w"], eye_h, tilt)
        _paint(img, _alpha(white, px), np.array([0.95, 0.95, 0.93]))
        iris = np.maximum(_ellipse(fx, y, ex + gaze, p["eye_y"], p["iris_r"], p["iris_r"]), white)
        _paint(img, _alpha(iris, px), p["iris"])
        pupil = np.maximum(_ellipse(fx, y, ex + gaze, p["eye_y"], 0.4 * p["iris_r"], 0.4 * p["iris_r"]), white)
        _paint(img, _alpha(pupil, px), np.array([0.03, 0.03, 0.03]))
        lid = np.abs(white) - 0.006
        _paint(img, 0.8 * _alpha(lid, px), skin * 0.35)

    # brows, raised or lowered by the expression
    raise_ = rng.normal(0.0, 0.02)
    for side in (-1, 1):
        brow = _stroke(fx * side, y, p["eye_x"] + p["brow_dx"], p["eye_y"] - p["brow_gap"] - raise_,
                       p["brow_len"], p["brow_thick"], p["brow_curve"] + 0.5 * raise_, p["brow_slope"])
        _paint(img, _alpha(brow, px), p["hair"] * 0.8)

    # nose: a bridge line, a shaded tip and two nostrils
    nx = x - 0.1 * yaw
    bridge = _stroke(y, nx, 0.5 * (p["eye_y"] + nose_y), 0.0, 0.5 * p["nose_len"], 0.02, p["nose_bend"], 0.0)
    _paint(img, 0.35 * _alpha(bridge, px), skin * 0.6)
    _paint(img, 0.3 * _alpha(_ellipse(nx, y, 0.0, nose_y - 0.01, p["nose_w"], 0.035), 2 * px), skin * 0.7)
    for side in (-1, 1):
        nostril = _ellipse(nx, y, side * 0.55 * p["nose_w"], nose_y + 0.01, 0.018, 0.012)
        _paint(img, _alpha(nostril, px), skin * 0.3)

    # mouth: smile/frown and opening vary per image
    curve = p["mouth_curve"] + rng.normal(0.0, 0.025)
    opening = rng.uniform(0.0, 0.04) if rng.random() < 0.3 else 0.0
    if opening:
        inner = _ellipse(fx, y, 0.0, mouth_y + 0.5 * opening, 0.8 * p["mouth_w"], opening)
        _paint(img, _alpha(inner, px), np.array([0.25, 0.05, 0.05]))
    for lip_y in (mouth_y - 0.3 * p["mouth_thick"], mouth_y + 0.3 * p["mouth_thick"] + opening):
        lip = _stroke(fx, y, 0.0, lip_y, p["mouth_w"], 0.7 * p["mouth_thick"], -curve, 0.0)
        _paint(img, _alpha(lip, px), skin * p["lip"])

    # hair on top: inside the hair outline, above the (parted, fringed) hairline or at the sides
    hairline = head_y - b * p["hairline"] + p["fringe"] * 0.3 * x * x + p["part"] * 0.2 * x
    sides = np.maximum(y - (p["eye_y"] + p["sideburn"]), p["side_w"] * a - np.abs(x))
    hair_sdf = np.maximum(outer, np.minimum(y - hairline, sides))
    _paint(img, _alpha(hair_sdf, px), hair)

    if p["glasses"]:
        radius = p["glasses_r"] * p["eye_w"]
        for side in (-1, 1):
            ring = np.abs(_ellipse(fx, y, side * p["eye_x"], p["eye_y"], radius, 0.8 * radius)) - 0.008
            _paint(img, _alpha(ring, px), p["glasses_colour"])
        bridge = np.maximum(np.abs(y - p["eye_y"] + 0.02) - 0.008, np.abs(fx) - (p["eye_x"] - radius))
        _paint(img, _alpha(bridge, px), p["glasses_colour"])


def render(seed: int, identity: int, image: int, size: int) -> tuple[np.ndarray, float]:
    """One image (uint8, size×size×3) of person ``identity`` and its degradation level in [0, 1]."""
    p = _identity(seed, identity)
    rng = np.random.default_rng([seed, identity, 2, image])
    degradation = round(float(rng.beta(1.0, 3.0)), 4)  # mostly light, some heavy: P(d > 0.5) = 1/8

    px = 2.0 / size  # one pixel in image units (the image spans [-1, 1]); shapes get edges this soft
    coords = ((np.arange(size) + 0.5) * px - 1.0).astype(np.float32)
    X, Y = np.meshgrid(coords, coords)
    img = _background(rng, X, Y)

    # pose: the face is drawn in its own coordinates, shifted, scaled and rotated in the image
    angle = float(np.clip(rng.normal(0.0, 0.13), -0.3, 0.3))
    scale = rng.uniform(1.05, 1.3)
    tx, ty = rng.uniform(-0.07, 0.07), rng.uniform(-0.12, 0.02)
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = X - tx, Y - ty
    x, y = (c * dx + s * dy) / scale, (-s * dx + c * dy) / scale
    shoulders = _ellipse(X - tx, Y, 0.0, 1.25, rng.uniform(0.6, 1.0), 0.5)
    _paint(img, _alpha(shoulders, px), rng.uniform(0.0, 1.0, 3))
    _draw_face(img, p, rng, x, y, px / scale)

    # lighting: brightness, colour cast, a directional gradient, contrast and gamma
    shade = 1.0 + rng.uniform(0.0, 0.3) * _grating(X, Y, 1.0, rng.uniform(0, 2 * math.pi), 0.0)
    img *= (shade[..., None] * rng.uniform(0.8, 1.2)) * rng.uniform(0.93, 1.07, 3)
    mean = img.mean()
    img = np.clip(mean + (img - mean) * rng.uniform(0.88, 1.12), 0.0, 1.0) ** rng.uniform(0.88, 1.14)

    # degradation, every part growing with d: occluder, lost resolution, blur, noise. Noise and occluders
    # dominate at high d because they make an embedding unstable; blur alone would make it smoother
    d = degradation
    if rng.random() < 1.5 * d:
        cx, cy = rng.uniform(-0.45, 0.45, 2).tolist()
        half = ((0.15 + 0.35 * d) * rng.uniform(0.7, 1.3, 2)).tolist()
        if rng.random() < 0.5:
            occluder = np.maximum(np.abs(X - cx) - half[0], np.abs(Y - cy) - half[1])
        else:
            occluder = _ellipse(X, Y, cx, cy, half[0], half[1])
        _paint(img, _alpha(occluder, px), rng.uniform(0.0, 1.0, 3))
    low = max(4, round(size / (1.0 + d)))
    blur = _gauss_matrix(size, 1e-3 + 0.7 * d * size / 48.0)
    op = (blur @ _resize_matrix(low, size) @ _resize_matrix(size, low)).astype(np.float32)
    # numpy's own loops, not BLAS: threaded BLAS crawls on a busy machine and may round differently
    planes = np.ascontiguousarray(img.transpose(2, 0, 1))
    img = np.einsum("ij,cjk->cik", op, np.einsum("ij,ckj->cki", op, planes)).transpose(1, 2, 0)
    img += rng.normal(0.0, 0.005 + 0.05 * d + 0.08 * d * d, img.shape)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), degradation


def _write_identity(task: tuple) -> list[tuple[str, str, float]]:
    """Write all images of one identity; returns its manifest rows (runs in a worker process)."""
    root, seed, index, images, size, name, file_width = task
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in range(images):
        pixels, degradation = render(seed, index, n, size)
        file = f"{n:0{file_width}d}.jpg"
        Image.fromarray(pixels).save(folder / file, "JPEG", quality=JPEG_QUALITY)
        rows.append((f"{name}/{file}", name, degradation))
    return rows


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check_root(root: Path, params: dict) -> bool:
    """True if ``root`` already holds this exact set; raises if it holds anything else."""
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return False
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a directory: pass a new or empty directory for the synthetic set")
    try:
        found = json.loads((root / PARAMS_FILE).read_text())
    except (OSError, ValueError):
        raise DataError(
            f"{root} is not empty and holds no synthetic set: pass a new or empty directory, or delete it"
        ) from None
    if found != params:
        changed = ", ".join(f"{k}={found.get(k)}→{v}" for k, v in params.items() if found.get(k) != v)
        raise DataError(
            f"{root} holds a synthetic set made with other parameters ({changed}): "
            "pass another directory or delete this one"
        )
    return (root / MANIFEST_FILE).is_file()  # without it, an earlier run stopped: generate again over it


def generate_synthetic(
    root,
    num_identities: int = 100,
    images_per_identity: int = 20,
    image_size: int = 48,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the synthetic set under ``root`` (or return at once if that exact set is already there).

    Layout: ``root/id00000/000.jpg``…, ``root/manifest.csv`` (``path,identity,degradation``, written last)
    and ``root/synthetic.json`` (the parameters). Same parameters and seed give byte-identical files.
    """
    if num_identities < 1 or images_per_identity < 1:
        raise ConfigError("the synthetic set needs at least one identity and one image per identity")
    if image_size < 16:
        raise ConfigError(f"image_size={image_size} is too small to draw a face: use 16 or more")
    if seed < 0:
        raise ConfigError(f"seed={seed} must be non-negative")
    root = Path(root).expanduser()
    params = {
        "generator": "unlearnkit.synthetic", "version": GENERATOR_VERSION, "num_identities": num_identities,
        "images_per_identity": images_per_identity, "image_size": image_size, "seed": seed,
        "jpeg_quality": JPEG_QUALITY,
    }
    if _check_root(root, params):
        return root
    root.mkdir(parents=True, exist_ok=True)
    _write_atomic(root / PARAMS_FILE, json.dumps(params, indent=2) + "\n")

    id_width = max(5, len(str(num_identities - 1)))
    file_width = max(3, len(str(images_per_identity - 1)))
    tasks = [
        (str(root), seed, i, images_per_identity, image_size, f"id{i:0{id_width}d}", file_width)
        for i in range(num_identities)
    ]
    workers = max(1, min(workers or os.cpu_count() or 1, num_identities))
    rows = []
    with tqdm(total=num_identities, desc="synthetic faces", unit="id", disable=not progress) as bar:
        if workers == 1:
            results = map(_write_identity, tasks)
        else:
            pool = multiprocessing.Pool(workers)
            results = pool.imap(_write_identity, tasks, chunksize=max(1, min(16, num_identities // (8 * workers))))
        try:
            for identity_rows in results:
                rows.extend(identity_rows)
                bar.update()
        finally:
            if workers > 1:
                pool.terminate()
                pool.join()

    tmp = root / f".{MANIFEST_FILE}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "identity", "degradation"])
        writer.writerows((path, name, f"{d:.4f}") for path, name, d in rows)
    os.replace(tmp, root / MANIFEST_FILE)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m unlearnkit.data.synthetic", description="Write the synthetic face set to ROOT."
    )
    parser.add_argument("root")
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--images", type=int, default=20, help="images per identity")
    parser.add_argument("--size", type=int, default=48, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        root = generate_synthetic(args.root, args.identities, args.images, args.size, args.seed, args.workers,
                                  progress=not args.quiet)
    except UnlearnkitError as err:
        sys.exit(f"error: {err}")
    print(root)


if __name__ == "__main__":
    main()

"""Write a synthetic dataset in the real OSIE-SR file formats (a benchmark and demo fixture).

    python bench/make_osie_like.py --out /tmp/osie-like --images 40
    python cli.py dissect --dataset osie-sr --data-root /tmp/osie-like --layers conv4_1:conv5_3

Flat OSIE layout with He et al.'s labelme export beside it::

    OUT/stimuli/<1001..>.jpg          800 x 600 RGB scenes: smooth noise + ~8 coloured ellipses
    OUT/fixations.mat                 OSIE's struct: fixations(i).img, .subjects(s).fix_x/fix_y/fix_duration
    OUT/SegmentationObject/<id>.npy   int32 instance ids (0 = background), one per ellipse
    OUT/SegmentationClass/<id>.npy    int32 OSIE-SR class ids (1 person head ... 73 other)

Simulated observers (15 per image, 6-12 fixations each; 75 % of fixations on an object, the rest
centre-biased) stand in for people: the numbers it yields measure speed and exercise the formats,
not human vision.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from scipy.ndimage import gaussian_filter

CLASS_IDS = (1, 10, 16, 22, 27, 37, 46, 51, 57, 63, 68, 73)


def _scene(rng, h, w, n_objects):
    base = gaussian_filter(rng.random((h, w, 3)), sigma=(25, 25, 0))
    image = (255 * (base - base.min()) / (np.ptp(base) + 1e-12) * 0.6 + 40).astype(np.float64)
    objects = np.zeros((h, w), dtype=np.int32)
    classes = np.zeros((h, w), dtype=np.int32)
    yy, xx = np.mgrid[0:h, 0:w]
    centres = []
    for k in range(1, n_objects + 1):
        cy, cx = rng.uniform(0.1 * h, 0.9 * h), rng.uniform(0.1 * w, 0.9 * w)
        ry, rx = rng.uniform(20, 70), rng.uniform(20, 90)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        inside &= objects == 0  # no overlap: earlier objects stay whole
        if inside.sum() < 50:
            continue
        objects[inside] = k
        classes[inside] = rng.choice(CLASS_IDS)
        image[inside] = rng.uniform(0, 255, 3)
        centres.append((cy, cx, ry, rx))
    return image.clip(0, 255).astype(np.uint8), objects, classes, centres


def _observers(rng, h, w, centres, n_subjects):
    subjects = np.empty((n_subjects, 1), dtype=object)
    for s in range(n_subjects):
        n = int(rng.integers(6, 13))
        on_object = rng.random(n) < 0.75
        pick = rng.integers(0, len(centres), n)
        c = np.asarray(centres)[pick]
        x = np.where(on_object, rng.normal(c[:, 1], c[:, 3] / 3), rng.normal(w / 2, w / 5, n))
        y = np.where(on_object, rng.normal(c[:, 0], c[:, 2] / 3), rng.normal(h / 2, h / 5, n))
        subjects[s, 0] = {
            "fix_x": np.round(np.clip(x + 1, 1.2, w - 0.8), 1)[None],  # 1-based, one decimal
            "fix_y": np.round(np.clip(y + 1, 1.2, h - 0.8), 1)[None],
            "fix_duration": rng.gamma(4.0, 214 / 4.0, n).astype(np.uint16)[None],
        }
    return subjects


def write_osie_like(out: Path, n_images: int = 40, *, size=(600, 800), n_subjects: int = 15, n_objects: int = 8,
                    seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    h, w = size
    for sub in ("stimuli", "SegmentationObject", "SegmentationClass"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    entries = np.empty((n_images, 1), dtype=object)
    for i in range(n_images):
        stem = str(1001 + i)
        image, objects, classes, centres = _scene(rng, h, w, n_objects)
        Image.fromarray(image).save(out / "stimuli" / f"{stem}.jpg", quality=92)
        np.save(out / "SegmentationObject" / f"{stem}.npy", objects)
        np.save(out / "SegmentationClass" / f"{stem}.npy", classes)
        entries[i, 0] = {"img": f"{stem}.jpg", "subjects": _observers(rng, h, w, centres, n_subjects)}
    scipy.io.savemat(str(out / "fixations.mat"), {"fixations": entries})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_osie_like(Path(args.out), args.images, seed=args.seed))


if __name__ == "__main__":
    main()

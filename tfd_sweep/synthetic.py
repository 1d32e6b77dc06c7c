"""Built-in synthetic 48x48 expression faces in the course file's layout.

Each image is a drawn face: an oval, two eyes, two brows, a nose and a mouth on a lit
background. The class sets the mean shape of the parts (eye openness, brow height and tilt,
mouth curvature, opening, width and slant). Every image draws its own position, scale,
lighting, hair line, pixel noise and shape jitter. The class means of similar expressions
(fear and surprise, anger and disgust, sad and neutral) lie close together. So the course MLP
learns the classes well above chance but not perfectly. Measured with `trainer.train`, eps=0.01,
momentum=0, batch_size=100, num_hiddens=[16, 32] and seeds 0 and 1: validation accuracy 48-50%
after 300 epochs, 57-64% after 500 and 61-64% after 1000, when train accuracy is 97-99% and the
validation cross-entropy has risen since its minimum near epoch 500. Always guessing "happy"
scores 26%.

Split sizes (3374 / 419 / 385) and class counts match the FER2013 stand-in for the course file.
The generator uses only its own seeded generator, so the same seed always gives the same arrays.
"""

from __future__ import annotations

import hashlib

import numpy as np

SYNTHETIC_NAME = "synthetic-faces"
SYNTHETIC_SOURCE = "built-in"
SIDE = 48  # image side in pixels, D = SIDE * SIDE

# Images per class (anger, disgust, fear, happy, sad, surprise, neutral) in each split.
CLASS_COUNTS = {
    "train": (474, 44, 476, 881, 586, 308, 605),
    "valid": (59, 6, 59, 109, 73, 38, 75),
    "test": (51, 6, 55, 96, 67, 43, 67),
}

# Mean face-part shape per class, in pixels at scale 1 (columns below). Rows follow the class
# order above. Brow tilt > 0 raises the inner ends; mouth curve > 0 raises the corners (smile);
# mouth slant > 0 raises the right corner.
#                         eye_open  brow_raise  brow_tilt  mouth_curve  mouth_open  mouth_width  mouth_slant
CLASS_SHAPES = np.array(
    [
        [1.0, -1.0, -1.4, -0.4, 0.3, 4.5, 0.0],  # anger
        [1.1, -0.6, -0.8, -1.0, 0.6, 4.5, 1.2],  # disgust
        [2.1, 1.2, 1.0, -0.6, 1.6, 5.5, 0.0],  # fear
        [1.2, 0.2, 0.0, 2.2, 1.0, 6.0, 0.0],  # happy
        [1.3, -0.1, 1.3, -1.6, 0.3, 4.5, 0.0],  # sad
        [2.4, 2.2, 0.3, 0.0, 3.0, 3.8, 0.0],  # surprise
        [1.5, 0.0, 0.0, 0.0, 0.3, 5.0, 0.0],  # neutral
    ]
)
# Standard deviation of each image's shape jitter around its class mean, same columns.
SHAPE_JITTER = np.array([0.4, 0.65, 0.65, 0.75, 0.6, 0.65, 0.6])


def make_synthetic_faces(seed: int = 0) -> dict[str, np.ndarray]:
    """Generate the six course arrays: inputs_{split} uint8 (N, 2304), target_{split} int64 (N,)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, counts in CLASS_COUNTS.items():
        labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
        arrays[f"inputs_{split}"] = _draw_faces(labels, rng)
        arrays[f"target_{split}"] = labels.astype(np.int64)
    return arrays


def make_synthetic_dataset(seed: int = 0):
    """Generate the built-in data set as a `tfd_sweep.data.Dataset` named "synthetic-faces"."""
    from tfd_sweep.data import Dataset  # data.py imports this module lazily, so import it here

    arrays = make_synthetic_faces(seed)
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())

    splits = {}
    for split in CLASS_COUNTS:
        x = arrays[f"inputs_{split}"].astype(np.float64) / 255.0
        y = arrays[f"target_{split}"]
        x.flags.writeable = False
        y.flags.writeable = False
        splits[f"x_{split}"] = x
        splits[f"y_{split}"] = y
    return Dataset(
        name=SYNTHETIC_NAME, source=SYNTHETIC_SOURCE, sha256=digest.hexdigest(), synthetic=True, **splits
    )


def _draw_faces(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one face per label; returns uint8 pixels of shape (N, 2304)."""
    n = len(labels)
    shape = CLASS_SHAPES[labels] + rng.standard_normal((n, CLASS_SHAPES.shape[1])) * SHAPE_JITTER
    shape = shape.astype(np.float32)
    eye_open, brow_raise, brow_tilt, mouth_curve, mouth_open, mouth_width, mouth_slant = (
        column[:, None, None] for column in shape.T
    )

    # Pose and lighting, as (N, 1, 1) so that they broadcast over the (N, 48, 48) image grid.
    def per_image(low, high):
        return rng.uniform(low, high, n).astype(np.float32)[:, None, None]

    cx, cy = per_image(21.0, 27.0), per_image(22.0, 28.0)
    scale = per_image(0.85, 1.12)
    skin, background = per_image(0.45, 0.85), per_image(0.05, 0.45)
    light_angle, light_strength = per_image(0.0, 2 * np.pi), per_image(0.0, 0.35)
    hair_line, hair_tone = per_image(-18.0, -11.0), per_image(0.0, 0.3)
    feature_tone = per_image(0.0, 0.25)  # darkness of eyes, brows and mouth varies with skin

    y_grid, x_grid = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    x, y = x_grid[None] - cx, y_grid[None] - cy  # (N, 48, 48) offsets from the face centre

    # Face oval on the background, then hair above a random line.
    face = _inside(np.sqrt((x / (15.5 * scale)) ** 2 + (y / (19.5 * scale)) ** 2) - 1.0, 1.0 / 15.0)
    image = background + (skin - background) * face
    image = np.where(y < hair_line * scale, hair_tone, image)

    # Eyes: dark ellipses whose height is the eye openness.
    eye_height = np.maximum(eye_open, 0.3) * scale
    for side in (-1.0, 1.0):
        ex, ey = x - side * 6.5 * scale, y + 4.0 * scale
        radius = np.sqrt((ex / (2.8 * scale)) ** 2 + (ey / eye_height) ** 2)
        image = _darken(image, _inside(radius - 1.0, 0.4), feature_tone)

    # Brows: thick segments above the eyes; the inner end sits higher by brow_tilt pixels.
    brow_y = -(7.5 + 0.6 * eye_open + brow_raise) * scale
    for side in (-1.0, 1.0):
        centre_x = side * 6.5 * scale
        outer = (centre_x + side * 3.5 * scale, brow_y + brow_tilt * scale)
        inner = (centre_x - side * 3.5 * scale, brow_y - brow_tilt * scale)
        distance = _segment_distance(x, y, outer, inner)
        image = _darken(image, _inside(distance - 0.9 * scale, 1.0), feature_tone)

    # Nose: a faint shadow below the eyes, the same for every class.
    nose = _inside(np.sqrt((x / (1.8 * scale)) ** 2 + ((y - 3.5 * scale) / (1.2 * scale)) ** 2) - 1.0, 0.5)
    image = image - 0.15 * nose * face

    # Mouth: a curved band; its centre line rises at the corners by mouth_curve pixels, its height
    # is the opening, and mouth_slant raises the right corner.
    half_width = np.maximum(mouth_width, 2.0) * scale
    u = x / half_width  # -1 .. 1 across the mouth
    centre_line = (9.5 * scale) - mouth_curve * scale * u**2 - mouth_slant * scale * u
    band = np.abs(y - centre_line) - (0.7 + 0.5 * np.maximum(mouth_open, 0.0)) * scale
    mouth = _inside(band, 1.0) * _inside((np.abs(u) - 1.0) * half_width, 1.0)
    image = _darken(image, mouth, feature_tone)

    # Lighting from a random side, then sensor noise.
    direction_x, direction_y = np.cos(light_angle), np.sin(light_angle)
    centred_x, centred_y = x_grid - (SIDE - 1) / 2, y_grid - (SIDE - 1) / 2
    image = image + light_strength * (centred_x * direction_x + centred_y * direction_y) / SIDE
    image = image + 0.06 * rng.standard_normal(image.shape, dtype=np.float32)

    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8).reshape(n, SIDE * SIDE)


def _inside(signed_distance: np.ndarray, softness: float) -> np.ndarray:
    """Return 1 inside a shape and 0 outside, with a linear edge `1 / softness` units wide."""
    return np.clip(0.5 - signed_distance / softness, 0.0, 1.0)


def _darken(image: np.ndarray, mask: np.ndarray, tone: np.ndarray) -> np.ndarray:
    return image + (tone - image) * mask


def _segment_distance(x: np.ndarray, y: np.ndarray, start, end) -> np.ndarray:
    """Return the distance of every pixel from the segment start-end (each an (x, y) pair)."""
    x0, y0 = start
    x1, y1 = end
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.sqrt((x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2)

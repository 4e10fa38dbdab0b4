"""Concept measures of images: the continuous targets of regression probes
(Regression Concept Vectors, Graziani et al. 2019).

Every function takes a batch of images, `(n, height, width, channels)` (or
`(n, height, width)` for grey levels), and returns one value per image. Colour
images are RGB with values in `[0, 255]` (`uint8` or float); grey images are
single-channel with values in `[0, 255]` or `[0, 1]` (see each function).

Colour and brightness come from scikit-image's `rgb2hsv`, texture from its
grey-level co-occurrence matrices (`graycomatrix` / `graycoprops`), shape from
`regionprops` of the largest connected component of the thresholded image.

Example:

```python
values = kp.concepts.measure(images, ["colorfulness", "red", "whiteness"])
values["colorfulness"].shape   # (n,)
```
"""

import numpy as np
from skimage import color, feature
from skimage import measure as skmeasure

__all__ = [
    "HUE_BINS",
    "TEXTURE_PROPERTIES",
    "blackness",
    "colorfulness",
    "hue_ratios",
    "measure",
    "names",
    "shape_measures",
    "texture",
    "whiteness",
]

#: The eight hue bins, in degrees `[start, end)`; red wraps around 0.
HUE_BINS = {
    "red": (345.0, 15.0),
    "orange": (15.0, 45.0),
    "yellow": (45.0, 75.0),
    "green": (75.0, 165.0),
    "cyan": (165.0, 195.0),
    "blue": (195.0, 255.0),
    "purple": (255.0, 285.0),
    "magenta": (285.0, 345.0),
}
#: The GLCM statistics, as scikit-image's `graycoprops` names them.
TEXTURE_PROPERTIES = ("energy", "ASM", "dissimilarity", "homogeneity", "contrast", "correlation")
SHAPE_PROPERTIES = ("area", "perimeter", "eccentricity")


def _rgb(images) -> np.ndarray:
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            "Colour measures need RGB images of shape (n, height, width, 3) with values "
            f"in [0, 255]. Received: shape {images.shape}"
        )
    return images


def colorfulness(images) -> np.ndarray:
    """Hasler & Süsstrunk (2003) colourfulness, per image.

    With `rg = R - G` and `yb = (R + G) / 2 - B` over the pixels,
    `M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)`.

    Args:
        images: RGB, `(n, height, width, 3)`, values in `[0, 255]`.

    Returns:
        `(n,)` float64.
    """
    rgb = _rgb(images)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = r - g, (r + g) / 2 - b
    axes = (1, 2)
    spread = np.sqrt(rg.var(axis=axes) + yb.var(axis=axes))
    mean = np.sqrt(rg.mean(axis=axes) ** 2 + yb.mean(axis=axes) ** 2)
    return spread + 0.3 * mean


def _hsv(images):
    return color.rgb2hsv(_rgb(images) / 255.0)  # (n, h, w, 3), each in [0, 1]


def hue_ratios(images) -> dict[str, np.ndarray]:
    """The fraction of each image's pixels in each of the eight `HUE_BINS`.

    Every pixel counts, whatever its saturation (a grey pixel has hue 0: red);
    combine with `whiteness` and `blackness` to tell colour from grey.

    Args:
        images: RGB, `(n, height, width, 3)`, values in `[0, 255]`.

    Returns:
        `{bin: (n,)}`; the eight ratios of an image sum to 1.
    """
    hue = _hsv(images)[..., 0] * 360.0
    ratios = {}
    for name, (start, end) in HUE_BINS.items():
        inside = (hue >= start) | (hue < end) if start > end else (hue >= start) & (hue < end)
        ratios[name] = inside.mean(axis=(1, 2))
    return ratios


def whiteness(images, saturation: float = 0.2, value: float = 0.8) -> np.ndarray:
    """The fraction of pixels that are white: HSV saturation below `saturation`
    and value above `value` (both in `[0, 1]`)."""
    hsv = _hsv(images)
    return ((hsv[..., 1] < saturation) & (hsv[..., 2] > value)).mean(axis=(1, 2))


def blackness(images, value: float = 0.2) -> np.ndarray:
    """The fraction of pixels that are black: HSV value below `value` (in `[0, 1]`)."""
    return (_hsv(images)[..., 2] < value).mean(axis=(1, 2))


def _gray_uint8(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 3:
        images = color.rgb2gray(images.astype(np.float64) / 255.0) * 255.0
    elif images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(
            "Texture and shape measures need images of shape (n, height, width), "
            f"(n, height, width, 1) or RGB (n, height, width, 3). Received: {images.shape}"
        )
    if images.dtype != np.uint8:
        images = np.asarray(images, np.float64)
        if images.max(initial=0.0) <= 1.0:
            images = images * 255.0  # grey levels in [0, 1]
        images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return images


def texture(
    images,
    distances=(1,),
    angles=(0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4),
    levels: int = 256,
) -> dict[str, np.ndarray]:
    """Grey-level co-occurrence (GLCM) statistics per image, averaged over
    `distances` and `angles`: `energy`, `ASM`, `dissimilarity`,
    `homogeneity`, `contrast`, `correlation` (scikit-image's definitions).

    Args:
        images: grey `(n, h, w)` / `(n, h, w, 1)` in `[0, 255]` (or `[0, 1]`
            floats), or RGB `(n, h, w, 3)` in `[0, 255]`, converted to grey.
        distances: pixel pair distances. Defaults to `(1,)`.
        angles: pixel pair angles in radians. Defaults to the four directions.
        levels: grey levels of the matrix; images are quantised to them.
            Defaults to `256`.

    Returns:
        `{property: (n,)}`.
    """
    gray = _gray_uint8(images)
    if levels != 256:
        gray = (gray.astype(np.uint16) * levels // 256).astype(np.uint8)
    values = {name: np.empty(len(gray)) for name in TEXTURE_PROPERTIES}
    for i, image in enumerate(gray):
        matrix = feature.graycomatrix(
            image, distances, angles, levels=levels, symmetric=True, normed=True
        )
        for name in TEXTURE_PROPERTIES:
            values[name][i] = feature.graycoprops(matrix, name).mean()
    return values


def shape_measures(images, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """`area`, `perimeter` and `eccentricity` of the largest connected region
    of each image's mask (pixels above `threshold` times the image's maximum),
    from scikit-image's `regionprops`: for MNIST digits, the digit's stroke.

    An image with no pixel above the threshold gets 0 for all three.

    Args:
        images: grey `(n, h, w)` / `(n, h, w, 1)` (any range), or RGB.
        threshold: fraction of each image's maximum. Defaults to `0.5`.

    Returns:
        `{"area": (n,), "perimeter": (n,), "eccentricity": (n,)}`, in pixels.
    """
    gray = _gray_uint8(images)
    values = {name: np.zeros(len(gray)) for name in SHAPE_PROPERTIES}
    for i, image in enumerate(gray):
        top = image.max()
        if top == 0:
            continue
        regions = skmeasure.regionprops(skmeasure.label(image > threshold * top))
        if not regions:
            continue
        largest = max(regions, key=lambda region: region.area)
        for name in SHAPE_PROPERTIES:
            values[name][i] = getattr(largest, name)
    return values


_SINGLE = {
    "colorfulness": colorfulness,
    "whiteness": whiteness,
    "blackness": blackness,
}
_GROUPS = {
    **{name: hue_ratios for name in HUE_BINS},
    **{name: texture for name in TEXTURE_PROPERTIES},
    **{name: shape_measures for name in SHAPE_PROPERTIES},
}


def names() -> list[str]:
    """Every concept `measure` knows."""
    return [*_SINGLE, *_GROUPS]


def measure(images, concepts) -> dict[str, np.ndarray]:
    """Several concepts at once, each group computed once (e.g. all hue bins).

    Args:
        images: a batch, as the single measures take it.
        concepts: names from `names()`, e.g. `["colorfulness", "red", "contrast"]`.

    Returns:
        `{concept: (n,) float64}`, in the order asked.
    """
    unknown = [c for c in concepts if c not in _SINGLE and c not in _GROUPS]
    if unknown:
        raise ValueError(f"Unknown concepts {unknown}. Known: {names()}")
    groups = {}
    values = {}
    for concept in concepts:
        if concept in _SINGLE:
            values[concept] = np.asarray(_SINGLE[concept](images), np.float64)
        else:
            function = _GROUPS[concept]
            if function not in groups:
                groups[function] = function(images)
            values[concept] = np.asarray(groups[function][concept], np.float64)
    return values

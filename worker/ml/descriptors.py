"""Cell descriptors: stain colour and nucleus morphometry, without a backbone.

A randomly initialised InceptionV3 (no ImageNet weights offline) gives features
that barely separate the classes (issue 15); what a haematologist looks at
does: the nucleus's size, shape and lobes, how much of the cell it fills, its
chromatin, and the stain colours of nucleus and cytoplasm.  This module
measures those once per cell, as a fixed-length, versioned vector that is
cached in a FeatureStore under :func:`descriptor_key`, like backbone features.

Colour is taken from the cell (nucleus and cytoplasm masks), not from the
background: in PBC many ``ig`` images have a blue-grey background, and colour
of the slide says how the image was acquired rather than what the cell is.
``region="crop"`` (whole image) exists only so a benchmark can show the
difference.

NumPy, SciPy and scikit-image only: no TensorFlow, Celery or SQLAlchemy here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage import filters, measure
from skimage.feature import graycomatrix, graycoprops
from skimage.morphology import disk

from worker.ml.data import ImageLoadError, load_image
from worker.ml.feature_store import FeatureStore

# Bump when any value below changes meaning: cached vectors of another
# version are then never read (they live under another key).
DESCRIPTOR_VERSION = 1
# Segmentation and measurement happen on a square of this size.  PBC cells are
# ~360 px; 128 keeps a platelet's nucleus at ~250 px while costing a few ms.
WORK_SIZE = 128
REGIONS = ("cell", "crop")

_HIST_BINS = 4  # per RGB channel: a 4x4x4 joint histogram
# A pixel is stained where (B - G) + (255 - G), purple plus dark, exceeds
# max(Otsu, this floor); the floor stops Otsu splitting a nucleus-free image
# (pale background vs red cells) and calling the red cells a cell.
_NUCLEUS_FLOOR = 150.0
# Cytoplasm: at least this far (RGB, 0-255) from both outside colours.
_CYTOPLASM_FLOOR = 20.0
_LOBE_LEVEL = 0.5  # lobes: components of distance > this x the thickest point
_GLCM_LEVELS = 16
# The darker core of a stained blob is its nucleus only if it is this share
# of the blob at least; less is dense granules in a platelet or a basophil.
_CORE_SHARE = 0.25
_FLAT_STD = 0.01  # colour std (0-1 scale) below which a region counts as flat
_LOBE_GAP = WORK_SIZE / 12  # px: pieces this close to the main nucleus are its lobes


def _colour_names() -> list[str]:
    names = [f"hist_r{r}g{g}b{b}" for r in range(_HIST_BINS)
             for g in range(_HIST_BINS) for b in range(_HIST_BINS)]
    for part in ("nucleus", "rest"):
        for stat in ("mean", "std", "skew"):
            names += [f"{part}_{c}_{stat}" for c in "rgb"]
    return names


COLOUR_NAMES: list[str] = _colour_names()
# Sizes are fractions of the image side (lengths) or area (areas): the
# microscope's magnification is fixed for a project, so they compare cells.
MORPHOMETRY_NAMES: list[str] = [
    "nucleus_found", "cytoplasm_found",
    "nucleus_area", "nucleus_perimeter", "nucleus_solidity", "nucleus_eccentricity",
    "nucleus_major_axis", "nucleus_minor_axis", "nucleus_circularity", "nucleus_extent",
    "nucleus_lobes", "nucleus_components", "nucleus_thickness",
    "cell_area", "cell_eccentricity", "cell_solidity", "nucleus_to_cell",
    "chromatin_mean", "chromatin_std", "glcm_contrast", "glcm_homogeneity",
    "glcm_energy", "glcm_correlation", "local_var_mean", "local_var_std",
]
FEATURE_NAMES: list[str] = COLOUR_NAMES + MORPHOMETRY_NAMES
DESCRIPTOR_DIM = len(FEATURE_NAMES)
COLOUR_SLICE = slice(0, len(COLOUR_NAMES))
MORPHOMETRY_SLICE = slice(len(COLOUR_NAMES), DESCRIPTOR_DIM)


def descriptor_key(region: str = "cell") -> str:
    """The FeatureStore key of this descriptor set (a folder of its own)."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    return f"descriptors-v{DESCRIPTOR_VERSION}-{WORK_SIZE}-{region}"


def _working_rgb(rgb: np.ndarray) -> np.ndarray:
    """Any HxWx3 (or HxW) uint8/float 0-255 image as float WORK_SIZE² RGB."""
    array = np.asarray(rgb)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] < 3 or min(array.shape[:2]) < 1:
        raise ValueError(f"expected an HxWx3 image, got shape {array.shape}")
    array = np.clip(np.nan_to_num(array[..., :3].astype(np.float32)), 0, 255)
    if array.shape[:2] != (WORK_SIZE, WORK_SIZE):
        image = Image.fromarray(array.round().astype(np.uint8))
        image = image.resize((WORK_SIZE, WORK_SIZE), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.float32)
    return array


def _otsu(values: np.ndarray) -> float | None:
    """Otsu's threshold, or None where the values are (nearly) constant."""
    if values.size < 2 or float(np.ptp(values)) < 1e-3:
        return None
    return float(filters.threshold_otsu(values))


def _central(mask: np.ndarray) -> np.ndarray:
    """The large, central component of a mask with the pieces close to it.

    Lobes of a segmented nucleus can be apart by a thin, pale filament, so
    pieces within a small gap of the main one are kept; holes are filled
    (pale chromatin leaves holes in a threshold; a nucleus has none).
    """
    labels = measure.label(ndi.binary_opening(mask, disk(1)))
    props = [p for p in measure.regionprops(labels) if p.area >= 12]
    if not props:
        return np.zeros(mask.shape, dtype=bool)
    half = WORK_SIZE / 2
    dist = [np.hypot(p.centroid[0] - half, p.centroid[1] - half) for p in props]
    score = [p.area / (1 + (d / (WORK_SIZE / 8)) ** 2) for p, d in zip(props, dist)]
    main = props[int(np.argmax(score))].label
    gap = ndi.distance_transform_edt(labels != main)
    keep = [p.label for p in props if gap[labels == p.label].min() <= _LOBE_GAP]
    return ndi.binary_fill_holes(np.isin(labels, keep))


def segment(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nucleus, cell) boolean masks on the WORK_SIZE square; either may be empty.

    On a purple-and-dark stain channel, a first Otsu threshold separates the
    stained cell from background and red cells; a second one, among the
    stained pixels, separates the nucleus from a stained (blue) cytoplasm.
    A stained blob with no darker core (a platelet) is its own "nucleus".
    The cell is that stained blob together with the region around it whose
    colour differs from both outside colours (pale background, red cells)
    sampled on the border band.
    """
    a = _working_rgb(rgb)
    g, b = a[..., 1], a[..., 2]
    stain = (b - g) + (255.0 - g)
    t = _otsu(stain)
    stained = _central(stain > max(t if t is not None else np.inf, _NUCLEUS_FLOOR))
    if not stained.any():
        return stained, stained.copy()
    t_in = _otsu(stain[stained])
    nucleus = stained
    if t_in is not None:
        # Closing first: pale chromatin between dark clumps is nucleus too.
        core = _central(ndi.binary_closing((stain > t_in) & stained, disk(2)) & stained)
        # A real stained cytoplasm is a layer, not the one- or two-pixel rim
        # where a nucleus's edge blends into the background.
        shell = stained & ~ndi.binary_dilation(core, disk(2))
        if core.sum() >= _CORE_SHARE * stained.sum() and shell.sum() >= 0.05 * stained.sum():
            nucleus = core

    w = max(WORK_SIZE // 10, 1)
    band = np.zeros(nucleus.shape, dtype=bool)
    band[:w] = band[-w:] = True
    band[:, :w] = band[:, -w:] = True
    outside = a[band & ~nucleus]
    if len(outside) == 0:
        return nucleus, nucleus.copy()
    brightness = outside.sum(axis=1)
    tb = _otsu(brightness)
    if tb is None or (brightness <= tb).sum() < 20 or (brightness > tb).sum() < 20:
        background = red_cells = np.median(outside, axis=0)
    else:
        background = np.median(outside[brightness > tb], axis=0)
        red_cells = np.median(outside[brightness <= tb], axis=0)
    distance = np.minimum(np.linalg.norm(a - background, axis=2),
                          np.linalg.norm(a - red_cells, axis=2))
    tc = _otsu(distance[~nucleus])
    cyto = (distance > max(tc if tc is not None else np.inf, _CYTOPLASM_FLOOR)) & ~stained
    # Opening cuts the thin bridges by which touching red cells would join,
    # and the one-pixel rim of mixed colour around a bare nucleus.
    cyto = ndi.binary_opening(cyto, disk(2))
    joined = measure.label(cyto | stained)
    ids = np.unique(joined[nucleus])
    cell = ndi.binary_fill_holes(np.isin(joined, ids[ids > 0])) | nucleus
    return nucleus, cell


def _moments(pixels: np.ndarray) -> np.ndarray:
    """Mean, std and skewness of each RGB channel (scaled to 0-1): 9 values."""
    if len(pixels) == 0:
        return np.zeros(9, dtype=np.float64)
    x = pixels / 255.0
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    # Skewness of a nearly flat region is noise over noise: zero it there and
    # bound it elsewhere, so one flat cytoplasm cannot dominate a distance.
    safe = np.maximum(std, _FLAT_STD)
    skew = np.where(std > _FLAT_STD, ((x - mean) ** 3).mean(axis=0) / safe**3, 0.0)
    skew = np.clip(skew, -5.0, 5.0)
    return np.concatenate([mean, std, skew])


def _inner(mask: np.ndarray) -> np.ndarray:
    """The mask less its one-pixel rim, whose colour is mixed with what is outside."""
    inner = ndi.binary_erosion(mask, border_value=1)
    return inner if inner.any() else mask


def _colour(a: np.ndarray, nucleus: np.ndarray, region_mask: np.ndarray) -> np.ndarray:
    nucleus = _inner(nucleus) if nucleus.any() else nucleus
    rest = region_mask & ~nucleus
    # Two pixels off the nucleus: its edge blends into the cytoplasm there.
    core = _inner(region_mask) & ~ndi.binary_dilation(nucleus, disk(2))
    rest = core if core.any() else rest
    pixels = a[_inner(region_mask)]
    if len(pixels):
        bins = np.minimum((pixels * (_HIST_BINS / 256.0)).astype(int), _HIST_BINS - 1)
        flat = (bins[:, 0] * _HIST_BINS + bins[:, 1]) * _HIST_BINS + bins[:, 2]
        hist = np.bincount(flat, minlength=_HIST_BINS ** 3) / len(pixels)
    else:
        hist = np.zeros(_HIST_BINS ** 3)
    return np.concatenate([hist, _moments(a[nucleus]), _moments(a[rest])])


def count_lobes(mask: np.ndarray) -> int:
    """Lobes of a nucleus mask: pieces left where it is over half its thickest.

    Two discs joined by a narrow neck (or touching) give two; a disc, an
    ellipse or a band of even width gives one.  Each separate component of
    the mask counts at least its own lobes, so a nucleus split by the
    threshold still counts right.
    """
    lobes = 0
    labels = measure.label(mask)
    for i in range(1, labels.max() + 1):
        part = labels == i
        dist = ndi.distance_transform_edt(np.pad(part, 1))[1:-1, 1:-1]
        cores = measure.label(dist > _LOBE_LEVEL * dist.max())
        # A core of a few pixels is a ragged edge, not a lobe.
        sizes = np.bincount(cores.ravel())[1:]
        lobes += max(int((sizes >= max(3, 0.05 * sizes.sum())).sum()), 1)
    return lobes


def _texture(grey: np.ndarray, nucleus: np.ndarray) -> list[float]:
    """Chromatin: intensity stats, GLCM (inside the nucleus only), local variance."""
    values = grey[nucleus]
    rows, cols = np.nonzero(nucleus)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    # Level 0 marks "outside the nucleus"; its row and column are dropped so
    # the boundary with the background is no part of the texture.
    levels = 1 + np.minimum((grey[box] * (_GLCM_LEVELS - 1)).astype(int), _GLCM_LEVELS - 2)
    levels = np.where(nucleus[box], levels, 0).astype(np.uint8)
    glcm = graycomatrix(levels, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                        levels=_GLCM_LEVELS, symmetric=True, normed=False)[1:, 1:].astype(float)
    total = glcm.sum(axis=(0, 1), keepdims=True)
    if total.min() > 0:
        glcm /= total
        stats = [float(np.nan_to_num(graycoprops(glcm, prop).mean()))
                 for prop in ("contrast", "homogeneity", "energy", "correlation")]
    else:
        stats = [0.0, 0.0, 0.0, 0.0]
    mean = ndi.uniform_filter(grey, 3)
    # Only where the 3x3 window is all nucleus: at the edge it would measure
    # the step to the cytoplasm, not the chromatin.
    var = np.maximum(ndi.uniform_filter(grey * grey, 3) - mean * mean, 0)[_inner(nucleus)]
    return [float(values.mean()), float(values.std()), *stats,
            float(var.mean()), float(var.std())]


def _morphometry(a: np.ndarray, nucleus: np.ndarray, cell: np.ndarray) -> list[float]:
    side, area = float(WORK_SIZE), float(WORK_SIZE * WORK_SIZE)
    out = dict.fromkeys(MORPHOMETRY_NAMES, 0.0)
    if nucleus.any():
        out["nucleus_found"] = 1.0
        whole = measure.regionprops(nucleus.astype(np.uint8))[0]
        perimeter = sum(p.perimeter for p in measure.regionprops(measure.label(nucleus)))
        out.update(
            nucleus_area=whole.area / area,
            nucleus_perimeter=perimeter / side,
            nucleus_solidity=float(whole.solidity),
            nucleus_eccentricity=float(whole.eccentricity),
            nucleus_major_axis=whole.axis_major_length / side,
            nucleus_minor_axis=whole.axis_minor_length / side,
            nucleus_circularity=min(4 * np.pi * whole.area / max(perimeter, 1.0) ** 2, 1.5),
            nucleus_extent=float(whole.extent),
            nucleus_lobes=float(count_lobes(nucleus)),
            nucleus_components=float(measure.label(nucleus).max()),
            nucleus_thickness=float(ndi.distance_transform_edt(np.pad(nucleus, 1)).max()) / side,
        )
        cell_props = measure.regionprops(cell.astype(np.uint8))[0]
        out["cytoplasm_found"] = float((cell & ~nucleus).sum() >= 0.05 * nucleus.sum())
        out.update(
            cell_area=cell_props.area / area,
            cell_eccentricity=float(cell_props.eccentricity),
            cell_solidity=float(cell_props.solidity),
            nucleus_to_cell=float(nucleus.sum() / cell.sum()),
        )
        grey = 1.0 - a[..., 1] / 255.0  # darkness in green: chromatin density
        out.update(zip(MORPHOMETRY_NAMES[-8:], _texture(grey, nucleus)))
    return [float(out[name]) for name in MORPHOMETRY_NAMES]


def describe(rgb: np.ndarray, region: str = "cell") -> np.ndarray:
    """The descriptor vector (float32, DESCRIPTOR_DIM, NaN-free) of one RGB image.

    Where no nucleus is found, ``nucleus_found`` is 0 and the morphometry is
    zeros; colour then falls back to the whole image (there is no cell mask).
    """
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    a = _working_rgb(rgb)
    nucleus, cell = segment(a)
    if region == "crop" or not cell.any():
        region_mask = np.ones(nucleus.shape, dtype=bool)
    else:
        region_mask = cell
    vector = np.concatenate([_colour(a, nucleus, region_mask), _morphometry(a, nucleus, cell)])
    return np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def describe_path(path: str | Path, region: str = "cell") -> np.ndarray:
    """Descriptors of an image file, read through the backbone's loader."""
    scaled = load_image(path, WORK_SIZE)  # [-1, 1], as the backbone sees it
    return describe((scaled + 1.0) * 127.5, region)


def compute_descriptors(
    paths: Sequence[str | Path],
    progress: Callable[[int, int], None] | None = None,
    failures: list[tuple[int, str]] | None = None,
    region: str = "cell",
) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors ``[n, DESCRIPTOR_DIM]`` and the ok mask, like CellClassifier.features.

    Unreadable files get a zero row, ok False, and ``(index, reason)`` in
    ``failures``; ``progress(done, total)`` is called after each image.
    """
    feats = np.zeros((len(paths), DESCRIPTOR_DIM), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    for i, path in enumerate(paths):
        try:
            feats[i] = describe_path(path, region)
            ok[i] = True
        except ImageLoadError as exc:
            if failures is not None:
                failures.append((i, exc.reason))
        if progress is not None:
            progress(i + 1, len(paths))
    return feats, ok


def cached_descriptors(
    store: FeatureStore,
    shas: Sequence[str],
    paths: Sequence[str | Path],
    progress: Callable[[int, int], None] | None = None,
    failures: list[tuple[int, str]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors for images keyed by content hash: cached rows read, the rest computed and stored.

    ``store`` must be keyed by :func:`descriptor_key` (its region is read
    from the key), so a new DESCRIPTOR_VERSION never reads old vectors.
    """
    if len(shas) != len(paths):
        raise ValueError("shas and paths differ in length")
    region = store.key.rsplit("-", 1)[-1]
    if store.key != descriptor_key(region if region in REGIONS else "cell"):
        raise ValueError(f"store key {store.key!r} is not a descriptor key of this version")
    feats, found = store.get_many(shas, DESCRIPTOR_DIM)
    missing = np.flatnonzero(~found)
    ok = found.copy()
    if len(missing):
        local: list[tuple[int, str]] = []
        computed, computed_ok = compute_descriptors(
            [paths[i] for i in missing],
            progress=None if progress is None else (lambda d, _t: progress(d, len(missing))),
            failures=local, region=region)
        feats[missing] = computed
        ok[missing] = computed_ok
        store.put_many(shas, feats, missing[computed_ok].tolist())
        if failures is not None:
            failures.extend((int(missing[j]), reason) for j, reason in local)
    return feats, ok

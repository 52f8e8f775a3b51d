"""Nucleus and cell masks of one cell image, on a WORK_SIZE square.

NumPy, SciPy and scikit-image only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage import filters, measure
from skimage.morphology import disk

# Segmentation and measurement happen on a square of this size.  PBC cells are
# ~360 px; 128 keeps a platelet's nucleus at ~250 px while costing a few ms.
WORK_SIZE = 128
# A pixel is stained where (B - G) + (255 - G), purple plus dark, exceeds
# max(Otsu, this floor); the floor stops Otsu splitting a nucleus-free image
# (pale background vs red cells) and calling the red cells a cell.
_NUCLEUS_FLOOR = 150.0
# Cytoplasm: at least this far (RGB, 0-255) from both outside colours.
_CYTOPLASM_FLOOR = 20.0
# The darker core of a stained blob is its nucleus only if it is this share
# of the blob at least; less is dense granules in a platelet or a basophil.
_CORE_SHARE = 0.25
_LOBE_GAP = WORK_SIZE / 12  # px: pieces this close to the main nucleus are its lobes


def working_rgb(rgb: np.ndarray) -> np.ndarray:
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


def otsu(values: np.ndarray) -> float | None:
    """Otsu's threshold, or None where the values are (nearly) constant."""
    if values.size < 2 or float(np.ptp(values)) < 1e-3:
        return None
    return float(filters.threshold_otsu(values))


def central(mask: np.ndarray) -> np.ndarray:
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
    a = working_rgb(rgb)
    g, b = a[..., 1], a[..., 2]
    stain = (b - g) + (255.0 - g)
    t = otsu(stain)
    stained = central(stain > max(t if t is not None else np.inf, _NUCLEUS_FLOOR))
    if not stained.any():
        return stained, stained.copy()
    t_in = otsu(stain[stained])
    nucleus = stained
    if t_in is not None:
        # Closing first: pale chromatin between dark clumps is nucleus too.
        core = central(ndi.binary_closing((stain > t_in) & stained, disk(2)) & stained)
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
    tb = otsu(brightness)
    if tb is None or (brightness <= tb).sum() < 20 or (brightness > tb).sum() < 20:
        background = red_cells = np.median(outside, axis=0)
    else:
        background = np.median(outside[brightness > tb], axis=0)
        red_cells = np.median(outside[brightness <= tb], axis=0)
    distance = np.minimum(np.linalg.norm(a - background, axis=2),
                          np.linalg.norm(a - red_cells, axis=2))
    tc = otsu(distance[~nucleus])
    cyto = (distance > max(tc if tc is not None else np.inf, _CYTOPLASM_FLOOR)) & ~stained
    # Opening cuts the thin bridges by which touching red cells would join,
    # and the one-pixel rim of mixed colour around a bare nucleus.
    cyto = ndi.binary_opening(cyto, disk(2))
    joined = measure.label(cyto | stained)
    ids = np.unique(joined[nucleus])
    cell = ndi.binary_fill_holes(np.isin(joined, ids[ids > 0])) | nucleus
    return nucleus, cell


def inner(mask: np.ndarray) -> np.ndarray:
    """The mask less its one-pixel rim, whose colour is mixed with what is outside."""
    inner = ndi.binary_erosion(mask, border_value=1)
    return inner if inner.any() else mask

"""Nucleus morphometry and chromatin texture from the masks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import measure
from skimage.feature import graycomatrix, graycoprops

from worker.ml.descriptors.segmentation import WORK_SIZE, inner

_LOBE_LEVEL = 0.5  # lobes: components of distance > this x the thickest point
_GLCM_LEVELS = 16

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


def texture(grey: np.ndarray, nucleus: np.ndarray) -> list[float]:
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
    var = np.maximum(ndi.uniform_filter(grey * grey, 3) - mean * mean, 0)[inner(nucleus)]
    return [float(values.mean()), float(values.std()), *stats,
            float(var.mean()), float(var.std())]


def morphometry_vector(a: np.ndarray, nucleus: np.ndarray, cell: np.ndarray) -> list[float]:
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
        out.update(zip(MORPHOMETRY_NAMES[-8:], texture(grey, nucleus)))
    return [float(out[name]) for name in MORPHOMETRY_NAMES]

"""Label-class presets for the public white-blood-cell datasets.

Each preset is an ordered list of (name, hotkey, colour).  Hotkeys are single
keys chosen so none collides with the labeling page's own keys
(a accept, x reject, ? ambiguous, u unusable, s skip, Backspace undo,
+ = - 0 zoom).
"""

from __future__ import annotations

PRESETS: dict[str, list[tuple[str, str, str]]] = {
    # PBC (Acevedo et al. 2020): 8 classes, CellaVision DM96.
    "pbc8": [
        ("basophil", "1", "#6a3d9a"),
        ("eosinophil", "2", "#e31a1c"),
        ("erythroblast", "3", "#b15928"),
        ("ig", "4", "#ff7f00"),
        ("lymphocyte", "5", "#1f78b4"),
        ("monocyte", "6", "#33a02c"),
        ("neutrophil", "7", "#fb9a99"),
        ("platelet", "8", "#cab2d6"),
    ],
    # BCCD / Kaggle "blood cell images": 4 leukocyte classes.
    "wbc4": [
        ("eosinophil", "1", "#e31a1c"),
        ("lymphocyte", "2", "#1f78b4"),
        ("monocyte", "3", "#33a02c"),
        ("neutrophil", "4", "#fb9a99"),
    ],
    # Raabin-WBC / LISC: the 5 normal leukocyte classes.
    "wbc5": [
        ("basophil", "1", "#6a3d9a"),
        ("eosinophil", "2", "#e31a1c"),
        ("lymphocyte", "3", "#1f78b4"),
        ("monocyte", "4", "#33a02c"),
        ("neutrophil", "5", "#fb9a99"),
    ],
}

RESERVED_HOTKEYS = {"a", "x", "?", "u", "s", "+", "=", "-", "0", "enter", "backspace"}

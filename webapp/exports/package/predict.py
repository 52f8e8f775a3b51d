"""Classify cell images with a model exported from hemaloop, outside hemaloop.

Needs only TensorFlow (Keras 3), NumPy and Pillow:

    python predict.py CELL.jpg [MORE.jpg ...]          # one JSON line per image

or from Python, in this folder:

    from predict import CellModel
    model = CellModel(".")                 # the unzipped package
    for result in model.predict(["cell.jpg"]):
        print(result["class"], result["confidence"], result["top3"])

The probabilities are calibrated as hemaloop's own: the network's head logits
(the head's input, e.g. 2048 pooled backbone features, times the head's
weights) divided by the fitted temperature, then softmax.  (The saved model's
own output is the uncalibrated softmax; ``model_card.json`` says so too.)

A model whose card lists a "descriptors" input also reads cell descriptors,
which must be computed as hemaloop computes them: this script then imports
``worker.ml.descriptors`` from an installed hemaloop (with its worker extras:
SciPy, scikit-image) and stops with a clear message where it is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pixels import to_rgb  # noqa: E402  (beside this file in the package, not installed)


def load_image(path, input_size: int) -> np.ndarray:
    """As hemaloop reads a cell: 8-bit RGB, bilinear resize to a square, x / 127.5 - 1."""
    with Image.open(path) as image:
        rgb = to_rgb(image).resize((input_size, input_size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def describer():
    """hemaloop's descriptor function, or SystemExit saying what is missing."""
    try:
        from worker.ml.descriptors import describe_path
    except ImportError as exc:
        raise SystemExit(
            "This model reads cell descriptors, computed by hemaloop's worker.ml.descriptors "
            f"({exc.name or exc} is not importable here). Install hemaloop with its worker "
            "extras (pip install 'hemaloop[cpu]') and run this again.") from None
    return describe_path


class CellModel:
    def __init__(self, package_dir=HERE) -> None:
        import keras

        package_dir = Path(package_dir)
        self.card = json.loads((package_dir / "model_card.json").read_text(encoding="utf-8"))
        self.classes = self.card["classes"]
        self.input_size = int(self.card["input_size"])
        self.temperature = float(self.card["temperature"])
        model = keras.models.load_model(package_dir / "model.keras", compile=False)
        layers = self.card["layers"]
        self.inputs = self.card.get("inputs", ["image"])  # packages from before issue 15
        self.describe = describer() if "descriptors" in self.inputs else None
        inputs = model.inputs if len(model.inputs) > 1 else model.inputs[0]
        self.features = keras.Model(inputs, model.get_layer(layers["features"]).output)
        kernel, bias = model.get_layer(layers["head"]).get_weights()
        self.kernel = np.asarray(kernel, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)

    def probabilities(self, paths, batch_size: int = 32) -> np.ndarray:
        """Calibrated class probabilities, one row per image, columns in ``classes`` order."""
        out = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            batch = {}
            if "image" in self.inputs:
                batch["image"] = np.stack([load_image(p, self.input_size) for p in chunk])
            if self.describe is not None:
                batch["descriptors"] = np.stack([self.describe(p) for p in chunk])
            if len(self.inputs) == 1:
                batch = batch[self.inputs[0]]
            features = np.asarray(self.features(batch, training=False), dtype=np.float32)
            z = (features @ self.kernel + self.bias).astype(np.float64) / self.temperature
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            out.append(e / e.sum(axis=1, keepdims=True))
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def predict(self, paths, batch_size: int = 32) -> list[dict]:
        results = []
        for path, p in zip(paths, self.probabilities(list(paths), batch_size)):
            order = np.argsort(-p)
            results.append({
                "file": str(path), "class": self.classes[order[0]],
                "confidence": float(p[order[0]]),
                "top3": [[self.classes[k], float(p[k])] for k in order[:3]],
                "probabilities": {c: float(v) for c, v in zip(self.classes, p)},
            })
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--package", type=Path, default=HERE,
                        help="the unzipped package (default: this file's folder)")
    args = parser.parse_args()
    for result in CellModel(args.package).predict(args.images):
        print(json.dumps(result))


if __name__ == "__main__":
    main()

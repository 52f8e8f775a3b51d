"""CellClassifier: the predict/fit interface the rest of the server uses."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from models.files import atomic_write
from worker.ml.features import apply_to_images, extract_features
from worker.ml.head import CalibratedHead, HeadFit, fit_calibrated_head
from worker.ml.network import DROPOUT_LAYER, HEAD_LAYER, backbone_of, build_classifier
from worker.ml.train import install_head
from worker.ml.weights import resolve_backbone_weights

MODEL_SUFFIX = ".keras"  # Keras 3 only loads whole models from files named so


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class CellClassifier:
    """A built classifier plus what is needed to use it: class ids and input size."""

    def __init__(
        self,
        model: keras.Model,
        class_ids: list[int],
        input_size: int,
        *,
        backbone_weights: str = "unknown",
    ) -> None:
        outputs = int(model.output.shape[-1])
        if outputs != len(class_ids):
            raise ValueError(
                f"model has {outputs} outputs but {len(class_ids)} class ids were given"
            )
        self.model = model
        self.class_ids = [int(c) for c in class_ids]
        self.input_size = int(input_size)
        self.backbone_weights = backbone_weights
        self.weights_source: str | None = None
        self._extractor: keras.Model | None = None

    @classmethod
    def create(
        cls, class_ids: Sequence[int], input_size: int, weights_setting: str, seed: int = 0
    ) -> tuple["CellClassifier", list[str]]:
        """A fresh classifier; returns it with any warnings about its weights."""
        weights, description, warnings = resolve_backbone_weights(weights_setting)
        model = build_classifier(len(class_ids), input_size, weights, seed=seed)
        clf = cls(model, list(class_ids), input_size, backbone_weights=description)
        clf.weights_source = weights  # None, "imagenet" or a file: names its cached features
        return clf, warnings

    @property
    def extractor(self) -> keras.Model:
        """image -> 2048 pooled backbone features, sharing the model's weights."""
        if self._extractor is None:
            self._extractor = backbone_of(self.model)
        return self._extractor

    def features(
        self,
        paths: Sequence[str | Path],
        batch_size: int,
        progress: Callable[[int, int], None] | None = None,
        failures: list[tuple[int, str]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Backbone features `[n, 2048]` and the ok mask (see features.extract_features)."""
        return extract_features(
            self.extractor, paths, self.input_size, batch_size, progress, failures
        )

    def fit_head(
        self,
        features: np.ndarray,
        labels_idx: np.ndarray,
        *,
        epochs: int,
        batch_size: int,
        progress: Callable[[int, int, dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        seed: int = 0,
        warm: bool = False,
    ) -> CalibratedHead:
        """Fit and calibrate the head on cached features and install it; labels
        index `class_ids`.  The same procedure as the simulator's
        (worker/ml/head.py): validation split, head training, temperature.

        ``warm`` starts from the head this classifier already has (a loaded
        earlier model) instead of a fresh one.
        """
        initial = self.model.get_layer(HEAD_LAYER).get_weights() if warm else None
        config = HeadFit(epochs=epochs, batch_size=batch_size,
                         dropout=float(self.model.get_layer(DROPOUT_LAYER).rate))
        result = fit_calibrated_head(
            features, labels_idx, len(self.class_ids), config, seed=seed,
            initial=initial, progress=progress, should_stop=should_stop,
        )
        install_head(self.model, result.weights)
        return result

    def fine_tune(
        self,
        train_paths: Sequence[str | Path],
        train_labels: np.ndarray,
        val_paths: Sequence[str | Path],
        val_labels: np.ndarray,
        *,
        blocks: int,
        epochs: int,
        batch_size: int,
        progress: Callable[[int, int, dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        seed: int = 0,
        callbacks: list | None = None,
    ) -> dict[str, list[float]]:
        """Phase 2: unfreeze the top ``blocks`` and train on augmented images.

        The backbone changes, so features cached for the old one no longer
        describe this model: callers re-extract them afterwards.
        """
        from worker.ml.finetune import fine_tune, unfreeze_top_blocks
        from worker.ml.pipeline import image_dataset
        from worker.ml.train import class_weights

        unfreeze_top_blocks(self.model, blocks)
        train = image_dataset(train_paths, train_labels, self.input_size, batch_size,
                              augment=True, shuffle=True, seed=seed)
        val = image_dataset(val_paths, val_labels, self.input_size, batch_size,
                            augment=False, shuffle=False) if len(val_paths) else None
        try:
            return fine_tune(self.model, train, val, epochs=epochs,
                             class_weight=class_weights(train_labels, len(self.class_ids)),
                             progress=progress, should_stop=should_stop, callbacks=callbacks)
        finally:
            unfreeze_top_blocks(self.model, 0)  # frozen again for inference and saving
            self._extractor = None

    def logits_features(self, features: np.ndarray) -> np.ndarray:
        """Head logits (before softmax) from cached features: for temperature scaling."""
        kernel, bias = (
            np.asarray(w, dtype=np.float32) for w in self.model.get_layer(HEAD_LAYER).get_weights()
        )
        return np.asarray(features, dtype=np.float32) @ kernel + bias

    def predict_features(self, features: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Uncalibrated class probabilities `[n, k]` (temperature 1) from cached
        features, through the head only, in plain NumPy: what `predict` gives for
        the same images (tests/ml/test_ml_classifier.py holds them equal).

        Rounds and pool scoring do not call this: they take `logits_features` and
        divide by the model version's fitted temperature (worker/ml/calibration.py).
        """
        kernel, bias = (
            np.asarray(w, dtype=np.float32) for w in self.model.get_layer(HEAD_LAYER).get_weights()
        )
        features = np.asarray(features, dtype=np.float32)
        probs = np.empty((len(features), len(self.class_ids)), dtype=np.float32)
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            probs[start : start + len(chunk)] = _softmax(chunk @ kernel + bias)
        return probs

    def predict(
        self,
        paths: Sequence[str | Path],
        batch_size: int,
        progress: Callable[[int, int], None] | None = None,
        failures: list[tuple[int, str]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities `[n, k]` through the full model, and the ok mask.

        Rows of images that failed to load are zero.
        """
        return apply_to_images(self.model, paths, self.input_size, batch_size, progress, failures)

    def save(self, path: Path) -> None:
        """Write the model to `path` (.keras) and metadata to `path.with_suffix('.json')`.

        Each file is replaced atomically; the model first, so a sidecar never
        describes a model file that is not there yet.
        """
        path = Path(path)
        if path.suffix != MODEL_SUFFIX:
            raise ValueError(f"model path must end in {MODEL_SUFFIX}: {path}")
        metadata = {
            "class_ids": self.class_ids,
            "input_size": self.input_size,
            "backbone_weights": self.backbone_weights,
        }
        # Each file aside, then renamed: readers see the old one or the new one.
        atomic_write(path, lambda tmp: self.model.save(tmp), suffix=MODEL_SUFFIX)
        atomic_write(
            path.with_suffix(".json"),
            lambda tmp: tmp.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8"),
            suffix=".json",
        )

    @classmethod
    def load(cls, path: Path) -> "CellClassifier":
        """Read a classifier written by `save`."""
        path = Path(path)
        metadata = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        model = keras.models.load_model(path, compile=False)
        return cls(
            model,
            metadata["class_ids"],
            metadata["input_size"],
            backbone_weights=metadata.get("backbone_weights", "unknown"),
        )

"""CellClassifier: the predict/fit interface the rest of the server uses.

A classifier reads the project's feature sources (models/feature_sources.py):
the backbone's pooled features, cell descriptors (worker/ml/descriptors), or
both; ``features`` gives the head's whole input for image files,
``model_inputs`` what the Keras model itself takes, ``predict`` its
probabilities, for every shape (worker/ml/network.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from models.files import atomic_write
from worker.ml.feature_parts import (
    BACKBONE,
    DESCRIPTORS,
    Standardisation,
    combine,
    parts_of,
    standardised_parts,
)
from worker.ml.features import apply_to_images, extract_features
from worker.ml.head import CalibratedHead, HeadFit, fit_calibrated_head
from worker.ml.network import (
    BACKBONE_NORM_LAYER,
    DESCRIPTOR_INPUT,
    DESCRIPTOR_NORM_LAYER,
    HEAD_LAYER,
    IMAGE_INPUT,
    backbone_of,
    build_classifier,
    sources_of,
)
from worker.ml.train import install_head
from worker.ml.weights import resolve_backbone_weights

MODEL_SUFFIX = ".keras"  # Keras 3 only loads whole models from files named so
NORM_LAYERS = {BACKBONE: BACKBONE_NORM_LAYER, DESCRIPTORS: DESCRIPTOR_NORM_LAYER}


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
        # Which features the head reads, from the network's own layers.
        self.sources = sources_of(model)

    @classmethod
    def create(
        cls, class_ids: Sequence[int], input_size: int, weights_setting: str, seed: int = 0,
        sources: str = "backbone",
    ) -> tuple["CellClassifier", list[str]]:
        """A fresh classifier; returns it with any warnings about its weights."""
        if BACKBONE not in parts_of(sources):
            model = build_classifier(len(class_ids), input_size, None, seed=seed,
                                     sources=sources)
            return cls(model, list(class_ids), input_size,
                       backbone_weights="none (descriptors only)"), []
        weights, description, warnings = resolve_backbone_weights(weights_setting)
        model = build_classifier(len(class_ids), input_size, weights, seed=seed, sources=sources)
        clf = cls(model, list(class_ids), input_size, backbone_weights=description)
        clf.weights_source = weights  # None, "imagenet" or a file: names its cached features
        return clf, warnings

    @property
    def has_image_input(self) -> bool:
        """Whether the Keras model takes images (a descriptors-only head does not)."""
        return BACKBONE in parts_of(self.sources)

    @property
    def extractor(self) -> keras.Model:
        """image -> 2048 pooled backbone features, sharing the model's weights."""
        if not self.has_image_input:
            raise ValueError("a descriptors-only classifier has no backbone")
        if self._extractor is None:
            self._extractor = backbone_of(self.model)
        return self._extractor

    # -- the head's input ---------------------------------------------------------

    @property
    def standardisation(self) -> Standardisation:
        """Each standardised part's mean and std, read from the model's Normalization layers."""
        mean, std = {}, {}
        for part in standardised_parts(self.sources):
            m, var = self.model.get_layer(NORM_LAYERS[part]).get_weights()[:2]
            mean[part] = np.asarray(m, dtype=np.float32).reshape(-1)
            std[part] = np.sqrt(np.asarray(var, dtype=np.float32)).reshape(-1)
        return Standardisation(mean, std)

    def set_standardisation(self, stats: Standardisation) -> None:
        """Store each part's mean and std in the model (saved with it)."""
        for part in standardised_parts(self.sources):
            layer = self.model.get_layer(NORM_LAYERS[part])
            rest = layer.get_weights()[2:]
            layer.set_weights([np.asarray(stats.mean[part], dtype=np.float32),
                               np.square(np.asarray(stats.std[part], dtype=np.float32)), *rest])
            # Keras' Normalization computes with constants taken from its variables
            # (as loading does): take them again.
            layer.finalize_state()

    def head_input(self, parts: dict[str, np.ndarray | None]) -> np.ndarray:
        """The head's input from raw parts (cached backbone features, raw descriptors)."""
        return combine(self.sources, parts, self.standardisation)

    def backbone_features(
        self,
        paths: Sequence[str | Path],
        batch_size: int,
        progress: Callable[[int, int], None] | None = None,
        failures: list[tuple[int, str]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw backbone features `[n, 2048]` and the ok mask (see features.extract_features)."""
        return extract_features(
            self.extractor, paths, self.input_size, batch_size, progress, failures
        )

    def parts(
        self,
        paths: Sequence[str | Path],
        batch_size: int,
        progress: Callable[[int, int], None] | None = None,
        failures: list[tuple[int, str]] | None = None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The raw parts this classifier reads, computed from image files, and the ok mask."""
        from worker.ml.descriptors import compute_descriptors

        parts: dict[str, np.ndarray] = {}
        ok = np.ones(len(paths), dtype=bool)
        seen: dict[int, str] = {}
        for part in parts_of(self.sources):
            local: list[tuple[int, str]] = []
            if part == BACKBONE:
                x, part_ok = self.backbone_features(paths, batch_size, progress, local)
            else:
                x, part_ok = compute_descriptors(paths, progress=progress, failures=local)
            parts[part] = x
            ok &= part_ok
            for index, reason in local:
                seen.setdefault(index, reason)  # one reason per unreadable file
        if failures is not None:
            failures.extend(sorted(seen.items()))
        return parts, ok

    def features(
        self,
        paths: Sequence[str | Path],
        batch_size: int,
        progress: Callable[[int, int], None] | None = None,
        failures: list[tuple[int, str]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The head's whole input `[n, d]` for image files and the ok mask (zero rows
        where an image failed): backbone features, standardised descriptors, or both."""
        parts, ok = self.parts(paths, batch_size, progress, failures)
        feats = self.head_input(parts)
        feats[~ok] = 0.0
        return feats, ok

    def model_inputs(
        self,
        paths: Sequence[str | Path],
        failures: list[tuple[int, str]] | None = None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """What the Keras model takes for these image files: ``{"image": [n, s, s, 3]}``
        and/or ``{"descriptors": [n, d]}`` (raw; the model standardises them), and
        the ok mask.  Rows of unreadable images are zero.  A two-input model takes
        the dict as it is (inputs are matched by name); a one-input model its one array.
        """
        from worker.ml.data import image_batches
        from worker.ml.descriptors import compute_descriptors

        inputs: dict[str, np.ndarray] = {}
        ok = np.ones(len(paths), dtype=bool)
        seen: dict[int, str] = {}
        if self.has_image_input:
            local: list[tuple[int, str]] = []
            images = np.zeros((len(paths), self.input_size, self.input_size, 3), np.float32)
            image_ok = np.zeros(len(paths), dtype=bool)
            for batch, indices in image_batches(paths, self.input_size, 32, local):
                images[indices] = batch
                image_ok[indices] = True
            inputs[IMAGE_INPUT] = images
            ok &= image_ok
            seen.update(dict(local))
        if DESCRIPTORS in parts_of(self.sources):
            local = []
            descriptors, desc_ok = compute_descriptors(paths, failures=local)
            inputs[DESCRIPTOR_INPUT] = descriptors
            ok &= desc_ok
            for index, reason in local:
                seen.setdefault(index, reason)
        if failures is not None:
            failures.extend(sorted(seen.items()))
        return inputs, ok

    def fit_head(
        self,
        features: np.ndarray,
        labels_idx: np.ndarray,
        *,
        epochs: int,
        progress: Callable[[int, int, dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        seed: int = 0,
        warm: bool = False,
        refit: bool = True,
    ) -> CalibratedHead:
        """Fit and calibrate the head on cached features and install it; labels
        index `class_ids`.  The same procedure as the simulator's
        (worker/ml/head.py): validation split, head training, temperature.

        ``warm`` starts from the head this classifier already has (a loaded
        earlier model) instead of a fresh one.  ``refit``: the installed head is
        fitted on every label once validation has done its job (worker/ml/head.py).
        """
        initial = self.model.get_layer(HEAD_LAYER).get_weights() if warm else None
        config = HeadFit(epochs=epochs)
        result = fit_calibrated_head(
            features, labels_idx, len(self.class_ids), config, seed=seed,
            initial=initial, progress=progress, should_stop=should_stop, refit=refit,
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
        train_descriptors: np.ndarray | None = None,
        val_descriptors: np.ndarray | None = None,
    ) -> dict[str, list[float]]:
        """Phase 2: unfreeze the top ``blocks`` and train on augmented images.

        A two-input classifier keeps its descriptor input: each cell's raw
        descriptors (given, or computed here) ride beside its augmented image.
        The backbone changes, so features cached for the old one no longer
        describe this model: callers re-extract them afterwards.
        """
        if not self.has_image_input:
            raise ValueError("a descriptors-only classifier has no backbone to fine-tune")
        if DESCRIPTORS in parts_of(self.sources):
            from worker.ml.descriptors import compute_descriptors

            if train_descriptors is None:
                train_descriptors = compute_descriptors(train_paths)[0]
            if val_descriptors is None:
                val_descriptors = compute_descriptors(val_paths)[0]
        else:
            train_descriptors = val_descriptors = None
        from worker.ml.finetune import fine_tune, unfreeze_top_blocks
        from worker.ml.pipeline import image_dataset
        from worker.ml.train import class_weights

        unfreeze_top_blocks(self.model, blocks)
        train = image_dataset(train_paths, train_labels, self.input_size, batch_size,
                              augment=True, shuffle=True, seed=seed,
                              descriptors=train_descriptors)
        val = image_dataset(val_paths, val_labels, self.input_size, batch_size,
                            augment=False, shuffle=False,
                            descriptors=val_descriptors) if len(val_paths) else None
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

        Rows of images that failed to load are zero.  Works for every shape: an
        image-only model runs over image batches as before; a model with a
        descriptor input gets each batch's raw descriptors beside its images.
        """
        if self.sources == "backbone":
            return apply_to_images(self.model, paths, self.input_size, batch_size, progress,
                                   failures)
        probs = np.zeros((len(paths), len(self.class_ids)), dtype=np.float32)
        ok = np.zeros(len(paths), dtype=bool)
        for start in range(0, len(paths), batch_size):
            chunk = list(paths[start:start + batch_size])
            local: list[tuple[int, str]] = []
            inputs, chunk_ok = self.model_inputs(chunk, local)
            rows = np.flatnonzero(chunk_ok)
            if len(rows):
                batch = {name: x[rows] for name, x in inputs.items()}
                if len(batch) == 1:  # a one-input model takes its array, not a dict
                    batch = next(iter(batch.values()))
                probs[start + rows] = np.asarray(self.model(batch, training=False))
            ok[start:start + len(chunk)] = chunk_ok
            if failures is not None:
                failures.extend((start + i, why) for i, why in local)
            if progress is not None:
                progress(start + len(chunk), len(paths))
        return probs, ok

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
            "feature_sources": self.sources,
        }
        if DESCRIPTORS in parts_of(self.sources):
            from worker.ml.descriptors import DESCRIPTOR_VERSION, FEATURE_NAMES

            # The descriptor input must be fed what worker.ml.descriptors computes
            # at this version, in this order.
            metadata["descriptor_version"] = DESCRIPTOR_VERSION
            metadata["descriptor_names"] = FEATURE_NAMES
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
        version = metadata.get("descriptor_version")
        if version is not None:
            from worker.ml.descriptors import DESCRIPTOR_VERSION

            if version != DESCRIPTOR_VERSION:
                raise ValueError(
                    f"model {path.name} was trained on descriptors version {version}; this "
                    f"worker computes version {DESCRIPTOR_VERSION}: retrain the project")
        return cls(
            model,
            metadata["class_ids"],
            metadata["input_size"],
            backbone_weights=metadata.get("backbone_weights", "unknown"),
        )

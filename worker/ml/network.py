"""The classifier: an InceptionV3 backbone and/or cell descriptors, with a small softmax head.

Three shapes, by the project's feature sources (models/feature_sources.py):

- ``backbone``: image -> InceptionV3 -> gap -> dropout -> head (as before issue 15);
- ``descriptors``: descriptors -> descriptor_norm -> dropout -> head (no backbone at all);
- ``both``: image -> InceptionV3 -> gap -> backbone_norm, and descriptors ->
  descriptor_norm, concatenated (head_input) -> dropout -> head.

The Normalization layers hold each part's standardisation (mean, variance) in
the saved model, so predicting on images, scoring cached features
(worker/ml/feature_parts.py reads them back) and an exported model apply the
same numbers.  The descriptor input takes *raw* descriptors as computed by
worker.ml.descriptors.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras

from worker.ml.head import HEAD_DROPOUT
from worker.ml.weights import (
    EXPLICIT_DOWNLOAD_TIMEOUT,
    IMAGENET_NOTOP_FILE,
    WeightsError,
    fetch_imagenet_notop,
    keras_cache_dir,
    short_reason,
)

FEATURE_DIM = 2048
MIN_INPUT_SIZE = 75  # InceptionV3's smallest accepted input

BACKBONE_LAYER = "backbone"
FEATURES_LAYER = "gap"
DROPOUT_LAYER = "dropout"
HEAD_LAYER = "head"
IMAGE_INPUT = "image"
DESCRIPTOR_INPUT = "descriptors"
BACKBONE_NORM_LAYER = "backbone_norm"
DESCRIPTOR_NORM_LAYER = "descriptor_norm"
HEAD_INPUT_LAYER = "head_input"


def build_classifier(
    num_classes: int,
    input_size: int,
    weights: str | None,
    dropout: float = HEAD_DROPOUT,
    seed: int | None = None,
    sources: str = "backbone",
    descriptor_dim: int | None = None,
) -> keras.Model:
    """Build the classifier for ``sources`` (see the module docstring).

    `weights` is None, "imagenet" or a path to a weights file for an InceptionV3
    without top (as returned by `resolve_backbone_weights`); unused without a
    backbone.  ``descriptor_dim`` defaults to worker.ml.descriptors.DESCRIPTOR_DIM.
    The Normalization layers start as the identity (mean 0, variance 1):
    CellClassifier.set_standardisation fills them in.
    """
    from models.feature_sources import uses_backbone, uses_descriptors

    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    with_backbone, with_descriptors = uses_backbone(sources), uses_descriptors(sources)
    if with_backbone and input_size < MIN_INPUT_SIZE:
        raise ValueError(
            f"input_size must be at least {MIN_INPUT_SIZE} for InceptionV3, got {input_size}"
        )
    if seed is not None:
        keras.utils.set_random_seed(seed)

    inputs, parts = [], []
    if with_backbone:
        # Find the weights file before spending seconds on building the network.
        weights_file: Path | None = None
        if weights == "imagenet":
            weights_file = imagenet_weights_file()
        elif weights is not None:
            weights_file = Path(weights)
            if not weights_file.is_file():
                raise WeightsError(f"Backbone weights file {weights_file} does not exist.")

        shape = (input_size, input_size, 3)
        backbone = keras.applications.InceptionV3(
            include_top=False, weights=None, input_shape=shape, name=BACKBONE_LAYER
        )
        if weights_file is not None:
            load_backbone_weights(backbone, weights_file)
        # Only the head is ever trained (on cached features); freezing the backbone
        # also keeps its BatchNorm layers in inference mode.
        backbone.trainable = False

        image = keras.Input(shape=shape, name=IMAGE_INPUT)
        x = backbone(image, training=False)
        x = keras.layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)
        if with_descriptors:
            x = _normalization(BACKBONE_NORM_LAYER, FEATURE_DIM)(x)
        inputs.append(image)
        parts.append(x)
    if with_descriptors:
        if descriptor_dim is None:
            from worker.ml.descriptors import DESCRIPTOR_DIM

            descriptor_dim = DESCRIPTOR_DIM
        descriptors = keras.Input(shape=(descriptor_dim,), name=DESCRIPTOR_INPUT)
        inputs.append(descriptors)
        parts.append(_normalization(DESCRIPTOR_NORM_LAYER, descriptor_dim)(descriptors))
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name=HEAD_INPUT_LAYER)(parts)
    x = keras.layers.Dropout(dropout, name=DROPOUT_LAYER)(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", name=HEAD_LAYER, dtype="float32"
    )(x)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs,
                       name="cell_classifier")


def _normalization(name: str, dim: int) -> keras.layers.Normalization:
    """A part's standardisation, stored with the model; the identity until it is set."""
    layer = keras.layers.Normalization(axis=-1, name=name, dtype="float32")
    layer.build((None, dim))
    return layer


def sources_of(model: keras.Model) -> str:
    """The feature sources a built (or loaded) classifier reads."""
    names = {layer.name for layer in model.layers}
    with_backbone, with_descriptors = BACKBONE_LAYER in names, DESCRIPTOR_INPUT in names
    if with_backbone and with_descriptors:
        return "both"
    return "descriptors" if with_descriptors else "backbone"


def imagenet_weights_file() -> Path:
    """The cached ImageNet notop file, downloading it if needed, or WeightsError."""
    try:
        return fetch_imagenet_notop(EXPLICIT_DOWNLOAD_TIMEOUT)
    except WeightsError:
        raise  # a cached or downloaded file failed the hash check: its own message says so
    except Exception as exc:  # noqa: BLE001 - any failure is reported as WeightsError, with its reason
        raise WeightsError(
            "ImageNet weights for the backbone could not be downloaded "
            f"({short_reason(exc)}). Put {IMAGENET_NOTOP_FILE} in "
            f"{keras_cache_dir() / 'models'}, or use the 'auto' or 'none' setting."
        ) from None


def load_backbone_weights(backbone: keras.Model, path: Path) -> None:
    """Load an InceptionV3-notop weights file into `backbone`, strictly.

    Loading is topological (layer order), as Keras does for its own ImageNet
    file: the names Keras 3 gives InceptionV3's layers ("conv2d_94", ...) depend
    on how many layers the process created before, so name-based loading
    would silently match nothing. Any mismatch is an error, never a skip:
    a half-loaded backbone would look like it works and classify badly.
    """
    try:
        # Keras 3's .weights.h5 loader warns once per unmatched layer (hundreds
        # here) and sometimes only warns; collect instead, and treat any
        # "skipping" as the mismatch it is.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            backbone.load_weights(str(path))
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a file that does not fit
        raise WeightsError(
            f"Backbone weights file {path} does not fit an InceptionV3 without top "
            f"({short_reason(exc)})."
        ) from None
    skipped = [w for w in caught if "skipping" in str(w.message).lower()]
    if skipped:
        first = str(skipped[0].message).splitlines()[0][:120]
        raise WeightsError(
            f"Backbone weights file {path} does not fit an InceptionV3 without top "
            f"({len(skipped)} parts not loaded, e.g. {first})."
        )
    for warning in caught:  # anything else is Keras' business: pass it on
        warnings.warn_explicit(
            warning.message, warning.category, warning.filename, warning.lineno
        )


def backbone_of(model: keras.Model) -> keras.Model:
    """Feature extractor sharing `model`'s weights: image -> 2048 pooled features (raw)."""
    return keras.Model(
        model.get_layer(IMAGE_INPUT).output, model.get_layer(FEATURES_LAYER).output,
        name="feature_extractor"
    )

"""Grad-CAM (Selvaraju et al., 2017): where in the cell the model looked.

The class score's gradient with respect to the backbone's last convolutional
block (InceptionV3's ``mixed10``, as it enters the pooling layer), averaged
over space, weighs that block's channels; their weighted sum, clipped at
zero, is the map.  The score is the predicted class's logit (before the
softmax, which would flatten the gradient of a confident prediction).

Only the image branch is differentiated: a model with more inputs (cell
descriptors beside the backbone) gets them as constants, so the map shows
what the pixels contributed.  A model without an image input gets no map.

The map has the last block's resolution: 8x8 at 299 px, 2x2 at 128 px and a
single value at 75 px (InceptionV3 divides by about 32), so small inputs give
coarse maps; callers report the grid with the picture.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from worker.ml.network import HEAD_LAYER

NO_PIXELS_NOTE = "no heatmap: this model reads cell measurements (shape and stain), not pixels"

_explainers: "weakref.WeakKeyDictionary[keras.Model, Callable | None]" = (
    weakref.WeakKeyDictionary()
)


def image_input_index(model: keras.Model) -> int | None:
    """Which of the model's inputs is the image: the one named ``image``, else
    the only one of rank 4 (batch, height, width, channels); None if none is."""
    inputs = list(model.inputs)
    for i, tensor in enumerate(inputs):
        if tensor.name == "image" and len(tensor.shape) == 4:
            return i
    ranked = [i for i, tensor in enumerate(inputs) if len(tensor.shape) == 4]
    return ranked[0] if len(ranked) == 1 else None


def last_conv_maps(model: keras.Model):
    """The last rank-4 tensor a layer of ``model`` takes in: the backbone's last
    block where the pooling reads it.  (Layer inputs, not outputs: the
    backbone is a nested model whose ``output`` belongs to its own graph.)"""
    for layer in reversed(model.layers):
        try:
            tensors = tf.nest.flatten(layer.input)
        except (AttributeError, ValueError):
            continue  # an input layer, or a layer used more than once
        for tensor in tensors:
            if len(getattr(tensor, "shape", ())) == 4:
                return tensor
    return None


def _head(model: keras.Model) -> keras.layers.Dense | None:
    try:
        layer = model.get_layer(HEAD_LAYER)
    except ValueError:
        return None
    return layer if isinstance(layer, keras.layers.Dense) else None


def _explainer(model: keras.Model) -> Callable | None:
    """A traced function inputs -> (probabilities, maps), or None without an image input."""
    if model in _explainers:
        return _explainers[model]
    image_index = image_input_index(model)
    conv = last_conv_maps(model) if image_index is not None else None
    if conv is None:
        _explainers[model] = None
        return None
    head = _head(model)
    # The head's input gives the logits; without a Dense head, the log of the output.
    last = head.input if head is not None else model.output
    others = [t for i, t in enumerate(model.inputs) if i != image_index]
    # Split at the maps: the backbone runs once, unrecorded, and only the few
    # layers after it are differentiated (a tape over the whole backbone
    # would double a one-image prediction's time).
    backbone = keras.Model(model.inputs[image_index], conv, name="gradcam_maps")
    rest = keras.Model([conv, *others], last, name="gradcam_rest")
    # Traced once for any batch size: a request of one image and one of ten
    # share the same graph.
    signature = [[tf.TensorSpec([None, *t.shape[1:]], tf.float32) for t in model.inputs]]

    @tf.function(input_signature=signature)
    def explain(inputs: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        maps = backbone(inputs[image_index], training=False)
        rest_inputs = [maps, *(x for i, x in enumerate(inputs) if i != image_index)]
        with tf.GradientTape() as tape:
            tape.watch(maps)
            before = rest(rest_inputs, training=False)
            if head is not None:
                logits = tf.matmul(tf.cast(before, tf.float32), head.kernel) + head.bias
            else:
                logits = tf.math.log(tf.maximum(tf.cast(before, tf.float32), 1e-30))
            chosen = tf.argmax(logits, axis=1)
            score = tf.reduce_sum(tf.gather(logits, chosen, batch_dims=1))
        grads = tf.cast(tape.gradient(score, maps), tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2))  # [n, channels]
        cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", tf.cast(maps, tf.float32), weights))
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        cam = tf.math.divide_no_nan(cam, peak)
        return tf.nn.softmax(logits), cam

    _explainers[model] = explain
    return explain


def _ordered(model: keras.Model, inputs) -> list[np.ndarray]:
    """The inputs as a list in the model's order (from a dict by name, a list, or one array)."""
    if isinstance(inputs, Mapping):
        return [np.asarray(inputs[t.name], dtype=np.float32) for t in model.inputs]
    if isinstance(inputs, (list, tuple)):
        return [np.asarray(x, dtype=np.float32) for x in inputs]
    return [np.asarray(inputs, dtype=np.float32)]


def grad_cam(model: keras.Model, inputs) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities ``[n, k]`` (the model's own output, uncalibrated) and
    Grad-CAM maps ``[n, h, w]`` in [0, 1] for the predicted classes, from one
    forward pass.  Maps are None when the model has no image input (see
    NO_PIXELS_NOTE); the probabilities are then a plain forward pass.
    """
    ordered = _ordered(model, inputs)
    if len(ordered[0]) == 0:
        return np.zeros((0, int(model.output.shape[-1])), np.float32), None
    explain = _explainer(model)
    if explain is None:
        return np.asarray(model(ordered if len(ordered) > 1 else ordered[0],
                                training=False), dtype=np.float32), None
    probs, cams = explain([tf.constant(x) for x in ordered])
    return probs.numpy().astype(np.float32), cams.numpy()


def grid_of(cams: Sequence[np.ndarray] | np.ndarray) -> tuple[int, int] | None:
    """The maps' resolution (rows, columns), for saying how coarse they are."""
    if cams is None or len(cams) == 0:
        return None
    return int(cams[0].shape[0]), int(cams[0].shape[1])

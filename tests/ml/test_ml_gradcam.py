"""Grad-CAM (worker/ml/gradcam.py): it points where the evidence is, its probabilities
are the classifier's, it differentiates the image branch only when the model has a
second input, and a model without an image input gets no map but its prediction."""

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs TensorFlow (the cpu or gpu extra)")

import keras
import tensorflow as tf
from PIL import Image

from worker.ml.backend import CellClassifier
from worker.ml.gradcam import NO_PIXELS_NOTE, grad_cam, image_input_index, last_conv_maps
from worker.ml.network import FEATURES_LAYER, HEAD_LAYER, build_classifier
from worker.prediction import explain_files
from tests.model_helpers import demo_cells

pytestmark = pytest.mark.slow


def _red_detector(extra_input: bool = False) -> keras.Model:
    """image -> 1x1 conv reading the red channel -> pooling -> head: class 0 is
    "red somewhere", so Grad-CAM must light up where the red is."""
    image = keras.Input((16, 16, 3), name="image")
    conv = keras.layers.Conv2D(1, 1, activation="relu", name="conv")(image)
    pooled = keras.layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(conv)
    inputs = [image]
    if extra_input:
        descriptors = keras.Input((2,), name="descriptors")
        inputs.append(descriptors)
        pooled = keras.layers.Concatenate()([pooled, descriptors])
    head = keras.layers.Dense(2, activation="softmax", name=HEAD_LAYER)(pooled)
    model = keras.Model(inputs, head)
    model.get_layer("conv").set_weights([np.array([1.0, 0, 0]).reshape(1, 1, 3, 1),
                                         np.zeros(1)])
    kernel = np.array([[4.0, -4.0]] + ([[0.0, 0.0], [50.0, -50.0]] if extra_input else []))
    model.get_layer(HEAD_LAYER).set_weights([kernel, np.array([-0.1, 0.1])])
    return model


def _red_blob() -> np.ndarray:
    x = np.zeros((1, 16, 16, 3), np.float32)
    x[0, 2:6, 10:14, 0] = 1.0  # top right
    return x


def test_the_map_lights_up_where_the_evidence_is():
    model = _red_detector()
    probs, cams = grad_cam(model, _red_blob())
    assert probs.argmax() == 0 and cams.shape == (1, 16, 16)
    cam = cams[0]
    assert cam[2:6, 10:14].min() == pytest.approx(1.0)
    assert cam.max() == pytest.approx(1.0)
    outside = np.ones_like(cam, bool)
    outside[2:6, 10:14] = False
    assert cam[outside].max() == 0.0
    np.testing.assert_allclose(probs, model(_red_blob()).numpy(), atol=1e-6)


def test_a_second_input_is_held_constant():
    """Only the image branch is differentiated; the descriptors change the class
    but not where in the picture the map points."""
    model = _red_detector(extra_input=True)
    assert image_input_index(model) == 0
    x = _red_blob()
    for descriptors, expected in [([0.0, 0.0], 0), ([0.0, 1.0], 0)]:
        probs, cams = grad_cam(model, {"image": x, "descriptors": np.array([descriptors])})
        assert probs.argmax() == expected
        assert cams[0][2:6, 10:14].min() == pytest.approx(1.0)
    # Descriptors that outvote the image: class 1, whose logit falls with red,
    # so the map (positive evidence for class 1) is empty rather than wrong.
    probs, cams = grad_cam(model, {"image": x, "descriptors": np.array([[0.0, -1.0]])})
    assert probs.argmax() == 1 and cams.max() == 0.0


def test_a_model_without_pixels_gets_no_map(tmp_path):
    inputs = keras.Input((4,), name="descriptors")
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name=HEAD_LAYER)(inputs))
    assert image_input_index(model) is None and last_conv_maps(model) is None
    probs, cams = grad_cam(model, np.ones((2, 4), np.float32))
    assert cams is None and probs.shape == (2, 3)


class _DescriptorsOnly(CellClassifier):
    """A classifier whose model reads a number per image, not the image (what the
    features helper's descriptor-only setting amounts to)."""

    def model_inputs(self, paths, failures=None):
        values = np.array([[float(np.asarray(Image.open(p)).mean()) / 255] for p in paths],
                          np.float32)
        return {"descriptors": values}, np.ones(len(paths), bool)

    def predict(self, paths, batch_size, progress=None, failures=None):
        inputs, ok = self.model_inputs(paths)
        return self.model(inputs["descriptors"]).numpy(), ok


def test_explain_files_says_when_a_model_does_not_look_at_pixels(tmp_path):
    inputs = keras.Input((1,), name="descriptors")
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name=HEAD_LAYER)(inputs))
    clf = _DescriptorsOnly(model, [7, 9], 75)
    paths, _ = demo_cells(1)
    result = explain_files(clf, paths[:2], 1.0, {7: "a", 9: "b"})
    assert result["note"] == NO_PIXELS_NOTE and result["grid"] is None
    assert all(item["cam"] is None and len(item["top"]) == 2 for item in result["items"])


@pytest.fixture(scope="module")
def inception():
    return CellClassifier(build_classifier(3, 128, None, seed=1), [1, 2, 3], 128)


def test_inception_maps_match_a_direct_gradient_and_predict(inception, tmp_path):
    """On the real network: the backbone's last block (mixed10, 2x2 at 128 px), the
    weights computed as the paper says with a tape over the whole model, and the
    probabilities equal CellClassifier.predict's."""
    paths, _ = demo_cells(2)
    paths = paths[:3]
    inputs, ok = inception.model_inputs(paths)
    assert ok.all() and list(inputs) == ["image"]
    probs, cams = grad_cam(inception.model, inputs)
    expected, _ = inception.predict(paths, 8)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert cams.shape == (3, 2, 2) and cams.min() >= 0 and cams.max() <= 1

    model = inception.model
    direct = keras.Model(model.inputs, [last_conv_maps(model), model.get_layer(HEAD_LAYER).input])
    image = tf.constant(inputs["image"])
    kernel, bias = model.get_layer(HEAD_LAYER).get_weights()
    with tf.GradientTape() as tape:
        tape.watch(image)
        maps, before = direct(image, training=False)
        logits = before @ kernel + bias
        score = tf.reduce_sum(tf.gather(logits, tf.argmax(logits, axis=1), batch_dims=1))
    weights = tf.reduce_mean(tape.gradient(score, maps), axis=(1, 2))
    cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", maps, weights)).numpy()
    cam = cam / np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
    np.testing.assert_allclose(cams, cam, atol=1e-4)


def test_explain_files_gives_maps_and_reports_bad_files(inception, tmp_path):
    paths, _ = demo_cells(1)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(paths[0].read_bytes()[:500])
    files = [paths[0], broken, paths[1]]
    result = explain_files(inception, files, 2.0, {1: "x", 2: "y", 3: "z"})
    assert result["grid"] == [2, 2] and result["note"] is None
    first, bad, third = result["items"]
    assert "cannot read the image" in bad["error"]
    _, cams = grad_cam(inception.model, inception.model_inputs([paths[0], paths[1]])[0])
    for item, cam in ((first, cams[0]), (third, cams[1])):
        assert item["error"] is None and len(item["top"]) == 3
        assert item["confidence"] == item["top"][0]["probability"]
        np.testing.assert_allclose(item["cam"], cam, atol=1e-4)  # rows of numbers, JSON-ready
        assert max(max(row) for row in item["cam"]) == pytest.approx(1.0, abs=1e-4)

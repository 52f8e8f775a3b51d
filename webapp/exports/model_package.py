"""A model version as a package anyone can use without hemaloop.

The zip holds:

- ``model.keras``: the version's saved network, copied byte for byte (never loaded
  here: the web process does not import TensorFlow);
- ``model_card.json``: classes in output order, input size and preprocessing, the
  calibration temperature, test metrics, label counts, backbone weights, dates;
- ``predict.py`` with ``pixels.py`` (hemaloop's own 8-bit conversion, so high
  bit-depth cells are read the same way): load the package and classify images
  with TensorFlow, NumPy and Pillow alone;
- ``README.txt``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

import models.pixels
from models import ModelVersion, Project, TrainingRound, utcnow
from models.images import Split

from .filters import LABELED, ExportError, Filters
from .labels import iter_label_rows
from .zipstream import Member, stream_zip

PACKAGE_FILES = Path(__file__).resolve().parent / "package"
FORMAT = "hemaloop-model-package/1"
# Layer names of worker/ml/network.py's classifier: the head reads the output of
# "gap" (backbone only), "descriptor_norm" (descriptors only) or "head_input" (both).
HEAD_LAYER = "head"
FEATURES_LAYER = {"backbone": "gap", "descriptors": "descriptor_norm", "both": "head_input"}
DESCRIPTOR_LIMIT = (
    "This model also reads cell descriptors (stain colour and nucleus shape). They must be "
    "computed exactly as hemaloop computes them, with worker.ml.descriptors at the "
    "descriptor version in this card: predict.py imports it, so run it where hemaloop is "
    "installed with its worker extras (pip install 'hemaloop[cpu]': NumPy, SciPy, "
    "scikit-image). The package does not carry that code.")

README = """hemaloop model package: {project}, model version {version}

  model.keras       the trained network (Keras 3; InceptionV3 backbone, softmax head)
  model_card.json   classes in output order, input size, preprocessing, temperature,
                    test metrics, label counts, dates
  predict.py        python predict.py cell.jpg ...   (needs tensorflow, numpy, pillow)
  pixels.py         how hemaloop turns any image into 8-bit RGB (used by predict.py)

Calibrated probabilities = softmax(logits / temperature), where logits are the head's
pre-softmax outputs; predict.py computes them.  The saved model's own output is the
uncalibrated softmax (temperature 1).
{descriptors}"""


def package_version(session: Session, project: Project, version_id: int | None = None
                    ) -> ModelVersion:
    """The version to package: the one asked for, or the project's active one."""
    if version_id is not None:
        version = session.get(ModelVersion, version_id)
        if version is None or version.project_id != project.id:
            raise ExportError(f"Project {project.name} has no model version {version_id}.", 404)
        return version
    version = session.scalar(select(ModelVersion).where(
        ModelVersion.project_id == project.id, ModelVersion.is_active))
    if version is None:
        raise ExportError(f"Project {project.name} has no active model yet: run a round first.",
                          409)
    return version


def _label_counts(session: Session, project: Project) -> dict[str, dict[str, int]]:
    counts = {"train": Counter(), "test": Counter()}
    for row in iter_label_rows(session, project, Filters(frozenset({LABELED}))):
        counts["train" if row.split == Split.POOL.value else "test"][row.final_label] += 1
    return {split: {c.name: counter.get(c.name, 0) for c in project.classes}
            for split, counter in counts.items()}


def _iso(moment) -> str | None:
    return moment.isoformat() if moment else None


def version_sources(version: ModelVersion) -> str:
    """What the version's head reads (versions from before issue 15: the backbone)."""
    return (version.config or {}).get("feature_sources") or "backbone"


def model_card(session: Session, project: Project, version: ModelVersion) -> dict:
    names = {c.id: c.name for c in project.classes}
    sources = version_sources(version)
    rnd = session.get(TrainingRound, version.round_id)
    metrics = version.metrics or {}
    return {
        "format": FORMAT,
        "project": project.name,
        "model_version": version.id,
        "round": version.round_id,
        "is_active": version.is_active,
        "classes": [names.get(c, f"class {c}") for c in version.class_ids],
        "class_ids": version.class_ids,
        "input_size": version.input_size,
        "preprocessing": {
            "input": f"RGB, {version.input_size} x {version.input_size} pixels, float32, "
                     "shape [batch, height, width, 3]",
            "steps": [
                "decode with Pillow; first frame of multi-frame files",
                ("8-bit RGB: 16-bit and float greyscale scaled to 0..255, not clipped "
                 "(pixels.py); other modes by Pillow's convert('RGB')"),
                (f"resize to {version.input_size} x {version.input_size} with bilinear "
                 "resampling (the aspect ratio is not kept)"),
                "scale to [-1, 1]: x / 127.5 - 1 (InceptionV3's 'tf' preprocessing)",
            ],
        },
        "output": {
            "model_output": "softmax over the classes, uncalibrated (temperature 1)",
            "calibrated": "softmax(logits / temperature), logits = features @ kernel + bias "
                          "of the head layer (predict.py)",
        },
        "layers": {"features": FEATURES_LAYER[sources], "head": HEAD_LAYER},
        # Which inputs the Keras model takes: "image" and/or "descriptors" (raw, as
        # worker.ml.descriptors computes them; the model standardises them itself).
        "feature_sources": sources,
        "inputs": ([] if sources == "descriptors" else ["image"])
        + ([] if sources == "backbone" else ["descriptors"]),
        "descriptors": None if sources == "backbone" else {
            "computed_by": "worker.ml.descriptors.describe_path (hemaloop)",
            "version": (version.config or {}).get("descriptor_version"),
            "limit": DESCRIPTOR_LIMIT,
        },
        "temperature": version.temperature,
        "metrics": {"test": metrics.get("test"), "validation": metrics.get("validation"),
                    "train_accuracy": metrics.get("train_accuracy")},
        "n_train": version.n_train,
        # Counted when the package is made: labels added since the round are included.
        "label_counts_at_export": _label_counts(session, project),
        "backbone_weights": version.backbone_weights,
        "training_config": version.config or {},
        "dates": {
            "round_started": _iso(rnd.started_at) if rnd else None,
            "trained": _iso(version.created_at),
            "activated": _iso(version.activated_at),
            "exported": _iso(utcnow()),
        },
    }


def model_package_zip(session: Session, project: Project, storage_dir: Path,
                      version: ModelVersion) -> Iterator[bytes]:
    """The package's bytes, streamed; ExportError (before any byte) if the file is gone."""
    artifact = Path(storage_dir) / version.artifact_path
    if not artifact.is_file():
        raise ExportError(f"The file of model version {version.id} is missing from the store.",
                          410)
    card = json.dumps(model_card(session, project, version), indent=2).encode()
    readme = README.format(
        project=project.name, version=version.id,
        descriptors="" if version_sources(version) == "backbone"
        else "\n" + DESCRIPTOR_LIMIT + "\n").encode()
    members = [
        Member("model.keras", path=artifact),
        Member("model_card.json", data=card),
        Member("predict.py", data=(PACKAGE_FILES / "predict.py").read_bytes()),
        Member("pixels.py", data=Path(models.pixels.__file__).read_bytes()),
        Member("README.txt", data=readme),
    ]
    return stream_zip(members)

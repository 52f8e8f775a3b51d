"""Which features a project's classifier head reads: the one list of names.

``backbone``: the pooled InceptionV3 features (what every project used before
issue 15); ``descriptors``: the cell descriptors (stain colour and nucleus
morphometry, worker/ml/descriptors); ``both``: the two concatenated, each
standardised.  The project column (models/projects.py), the admin form, the
API schema and the worker (worker/head_inputs.py) all read this module.
"""

FEATURE_SOURCES = ("backbone", "descriptors", "both")
# Projects created before the setting existed keep what they were trained on
# (migration 0012's server default).
EXISTING_PROJECTS_SOURCES = "backbone"
# New projects: chosen by measurement on pbc-dev (docs/benchmarks.md, "Head on
# descriptors and backbone (issue 15)"): with a randomly initialised backbone
# (no ImageNet weights offline) the descriptors separate the classes far better.
DEFAULT_FEATURE_SOURCES = "descriptors"

LABELS = {
    "backbone": "Backbone (InceptionV3 pooled features)",
    "descriptors": "Cell descriptors (stain colour and nucleus shape)",
    "both": "Both (backbone and descriptors, each standardised)",
}


def uses_backbone(sources: str) -> bool:
    return check(sources) in ("backbone", "both")


def uses_descriptors(sources: str) -> bool:
    return check(sources) in ("descriptors", "both")


def check(sources: str) -> str:
    if sources not in FEATURE_SOURCES:
        raise ValueError(f"feature sources must be one of {', '.join(FEATURE_SOURCES)}, "
                         f"got {sources!r}")
    return sources

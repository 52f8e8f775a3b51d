"""Request and response bodies of API v1 (marshmallow): the OpenAPI document's source."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import (Boolean, DateTime, Dict, File, Float, Integer, List, Nested,
                             String)
from apiflask.validators import Length, OneOf, Range

from models import Split
from models.feature_sources import FEATURE_SOURCES
from models.labels import DISPUTED, EXCLUDED, FINAL, FLAGGED, OPEN

from ...routing import MAX_ID  # ids are INTEGER on PostgreSQL

STATES = [OPEN, FINAL, EXCLUDED, DISPUTED, FLAGGED]
MAX_PAGE = 500


class ErrorOut(Schema):
    error = String(required=True, metadata={"description": "What went wrong, in a few words."})
    message = String(required=True, metadata={"description": "Why, and what to do."})
    detail = Dict(metadata={"description": "Per-field reasons of a validation error, or more."})


# --- pages --------------------------------------------------------------------------------

class PageQuery(Schema):
    cursor = Integer(load_default=0, validate=Range(min=0, max=MAX_ID),
                     metadata={"description": "The `next_cursor` of the previous page."})
    limit = Integer(load_default=100, validate=Range(min=1, max=MAX_PAGE))


# --- projects -----------------------------------------------------------------------------

class ClassOut(Schema):
    id = Integer(required=True)
    name = String(required=True)
    hotkey = String(required=True, allow_none=True)
    colour = String(required=True, allow_none=True)


class ProjectOut(Schema):
    id = Integer(required=True)
    name = String(required=True)
    classes = List(Nested(ClassOut), required=True)
    blind_reading = Boolean(required=True)
    active_model_version_id = Integer(required=True, allow_none=True)
    feature_sources = String(
        required=True, validate=OneOf(list(FEATURE_SOURCES)),
        metadata={"description": "What the project's classifier head reads: the backbone's "
                                 "pooled features, cell descriptors, or both (issue 15)."})


class ProjectDetailOut(ProjectOut):
    pool = Integer(required=True)
    test = Integer(required=True)
    reader_labeled = Integer(required=True)
    training_labels = Dict(keys=String(), values=Integer(), required=True)


class ProjectList(Schema):
    items = List(Nested(ProjectOut), required=True)


# --- cells --------------------------------------------------------------------------------

class CellQuery(PageQuery):
    split = String(validate=OneOf([s.value for s in Split]))
    state = String(validate=OneOf(STATES), metadata={
        "description": "Curators and admins only: open, final, excluded, disputed, flagged."})
    label = String(validate=Length(min=1, max=100), metadata={
        "description": "Curators and admins only: cells whose final label is this class."})
    predicted_class = String(validate=Length(min=1, max=100), metadata={
        "description": "Cells the active model predicts as this class."})
    min_confidence = Float(validate=Range(min=0, max=1))
    max_confidence = Float(validate=Range(min=0, max=1))


class PredictionOut(Schema):
    model_version_id = Integer(required=True)
    predicted_class = String(required=True, allow_none=True)
    confidence = Float(required=True)
    entropy = Float(required=True)
    margin = Float(required=True)


class CellOut(Schema):
    id = Integer(required=True)
    project_id = Integer(required=True)
    original_name = String(required=True)
    sha256 = String(required=True)
    width = Integer(required=True)
    height = Integer(required=True)
    split = String(required=True)
    created_at = DateTime(required=True)
    image_url = String(required=True)
    prediction = Nested(PredictionOut, required=True, allow_none=True, metadata={
        "description": "The active model's prediction; null without one, or for readers "
                       "of a blind-reading project."})
    state = String(required=True, allow_none=True, metadata={
        "description": "null for pathologists (they do not see others' votes)."})
    final_label = String(required=True, allow_none=True)


class MeasurementsOut(Schema):
    """The cell's measurements (issue 15), computed on a worker; areas in pixels of the
    stored image, and in µm² where the project has a pixel size."""
    descriptor_version = Integer(required=True)
    error = String(required=True, allow_none=True, metadata={
        "description": "Why the cell could not be measured; the values are null then."})
    nucleus_found = Boolean(required=True, allow_none=True)
    cytoplasm_found = Boolean(required=True, allow_none=True)
    nucleus_area_px = Float(required=True, allow_none=True)
    nucleus_area_um2 = Float(required=True, allow_none=True)
    cell_area_px = Float(required=True, allow_none=True)
    nucleus_lobes = Integer(required=True, allow_none=True)
    nucleus_to_cell = Float(required=True, allow_none=True)
    nucleus_circularity = Float(required=True, allow_none=True)
    nucleus_solidity = Float(required=True, allow_none=True)
    chromatin_density = Float(required=True, allow_none=True)
    chromatin_contrast = Float(required=True, allow_none=True)


class CellDetailOut(CellOut):
    measurements = Nested(MeasurementsOut, required=True, allow_none=True, metadata={
        "description": "null until a worker has measured the cell."})


class CellPage(Schema):
    items = List(Nested(CellOut), required=True)
    next_cursor = Integer(required=True, allow_none=True, metadata={
        "description": "null on the last page. A page may hold fewer than `limit` cells "
                       "(state and label filters look at a bounded number of cells per call)."})


# --- leases and annotations ---------------------------------------------------------------

class LeaseIn(Schema):
    skipped = List(Integer(validate=Range(min=1, max=MAX_ID)), load_default=list,
                   validate=Length(max=500),
                   metadata={"description": "Cells to pass over this time (skipped earlier)."})


class LeaseOut(Schema):
    cell = Nested(CellOut, required=True, allow_none=True, metadata={
        "description": "The cell leased to you to label next; null when none needs you."})
    expires_at = DateTime(required=True, allow_none=True)
    model_version_id = Integer(required=True, allow_none=True)
    suggested_class_id = Integer(required=True, allow_none=True)
    remaining = Integer(required=True)


class AnnotationQuery(PageQuery):
    image_id = Integer(validate=Range(min=1, max=MAX_ID))


class AnnotationOut(Schema):
    id = Integer(required=True)
    image_id = Integer(required=True)
    user = String(required=True, allow_none=True)
    kind = String(required=True)
    origin = String(required=True)
    label = String(required=True, allow_none=True)
    flag = String(required=True, allow_none=True)
    retracts_id = Integer(required=True, allow_none=True)
    model_version_id = Integer(required=True, allow_none=True)
    duration_ms = Integer(required=True, allow_none=True)
    submission_id = String(required=True, allow_none=True)
    created_at = DateTime(required=True)


class AnnotationPage(Schema):
    items = List(Nested(AnnotationOut), required=True)
    next_cursor = Integer(required=True, allow_none=True)


class AnnotationIn(Schema):
    image_id = Integer(required=True, validate=Range(min=1, max=MAX_ID))
    choice = String(required=True, validate=Length(min=1, max=100), metadata={
        "description": "A class name of the project, or `ambiguous` / `unusable`."})
    # Optional, and null accepted: a lease without a suggestion passes its nulls on.
    duration_ms = Integer(allow_none=True, validate=Range(min=0, max=2**31))
    model_version_id = Integer(allow_none=True, validate=Range(min=1, max=MAX_ID), metadata={
        "description": "The model whose suggestion you saw (from the lease)."})
    suggested_class_id = Integer(allow_none=True, validate=Range(min=1, max=MAX_ID))
    submission_id = String(allow_none=True, validate=Length(min=1, max=64), metadata={
        "description": "Your id for this decision: a retry with the same id records it once."})


class AnnotationCreated(Schema):
    created = Boolean(required=True, metadata={
        "description": "false when this submission_id was recorded before."})
    annotation = Nested(AnnotationOut, required=True)


class AnnotationUndone(Schema):
    undone = Nested(AnnotationOut, required=True, metadata={
        "description": "The decision now voided (a `retract` row names it)."})


# --- rounds and models --------------------------------------------------------------------

class RoundOut(Schema):
    id = Integer(required=True)
    project_id = Integer(required=True)
    status = String(required=True)
    progress = Float(required=True)
    phase = String(required=True)
    trigger = String(required=True)
    created_at = DateTime(required=True)
    started_at = DateTime(required=True, allow_none=True)
    finished_at = DateTime(required=True, allow_none=True)
    error = String(required=True, allow_none=True)
    warnings = List(String(), required=True)
    n_train = Integer(required=True, allow_none=True)
    n_test = Integer(required=True, allow_none=True)
    n_scored = Integer(required=True, allow_none=True)


class RoundList(Schema):
    items = List(Nested(RoundOut), required=True)


class ModelVersionOut(Schema):
    id = Integer(required=True)
    project_id = Integer(required=True)
    round_id = Integer(required=True)
    is_active = Boolean(required=True)
    activated_at = DateTime(required=True, allow_none=True)
    created_at = DateTime(required=True)
    input_size = Integer(required=True)
    backbone_weights = String(required=True)
    temperature = Float(required=True)
    n_train = Integer(required=True)
    classes = List(String(allow_none=True), required=True)
    metrics = Dict(required=True)


class ModelVersionList(Schema):
    items = List(Nested(ModelVersionOut), required=True)


class ActivationOut(Schema):
    version = Nested(ModelVersionOut, required=True)
    scoring_queued = Boolean(required=True, metadata={
        "description": "false when re-scoring the pool could not be queued (the activation "
                       "stands; cells imported since its round have no suggestion yet)."})



# --- predict --------------------------------------------------------------------------------

class PredictIn(Schema):
    files = List(File(), required=True, validate=Length(min=1), metadata={
        "description": "One or many cell images (repeat the field); at most 50."})
    version = Integer(validate=Range(min=1, max=MAX_ID), metadata={
        "description": "A model version of the project; default: the active one."})
    heatmap_png = Boolean(load_default=False, metadata={
        "description": "Also draw each heatmap over its image and return it as a PNG "
                       "(`heatmap_png` in the answer). Off by default: `heatmap` gives "
                       "the map's values, and drawing adds 10-25 ms a cell."})


class TopClassOut(Schema):
    class_name = String(required=True, data_key="class")
    class_id = Integer(required=True)
    probability = Float(required=True, metadata={"description": "Calibrated (temperature-scaled)."})


class PredictedCellOut(Schema):
    index = Integer(required=True, metadata={"description": "Position of the file in the request."})
    file = String(required=True, metadata={"description": "The file's name as uploaded."})
    error = String(required=True, allow_none=True, metadata={
        "description": "Why this file was not predicted (not an image, corrupt, too large); "
                       "null when it was."})
    predicted_class = String(required=True, allow_none=True)
    class_id = Integer(required=True, allow_none=True)
    confidence = Float(required=True, allow_none=True, metadata={
        "description": "The predicted class's calibrated probability."})
    top = List(Nested(TopClassOut), required=True, metadata={"description": "The top three."})
    heatmap = List(List(Float()), required=True, allow_none=True, metadata={
        "description": "The Grad-CAM map: rows of values in [0, 1] (`heatmap_grid` rows "
                       "and columns) to stretch over the whole image; null without one."})
    heatmap_png = String(required=True, allow_none=True, metadata={
        "description": "The map drawn over the image, base64-encoded PNG, when the request "
                       "set `heatmap_png`; otherwise null."})


class PredictOut(Schema):
    model_version_id = Integer(required=True)
    upload_id = String(required=True, metadata={
        "description": "The upload, kept for a day on the server (the Predict page can add "
                       "its cells to the project)."})
    note = String(required=True, allow_none=True, metadata={
        "description": "e.g. 'no heatmap: this model reads cell measurements (shape and stain), "
                       "not pixels'."})
    heatmap_grid = List(Integer(), required=True, allow_none=True, metadata={
        "description": "Rows and columns of the heatmap before it is stretched over the image."})
    items = List(Nested(PredictedCellOut), required=True)

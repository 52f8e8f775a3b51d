"""Request and response bodies of API v1's imports and exports (marshmallow; the
OpenAPI document's source, as schemas.py is for the other resources)."""

from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, DateTime, File, Float, Integer, List, Nested, String
from apiflask.validators import Length, Range

from ...routing import MAX_ID


# --- imports (webapp/api/v1/imports.py) ---------------------------------------------------

class ImportIn(Schema):
    files = List(File(), required=True, validate=Length(min=1), metadata={
        "description": "One zip (class folders inside name the classes), or image files; "
                       "a file's name may hold its class folder: `basophil/x.jpg`."})
    trust_labels = Boolean(load_default=False, metadata={
        "description": "Class-folder names are correct labels: the project trains on "
                       "them (its `train_on_reference`), as `hemaloop import --trust-labels`."})


class ImportOut(Schema):
    id = Integer(required=True)
    project_id = Integer(required=True)
    status = String(required=True, metadata={
        "description": "queued, running, succeeded or failed."})
    source = String(required=True)
    trust_labels = Boolean(required=True)
    files_total = Integer(required=True)
    files_done = Integer(required=True)
    progress = Float(required=True)
    error = String(required=True, allow_none=True)
    created_at = DateTime(required=True)
    finished_at = DateTime(required=True, allow_none=True)
    imported = Integer(required=True, allow_none=True, metadata={
        "description": "Cells imported, once the import has ended (the report has the rest)."})
    report_url = String(required=True, allow_none=True)


class ImportList(Schema):
    items = List(Nested(ImportOut), required=True)
    next_cursor = Integer(required=True, allow_none=True, metadata={
        "description": "Newest first: pass it as `cursor` for older imports; null at the end."})


class RejectedFile(Schema):
    file = String(required=True)
    reason = String(required=True)


class ImportReportOut(Schema):
    import_id = Integer(required=True)
    project_id = Integer(required=True)
    source = String(required=True)
    status = String(required=True)
    trust_labels = Boolean(required=True)
    imported = Integer(required=True)
    duplicates = Integer(required=True)
    labeled = Integer(required=True)
    rejected = List(Nested(RejectedFile), required=True)
    aborted = String(metadata={"description": "Why the import stopped early, if it did."})
    error = String(required=True, allow_none=True)


# --- exports (webapp/api/v1/exports.py) ---------------------------------------------------

class ExportFilterQuery(Schema):
    state = List(String(validate=Length(min=1, max=200)), metadata={
        "description": "Repeat or comma-separate: open, final, excluded, disputed, flagged, "
                       "labeled (any final label, however reached)."})
    class_name = String(data_key="class", validate=Length(min=1, max=100), metadata={
        "description": "Cells whose final label is this class."})
    since = String(validate=Length(min=1, max=40), metadata={
        "description": "Labeled at or after: `2026-11-30` (UTC) or an ISO date-time."})


class ModelExportQuery(Schema):
    version = Integer(validate=Range(min=1, max=MAX_ID), metadata={
        "description": "A model version of the project; the active one when left out."})

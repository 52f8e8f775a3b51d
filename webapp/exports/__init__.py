"""Getting data out of hemaloop: labels (CSV, JSON Lines), class folders (zip), the model
as a package (zip), the agreement report (CSV).

Library code: generators of bytes that a Flask route streams, the CLI writes to a
file and an API route can return as they are (``export_stream`` picks one by format
name).  Only routes.py (the Export page) imports Flask, and nothing here imports
TensorFlow: the model package copies the .keras file.
"""

from .agreement import agreement_csv
from .filters import ExportError, Filters, parse_filters
from .folders import folders_zip
from .formats import FORMATS, export_stream
from .labels import count_cells, iter_label_rows, labels_csv, labels_jsonl
from .model_package import model_package_zip, package_version

__all__ = [
    "FORMATS",
    "ExportError",
    "Filters",
    "agreement_csv",
    "count_cells",
    "export_stream",
    "folders_zip",
    "iter_label_rows",
    "labels_csv",
    "labels_jsonl",
    "model_package_zip",
    "package_version",
    "parse_filters",
]

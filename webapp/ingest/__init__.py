"""Image import: from class folders, flat folders or zip archives into a project."""

from .importer import ImportAborted, ImportReport, import_path
from .sources import count_files
from .validate import RejectedImage, decode

__all__ = ["ImportAborted", "ImportReport", "RejectedImage", "count_files", "decode", "import_path"]

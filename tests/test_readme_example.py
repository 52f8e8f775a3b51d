"""The README's Python example (API section) runs as it is written: extracted from
README.md, given a live server's address and a real token, and run in a fresh Python
process.  It lists cells, labels one through a lease and downloads the labels CSV;
the database and the file it wrote must show it.  SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import re
import subprocess
import sys

from sqlalchemy import func, select

from models import Annotation, Image, Origin
from models.db import session_scope
from tests.api_helpers import make_token, models_with_predictions
from tests.helpers import REPO, make_user

TOKEN_LINE = 'BASE, TOKEN = "http://localhost:5000/api/v1", "hml_..."  # from the Account page'


def readme_example() -> str:
    """The first ```python block under '## API' in README.md."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## API\n"):]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the README's API section has no Python example"
    assert TOKEN_LINE in blocks[0], "the example's first line changed: update TOKEN_LINE"
    return blocks[0]


def test_the_readme_api_example_runs_against_a_live_server(live_server, settings, demo_project,
                                                           tmp_path):
    models_with_predictions(settings, demo_project)  # an active model: confident cells exist
    user = make_user(settings, "cora", "curator")  # exports are for curators and admins
    token = make_token(settings, user, ["read", "label"])
    code = readme_example().replace(
        TOKEN_LINE, f'BASE, TOKEN = "{live_server}/api/v1", "{token}"')

    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\d+ confident cells; next page:", result.stdout, flags=re.M)

    # The label it posted, as the curator, once.
    with session_scope(settings.database_url) as s:
        label = s.scalar(select(Annotation).where(Annotation.submission_id == "my-script-0001"))
        assert label is not None and label.user_id == user and label.origin == Origin.READER
        n_cells = s.scalar(select(func.count(Image.id)).where(Image.project_id == demo_project))
    assert f"'id': {label.id}" in result.stdout

    # The CSV it downloaded: every cell, and the new vote on its row.
    with open(tmp_path / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_cells
    assert [r["votes"] for r in rows if int(r["cell_id"]) == label.image_id] == ["cora=lymphocyte"]

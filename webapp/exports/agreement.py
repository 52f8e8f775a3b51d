"""The agreement report (webapp/curate/agreement_report.py) as one tidy CSV table.

Columns: measure, scope, a, b, cells, value.  One row per figure: Fleiss' kappa and
Krippendorff's alpha overall and per class, Cohen's kappa and raw agreement per
reader pair, each reader's agreement with curator resolutions, and the confusion
counts between readers' votes (a = one reader's choice, b = the other's).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from sqlalchemy.orm import Session

from models import Project
from webapp.curate.agreement_report import agreement_report

COLUMNS = ["measure", "scope", "a", "b", "cells", "value"]


def agreement_rows(session: Session, project: Project) -> Iterator[list]:
    report = agreement_report(session, project)
    yield ["fleiss_kappa", "overall", "", "", report.fleiss_cells, report.fleiss_kappa]
    yield ["krippendorff_alpha", "overall", "", "", report.cells_with_two_or_more,
           report.krippendorff_alpha]
    for name, figures in report.per_class.items():
        yield ["fleiss_kappa", "class", name, "", report.fleiss_cells, figures["fleiss_kappa"]]
        yield ["krippendorff_alpha", "class", name, "", report.cells_with_two_or_more,
               figures["krippendorff_alpha"]]
    for pair in report.pairs:
        a, b = pair["readers"]
        yield ["cohen_kappa", "reader_pair", a, b, pair["cells"], pair["cohen_kappa"]]
        yield ["agreement", "reader_pair", a, b, pair["cells"], pair["agreement"]]
    for item in report.vs_curator:
        yield ["agreement_with_curator", "reader", item["reader"], "", item["cells"],
               item["agreement"]]
    for i, row in enumerate(report.confusion):
        for j, count in enumerate(row):
            if count:
                yield ["confusion", "votes", report.categories[i], report.categories[j], "",
                       count]


def agreement_csv(session: Session, project: Project) -> Iterator[bytes]:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in agreement_rows(session, project):
        writer.writerow(["" if v is None else v for v in row])
    yield out.getvalue().encode()

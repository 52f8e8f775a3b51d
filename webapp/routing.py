"""Ids in URLs: an ``<int:...>`` in a route is a row id, bounded to what the id
columns hold.

Every id column is an SQLAlchemy ``Integer``: a 32-bit ``integer`` on
PostgreSQL, which refuses a larger parameter with NumericValueOutOfRange, and
a 64-bit integer on SQLite, whose driver raises OverflowError beyond that.
An id no column can hold names no row: 404, for every route at once, before
any access check, view or query runs.

A URL value preprocessor rather than a bounded ``int`` converter: with the
converter, a POST to a URL whose GET twin also exists (``/label/<id>/verify``)
answers 405 instead of 404, because Werkzeug's matcher notes the method
mismatch of one rule before the other's converter rejects the value.
"""

from __future__ import annotations

from flask import Flask, abort

# The largest value of PostgreSQL's ``integer`` (the smaller of the two backends).
MAX_ID = 2**31 - 1


def _refuse_ids_out_of_range(_endpoint: str | None, values: dict | None) -> None:
    for value in (values or {}).values():
        # Only the int converter produces ints here (bool never reaches a route).
        if type(value) is int and value > MAX_ID:
            abort(404, description=f"There is nothing with id {value}.")


def install_id_bounds(app: Flask) -> None:
    app.url_value_preprocessor(_refuse_ids_out_of_range)

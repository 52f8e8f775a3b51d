"""URL converters: ``<int:…>`` bounded to what a database id can be.

Werkzeug's int converter takes any number of digits; an id past 64 bits then
reached the database driver and failed there (SQLite: OverflowError, a 500),
and past 31 bits on PostgreSQL ("integer out of range": ids are INTEGER
there).  Found by Schemathesis (tests/test_api_schema.py).  Such an id now
is a 404 like any other missing id (raised while matching: a converter's
ValidationError would let the matcher answer 405 for a route's other methods).
"""

from __future__ import annotations

from werkzeug.exceptions import NotFound
from werkzeug.routing import IntegerConverter

MAX_ID = 2**31 - 1  # every primary key is Integer: PostgreSQL's INTEGER


class IdConverter(IntegerConverter):
    def to_python(self, value: str) -> int:
        number = super().to_python(value)
        if number > MAX_ID:
            raise NotFound(description=f"There is nothing with id {value}.")
        return number

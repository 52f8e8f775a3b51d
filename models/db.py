"""Engines and sessions.

One engine per process and URL; each request, task or command opens its own
short session from it (never one session for a worker's whole life).
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

# Every table mapped and the open_slots flush hook registered before any session
# exists (``import models`` alone loads no table).
from . import tables  # noqa: F401

CONNECT_TIMEOUT_S = 5  # PostgreSQL: libpq's connect_timeout (whole seconds)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the web server read while the worker writes; foreign keys are
    # off by default in SQLite; the busy timeout rides out short write locks.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # A server that does not answer (host down, packets dropped) fails a
        # connection attempt after this long, rather than after the OS's TCP
        # give-up (minutes), so a request ends with a clear error page.
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                               connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    return engine


@lru_cache(maxsize=8)
def get_sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()

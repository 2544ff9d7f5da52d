"""Head office's archive database: SQLite (one file, the default) or PostgreSQL (a chain's), one code path.

Every query of the archive (day/archive.py, day/trust.py, fleet/ingest.py) is written once, in the
SQL both engines understand (`INSERT ... ON CONFLICT`, `?` parameters). Here is only where they
differ: how to connect, the schema's column types, what taking the archive for writing means, and
psycopg's `%s` for `?`.

Writing: SQLite takes the whole file (BEGIN IMMEDIATE: one writer at a time, as it always is);
PostgreSQL takes a transaction-scoped advisory lock on the till written (writers of different
tills go side by side; two ingest workers given the same till's batches take turns). Under that
lock each statement of a READ COMMITTED transaction sees what the previous holder committed, which
is what the checks against archived records need.
"""
from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SQLITE_FILE = "archive.sqlite"
PAGE_SIZE = 65536
URL_SCHEMES = ("postgresql://", "postgres://")
# The schema is written for SQLite; PostgreSQL's names for the same column types.
_PG_TYPES = ((re.compile(r"\bBLOB\b"), "BYTEA"), (re.compile(r"\bINTEGER\b"), "BIGINT"),
             (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"), (re.compile(r"\s*WITHOUT ROWID"), ""))


class ArchiveError(Exception):
    """The archive cannot be opened; str() is the one line to print."""


def is_url(where: str | Path) -> bool:
    return str(where).startswith(URL_SCHEMES)


def shown(where: str | Path) -> str:
    """The archive as logs and messages name it: a URL without its password."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", str(where))


def exists(where: str | Path) -> bool:
    """Is there an archive (a directory with its file, or a database with its tables)?"""
    if not is_url(where):
        return (Path(where) / SQLITE_FILE).is_file()
    db = connect(where)
    try:
        return "records" in db.tables()
    finally:
        db.close()


def connect(where: str | Path) -> Db:
    """The archive at DIR (SQLite, created if new) or at a postgresql:// URL (its database must exist)."""
    if is_url(where):
        try:
            import psycopg
        except ImportError:
            raise ArchiveError("a PostgreSQL archive needs psycopg 3 (Debian: apt install python3-psycopg)") from None
        try:
            return Db(psycopg.connect(str(where), autocommit=True), "postgresql")
        except psycopg.Error as e:
            raise ArchiveError(f"{shown(where)}: cannot connect: {str(e).strip().splitlines()[0]}") from None
    directory = Path(where)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(directory / SQLITE_FILE, isolation_level=None)
        # A new archive only (an existing one keeps its size): a records row holds a whole frame (~300
        # bytes), and with 64 KiB pages an import inserts ~1.5x as many rows per second as with 4 KiB.
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except (OSError, sqlite3.Error) as e:
        raise ArchiveError(f"{directory}: cannot open the archive: {e}") from None
    return Db(conn, "sqlite")


class Db:
    """One connection to the archive; its methods take the SQLite spelling of every statement."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn, self.dialect = conn, dialect
        self.postgres = dialect == "postgresql"
        self._spelled: dict[str, str] = {}
        self._types: dict[str, list[str]] = {}  # per table, its columns' PostgreSQL types (binary COPY)

    def _sql(self, sql: str) -> str:
        if not self.postgres:
            return sql
        spelled = self._spelled.get(sql)
        if spelled is None:  # no query of ours holds a literal ? or %
            spelled = self._spelled[sql] = sql.replace("%", "%%").replace("?", "%s")
        return spelled

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """A cursor: fetchone(), fetchall() and iteration, on both engines."""
        return self.conn.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.postgres:
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self.conn.executemany(sql, rows)

    def insert(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """New rows (the caller knows none is there: a conflict fails the transaction). PostgreSQL
        takes them by COPY, several times faster than row by row."""
        if not rows:
            return
        if self.postgres:
            # Binary COPY: bytea goes as it is (text COPY escapes every byte of every frame).
            types = self._types.get(table)
            if types is None:
                types = self._types[table] = [r[0] for r in self.conn.execute(
                    "SELECT udt_name FROM information_schema.columns WHERE table_schema = current_schema() AND "
                    "table_name = %s ORDER BY ordinal_position", (table,))]
            with self.conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
        else:
            self.conn.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * len(rows[0]))})", rows)

    def create(self, schema: str) -> None:
        """Statements that make or add to tables (CREATE TABLE IF NOT EXISTS, ALTER TABLE ... ADD
        COLUMN), with SQLite's column types."""
        if not self.postgres:
            self.conn.executescript(schema)
            return
        for statement in filter(str.strip, schema.split(";")):
            for pattern, name in _PG_TYPES:
                statement = pattern.sub(name, statement)
            self.conn.execute(statement)

    def columns(self, table: str) -> set[str]:
        if self.postgres:
            return {r[0] for r in self.conn.execute("SELECT column_name FROM information_schema.columns WHERE "
                                                    "table_schema = current_schema() AND table_name = %s", (table,))}
        return {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}

    def tables(self) -> set[str]:
        if self.postgres:
            return {r[0] for r in self.conn.execute("SELECT table_name FROM information_schema.tables WHERE "
                                                    "table_schema = current_schema()")}
        return {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def begin(self, till: str) -> None:
        """A write transaction for one till's records (module docstring)."""
        if self.postgres:
            self.conn.execute("BEGIN")
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("edged archive " + till,))
        else:
            self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")

    def busy_timeout(self, seconds: float) -> None:
        """How long a writer waits for another (SQLite: a stick's import may hold the file a while)."""
        if not self.postgres:  # PostgreSQL's advisory lock waits as long as it takes
            self.conn.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    def close(self) -> None:
        self.conn.close()

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


class ArchiveUnreachable(ArchiveError):
    """The archive's server did not answer: worth trying again later (a service restarts)."""


def is_url(where: str | Path) -> bool:
    return str(where).startswith(URL_SCHEMES)


def shown(where: str | Path) -> str:
    """The archive as logs and messages name it: a URL without its password (user:PASSWORD@ or
    ?password=...)."""
    text = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", str(where))
    return re.sub(r"([?&]password=)[^&]*", r"\1***", text)


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
    return _postgres(str(where)) if is_url(where) else _sqlite(Path(where))


def _postgres(url: str) -> Db:
    try:
        import psycopg
    except ImportError:
        raise ArchiveError("a PostgreSQL archive needs psycopg 3 (Debian: apt install python3-psycopg)") from None
    try:
        # Keepalives: a connection to a server gone silent (a half-open TCP connection) must end,
        # or the till lock it holds would stop every other writer of that till.
        conn = psycopg.connect(url, autocommit=True, connect_timeout=15, keepalives=1, keepalives_idle=30,
                               keepalives_interval=10, keepalives_count=3)
        # A writer never waits for ever on another (a stuck import, a lost client): as SQLite's busy
        # timeout below; then that batch fails and its till sends it again.
        conn.execute("SET lock_timeout = '60s'")
        conn.execute("SET idle_in_transaction_session_timeout = '120s'")
    except psycopg.Error as e:
        raise ArchiveUnreachable(f"{shown(url)}: cannot connect: {str(e).strip().splitlines()[0]}") from None
    return Db(conn, "postgresql")


def _sqlite(directory: Path) -> Db:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(directory / SQLITE_FILE, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=60000")  # a stick's import and the ingest take turns: wait, not fail
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

    def ensure(self, schema: str, added: dict[str, dict[str, str]]) -> None:
        """The tables of `schema` (CREATE TABLE IF NOT EXISTS, SQLite's column types) and the columns
        `added` since ({table: {column: type}}), made where missing. Nothing is changed in an
        archive that has them all (a role that may only read can open it); two programs opening a
        new PostgreSQL archive at once take turns (its CREATE TABLE IF NOT EXISTS is not safe
        side by side)."""
        try:
            if self._complete(schema, added):
                return
            if self.postgres:
                self.conn.execute("BEGIN")
                self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('edged archive schema'))")
            for statement in [s for s in schema.split(";") if s.strip()]:
                self._make(statement)
            for table, columns in added.items():  # tables made before these columns were
                have = self.columns(table)
                for name, kind in columns.items():
                    if name not in have:
                        self._make(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            if self.postgres:
                self.commit()
        except ArchiveError:
            raise
        except Exception as e:  # psycopg's or sqlite3's: a database refusing, not a bug here
            if self.postgres:
                self.rollback()
            raise ArchiveError(f"cannot make the archive's tables: {type(e).__name__}: {e}") from None

    def _make(self, statement: str) -> None:
        if self.postgres:
            for pattern, name in _PG_TYPES:
                statement = pattern.sub(name, statement)
        self.conn.execute(statement)

    def _complete(self, schema: str, added: dict[str, dict[str, str]]) -> bool:
        tables = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", schema))
        have = self.tables()
        return tables <= have and all(set(columns) <= self.columns(table) for table, columns in added.items())

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
        """A write transaction for one till's records (module docstring). READ COMMITTED whatever
        the server's default: each statement must see what the lock's previous holder committed."""
        if self.postgres:
            self.conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            try:
                self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("edged archive " + till,))
            except BaseException:
                self.rollback()
                raise
        else:
            self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Raises when the transaction did not commit (PostgreSQL answers COMMIT on a failed
        transaction with a rollback, not an error)."""
        done = self.conn.execute("COMMIT")
        if self.postgres and done.statusmessage != "COMMIT":
            raise ArchiveError(f"the archive rolled the transaction back ({done.statusmessage})")

    def rollback(self) -> None:
        """Ends the transaction; on a connection already broken there is none left to end."""
        try:
            self.conn.execute("ROLLBACK")
        except Exception:  # noqa: S110 - the server dropped it with the connection
            pass

    def close(self) -> None:
        self.conn.close()

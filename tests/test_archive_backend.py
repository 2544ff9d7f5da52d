"""The archive's two engines behind one code path (edged/day/backend.py), where they could differ:
concurrent writers of one till on PostgreSQL whatever its default isolation, a transaction that
failed never passing for committed, two programs making a new archive's tables at once, passwords
kept out of messages, and what PostgreSQL's text cannot hold."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from edged import identity
from edged.day import archive, backend
from edged.day import trust as keys
from edged.fleet import ingest, wire
from edged.journal import frame as fr

TILL = "t1"


def _batch(n: int, kind: str = "sale") -> bytes:
    frames, chain = [], fr.GENESIS
    for i in range(1, n + 1):
        frame, chain = fr.encode(i, 1_700_000_000_000_000 + i, fr.payload_of(kind, {"n": i}, None, None, None), i, i,
                                 chain)
        frames.append(frame)
    return wire.encode_batch(wire.Batch(TILL, 1, n, fr.GENESIS, frames, 1))


def _enrolled(where: str, tmp_path) -> backend.Db:
    db = archive.open_archive(where)
    keys.enroll(db, TILL, identity.create(str(tmp_path / "till"), 1).public_text)
    return db


def test_two_writers_of_one_till_take_turns_even_under_repeatable_read(postgres, tmp_path):
    """A server whose default is REPEATABLE READ would give the second writer a snapshot from
    before the first committed: it must still see those records (skip them), not fail on the key."""
    where = postgres.create_database("isolation")
    db = _enrolled(where, tmp_path)
    db.execute("ALTER DATABASE isolation SET default_transaction_isolation = 'repeatable read'")
    db.close()
    first, second = archive.open_archive(where), archive.open_archive(where)
    payload = _batch(50)
    first.begin(TILL)  # the first worker holds the till and writes the batch ...
    rows, _ = ingest.check_frames(wire.decode_batch(payload))
    archive._Batches(first, TILL, "", 1, 50)(rows)
    results: list = []
    worker = threading.Thread(target=lambda: results.append(ingest.take(second, wire.up_topic(TILL), payload)))
    worker.start()  # ... the second waits for it, with the same batch (a resend)
    worker.join(0.5)
    assert worker.is_alive()
    first.commit()
    worker.join(30)
    assert [(a.archived_through, a.conflict) for a in results] == [(50, None)]  # skipped: seen as archived
    assert first.execute("SELECT count(*) FROM records").fetchone() == (50,)


def test_a_failed_transaction_never_passes_for_committed(postgres):
    db = archive.open_archive(postgres.create_database("failed"))
    db.begin(TILL)
    import psycopg
    with pytest.raises(psycopg.errors.UndefinedColumn):
        db.execute("SELECT no_such_column FROM records")
    with pytest.raises(backend.ArchiveError, match="rolled the transaction back"):
        db.commit()  # PostgreSQL answers COMMIT here with ROLLBACK, not an error
    db.begin(TILL)  # the connection goes on
    db.commit()


def test_programs_opening_a_new_archive_at_once_make_its_tables_once(postgres):
    for round_ in range(5):
        where = postgres.create_database(f"race{round_}")
        errors: list = []

        def open_it() -> None:
            try:
                archive.open_archive(where).close()
            except Exception as e:  # noqa: BLE001 - what the test looks for
                errors.append(e)
        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []


def test_a_role_that_may_only_read_opens_a_made_archive(postgres, tmp_path):
    where = postgres.create_database("readonly")
    _enrolled(where, tmp_path).close()
    admin = backend.connect(where)
    admin.execute("CREATE ROLE reader LOGIN")
    admin.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
    admin.close()
    db = archive.open_archive(where.replace("user=edged", "user=reader"))
    assert [k.till for k in keys.listed(db)] == [TILL] and archive.status(db) == {}


@pytest.mark.parametrize("url, shown", [
    ("postgresql://ho:s3cret@db.example/archive", "postgresql://ho:***@db.example/archive"),
    ("postgresql://db.example/archive?user=ho&password=s3cret&sslmode=require",
     "postgresql://db.example/archive?user=ho&password=***&sslmode=require"),
    ("/srv/archive", "/srv/archive"),
])
def test_passwords_never_reach_a_message(url, shown):
    assert backend.shown(url) == shown


def test_an_unreachable_database_is_exit_1_so_the_service_tries_again(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edged", "headoffice", "ingest", "--archive",
                          f"postgresql://ho:s3cret@/archive?host={tmp_path}", "--broker", "mqtt://127.0.0.1:1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "cannot connect" in out.stderr and "s3cret" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_kind_with_a_nul_is_refused_by_the_ingest_on_both_engines(archive_at, tmp_path):
    db = _enrolled(archive_at, tmp_path)
    ack = ingest.take(db, wire.up_topic(TILL), _batch(3, kind="sa\0le"))
    assert ack.archived_through == 0 and "NUL" in ack.conflict
    assert db.execute("SELECT count(*) FROM records").fetchone() == (0,)

"""Which till keys head office trusts: the archive's `keys` table, or keys given to `edged verify --key`.

A key belongs to one till (enrolling it for a second till is refused), so a
signature by it also says which till wrote the export: relabelling an export
with another till's id fails. A till can have several keys over time (a lost
key is replaced by one of the next epoch, docs/JOURNAL.md "Signatures"); each
is enrolled on its own, and a retired key signs nothing acceptable any more.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from .. import identity
from .backend import Db

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (fingerprint TEXT PRIMARY KEY, till TEXT NOT NULL, public_key TEXT NOT NULL,
    epoch INTEGER, enrolled_at REAL NOT NULL, retired_at REAL);
"""


class EnrollError(Exception):
    """An enroll/retire/--key that cannot be done; str() is the line to print."""


@dataclass(frozen=True)
class Key:
    till: str
    public: bytes
    epoch: int | None = None  # learnt from the first export it signed, when not given at enrollment
    enrolled_at: float = 0.0
    retired_at: float | None = None

    @property
    def fingerprint(self) -> str:
        return identity.fingerprint(self.public)


class Trust:
    """The keys exports are checked against; `source` says where they came from, for messages."""

    def __init__(self, keys: list[Key], source: str) -> None:
        self.keys = {k.public: k for k in keys}
        self.source = source

    def problem(self, till: str, public: bytes) -> str | None:
        """Why an export of `till` signed by `public` is not to be trusted (None: it is)."""
        fp = identity.fingerprint(public)
        key = self.keys.get(public)
        if key is None:
            return (f"signed by key {fp}, which is not enrolled for {till} ({self.source}): refused; if the till "
                    "really has a new key, compare it with `edged identity` on the till before enrolling it")
        if key.till != till:
            return f"signed by key {fp}, which belongs to till {key.till}, not {till}: refused (relabelled)"
        if key.retired_at is not None:
            return (f"signed by key {fp} of {till}, retired on "
                    f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(key.retired_at))}: refused")
        return None

    def by_fingerprint(self, till: str, fp: str) -> bytes | None:
        for key in self.keys.values():
            if key.fingerprint == fp and key.till == till and key.retired_at is None:
                return key.public
        return None


def from_arguments(pairs: list[str]) -> Trust:
    """--key TILL_ID=ed25519:HEX, as often as needed."""
    keys = []
    for pair in pairs:
        till, sep, text = pair.partition("=")
        if not sep or not till:
            raise EnrollError(f"--key {pair!r}: write it TILL_ID=ed25519:<64 hex digits>")
        try:
            keys.append(Key(till, identity.parse_public(text)))
        except ValueError as e:
            raise EnrollError(f"--key {till}: {e}") from None
    owners: dict[bytes, str] = {}
    for k in keys:
        if owners.setdefault(k.public, k.till) != k.till:
            raise EnrollError(f"--key: key {k.fingerprint} is given for both {owners[k.public]} and {k.till}")
    return Trust(keys, "not among the --key keys")


def from_archive(db: Db, till: str | None = None) -> Trust:
    return Trust(listed(db, till), "not enrolled in the archive")


def listed(db: Db, till: str | None = None) -> list[Key]:
    """The enrolled keys (of one till: a chain's ingest looks up one till per batch, not 50,000 keys);
    a row edited by hand into nonsense stops the command with one line."""
    out = []
    where, params = ("WHERE till=? ", (till,)) if till is not None else ("", ())
    for fp, till, pk, epoch, at, retired in db.execute("SELECT fingerprint, till, public_key, epoch, enrolled_at, "
                                                       f"retired_at FROM keys {where}ORDER BY till, enrolled_at",
                                                       params):
        try:
            key = Key(till, identity.parse_public(pk), epoch, at, retired)
        except (ValueError, TypeError) as e:
            raise EnrollError(f"the archive's keys table is damaged (key {fp!r}: {e}); re-enroll that till's key "
                              "in a new archive or restore the archive") from None
        if key.fingerprint != fp:
            raise EnrollError(f"the archive's keys table is damaged (key {fp!r} holds the public key of "
                              f"{key.fingerprint}); restore the archive")
        out.append(key)
    return out


def enroll(db: Db, till: str, text: str, epoch: int | None = None) -> tuple[Key, bool]:
    """(the key, whether it is new). Enrolling a key again for its till changes nothing."""
    if not till or not till.isprintable() or len(till) > 128:
        raise EnrollError(f"till id {till!r}: printable, 1 to 128 characters")
    try:
        public = identity.parse_public(text)
    except ValueError as e:
        raise EnrollError(str(e)) from None
    key = Key(till, public, epoch, time.time())
    row = db.execute("SELECT till, retired_at FROM keys WHERE fingerprint=?", (key.fingerprint,)).fetchone()
    if row is not None:
        if row[0] != till:
            raise EnrollError(f"key {key.fingerprint} is already enrolled for till {row[0]}: one key, one till")
        if row[1] is not None:
            raise EnrollError(f"key {key.fingerprint} of {till} was retired; a retired key is not enrolled again")
        return key, False
    db.execute("INSERT INTO keys VALUES (?,?,?,?,?,NULL)",
               (key.fingerprint, till, identity.public_text(public), epoch, key.enrolled_at))
    return key, True


def retire(db: Db, fingerprint: str) -> Key:
    row = db.execute("SELECT till, retired_at FROM keys WHERE fingerprint=?", (fingerprint,)).fetchone()
    if row is None:
        raise EnrollError(f"no key {fingerprint} in the archive (`edged archive keys DIR` lists them)")
    if row[1] is None:
        db.execute("UPDATE keys SET retired_at=? WHERE fingerprint=?", (time.time(), fingerprint))
    return next(k for k in listed(db) if k.fingerprint == fingerprint)


def learn_epoch(db: Db, fingerprint: str, epoch: int) -> None:
    """The epoch a signed manifest gives its key, kept for `archive keys` when enrollment did not say."""
    db.execute("UPDATE keys SET epoch=? WHERE fingerprint=? AND epoch IS NULL", (epoch, fingerprint))

"""The daemon part that holds the till's key (edged/identity.py) and journals each replacement.

At start: load STATE_DIR/identity, or make the first key (epoch 1) when the till
has none and has signed nothing. When the key is missing but closed days were
signed (the day book keeps every closed day's signature, whatever retention
deleted), the key was lost: the new one gets the next epoch and an
`identity.key` record names it and the key it replaces, so the chain's history
stays checkable and head office knows to enroll it. A key on disk that cannot
be read stops startup with one line (IdentityError), never a new key on a guess.

`edged identity --init` (the package's postinst) makes the key too: both take
an flock on the identity directory, so a daemon starting meanwhile never pairs
one writer's key with the other's identity.json.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pwd
import stat
from collections.abc import Iterator
from typing import Any

from .. import identity
from ..journal.service import Journal
from ..journal.store import Entry
from .book import DayBook

log = logging.getLogger("edged.identity")
IdentityError = identity.IdentityError


def folder(state_dir: str) -> str:
    return os.path.join(state_dir, identity.DIR)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:  # a parent we may not search: the remedy is who runs edged, not a new key
        raise IdentityError(f"{path}: cannot be read ({e.strerror}); run edged as the owner of "
                            f"{os.path.dirname(path)} (edged's user: _edged in the package)") from None


def check(state_dir: str) -> list[str]:
    """Refuse what the daemon must not use, tighten what it may; returns what was tightened (to log).

    The identity directory and key belong to the user running edged: a key another user owns
    could be read by them, so it stops the start. Group/other bits on either are removed (a copy
    may already have been taken: the log says so, so the technician can decide to replace it)."""
    path = folder(state_dir)
    st = _lstat(path)
    if st is None:
        return []
    if not stat.S_ISDIR(st.st_mode):
        raise IdentityError(f"{path}: not a directory; {identity.REMEDY}")
    me = os.geteuid()
    tightened = []
    for name, want in ((".", 0o700), (identity.KEY, 0o600)):
        target = os.path.normpath(os.path.join(path, name))
        st = _lstat(target)
        if st is None:
            continue
        if name != "." and not stat.S_ISREG(st.st_mode):
            raise IdentityError(f"{target}: not a regular file; {identity.REMEDY}")
        if st.st_uid != me:
            raise IdentityError(f"{target}: owned by {_user(st.st_uid)}, but edged runs as {_user(me)}: "
                                f"`chown -R {_user(me)}: {path}` if the key is this till's own, else {identity.REMEDY}")
        if stat.S_IMODE(st.st_mode) & 0o077:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                os.fchmod(fd, want)
            finally:
                os.close(fd)
            tightened.append(f"{target} was mode {stat.S_IMODE(st.st_mode):04o}, now {want:04o}")
    info = _lstat(os.path.join(path, identity.INFO))
    if info is not None and not stat.S_ISREG(info.st_mode):  # a FIFO here would hang the start
        raise IdentityError(f"{os.path.join(path, identity.INFO)}: not a regular file; {identity.REMEDY}")
    return tightened


def public_info(state_dir: str) -> dict[str, Any] | None:
    """identity.json for `edged identity` (any user who may enter the directory); None: no key yet."""
    path = folder(state_dir)
    try:
        st = os.lstat(os.path.join(path, identity.INFO))
    except FileNotFoundError:
        return None
    except PermissionError:
        raise IdentityError(f"{path}: permission denied: the till's key directory is for edged's user "
                            f"({_owner_of(path)}) alone; run `sudo edged identity`") from None
    except OSError as e:
        raise IdentityError(f"{path}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise IdentityError(f"{os.path.join(path, identity.INFO)}: not a regular file; {identity.REMEDY}")
    return identity.read_info(state_dir)


def _owner_of(path: str) -> str:
    """Who owns path, or the nearest parent this user may look at (where the refusal came from)."""
    while True:
        try:
            return _user(os.stat(path).st_uid)
        except OSError:
            if os.path.dirname(path) == path:
                return "its owner"
            path = os.path.dirname(path)


@contextlib.contextmanager
def locked(state_dir: str) -> Iterator[str]:
    """The identity directory (made 0700 if missing), flocked while the key is read or made."""
    path = folder(state_dir)
    os.makedirs(path, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise IdentityError(f"{path}: cannot be opened ({e.strerror}); {identity.REMEDY}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)


class TillKey:
    name = "identity"

    def __init__(self, journal: Journal, days: DayBook, state_dir: str, till_id: str) -> None:
        self.journal = journal
        self.days = days
        self.state_dir = state_dir
        self.till_id = till_id
        self.identity: identity.Identity | None = None

    async def start(self) -> None:
        signed = [d for d in self.days.closed.values() if isinstance(d.get("signature"), dict)]
        # Reading and making keys fsyncs and may wait for `edged identity --init`: not on the loop.
        ident, made = await asyncio.to_thread(self._load_or_make, signed)
        mine = [d for d in signed if d["signature"].get("fingerprint") == ident.fingerprint]
        older = [d["signature"] for d in signed if d["signature"].get("epoch", 0) < ident.epoch]
        previous = max(older, key=lambda s: s["epoch"], default=None)
        if made and previous is not None:
            log.critical("identity: the key of epoch %d (%s) that signed closed days is gone from %s; "
                         "made epoch %d (%s): head office must enroll it (see `edged identity`)",
                         previous["epoch"], previous["fingerprint"], folder(self.state_dir), ident.epoch,
                         ident.fingerprint)
            await self._journal(ident, previous, f"the key of epoch {previous['epoch']} was missing at start")
        elif previous is not None and not mine and not await self._journaled(ident):
            # Made at the last start, which stopped before its identity.key record was durable.
            await self._journal(ident, previous, f"the key of epoch {previous['epoch']} was missing at an "
                                                 "earlier start (journaled at the next start)")
        self.identity = self.days.identity = ident
        log.info("identity: key %s (epoch %d)", ident.fingerprint, ident.epoch)

    def _load_or_make(self, signed: list[dict[str, Any]]) -> tuple[identity.Identity, bool]:
        for note in check(self.state_dir):
            log.warning("identity: %s: group or others could read the till's key; a copy may exist (if so, "
                        "replace the key: %s)", note, identity.REMEDY)
        with locked(self.state_dir):
            ident = identity.load(self.state_dir)
            if ident is not None:
                return ident, False
            epoch = max((d["signature"].get("epoch", 0) for d in signed), default=0) + 1
            return identity.create(self.state_dir, epoch), True

    async def _journaled(self, ident: identity.Identity) -> bool:
        """Whether an identity.key record for this key follows the last closed day."""
        after = max((d["seq"] for d in self.days.closed.values()), default=0) + 1
        found = await self.journal.scan(
            after, ("identity.key",), match=lambda b: isinstance(b, dict) and b.get("fingerprint") == ident.fingerprint)
        return bool(found)

    async def _journal(self, ident: identity.Identity, previous: dict[str, Any], reason: str) -> None:
        body: dict[str, Any] = {**ident.describe(), "till_id": self.till_id,
                                "previous": previous["fingerprint"], "reason": reason}
        await self.journal.append([Entry("identity.key", body)])

    def describe(self) -> dict[str, Any]:
        """For `status`: which key signs this till's days (public, short)."""
        if self.identity is None:
            return {}
        return {"fingerprint": self.identity.fingerprint, "epoch": self.identity.epoch}

    async def stop(self) -> None:
        pass

    def healthy(self) -> bool:
        return self.identity is not None

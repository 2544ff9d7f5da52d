"""Who each named consumer belongs to: the uid that registered it.

Only that uid, root, edged's own user and the privileged users and groups
may move a consumer's cursor (ack, subscribe, remove): otherwise any member
of the socket group could ack head office's consumer forward, or hold its
stream, and head office would silently miss records.

Kept in `consumer-owners` beside the cursors: a msgpack map of consumer name
to uid, rewritten (atomically) when a consumer is registered or removed. A
consumer registered before edged kept owners has none: the first uid that
acks or subscribes with it after the upgrade claims it (the sync layer does,
as it reconnects), which keeps existing clients working.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import msgpack

from ..relay import protocol as p

if TYPE_CHECKING:
    from ..relay.session import Session
    from .service import Journal

log = logging.getLogger("edged.journal")
OWNERS_FILE = "consumer-owners"


class OwnersFileError(Exception):
    """The owners file cannot be read: startup stops with this one line."""


class Owners:
    name = "consumer-owners"

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.uids: dict[str, int] = {}
        self._loaded = False

    async def start(self) -> None:
        await self.load()

    async def stop(self) -> None:
        pass

    def healthy(self) -> bool:
        return True

    async def load(self) -> None:
        """Read the file once (at startup, or at first use when no daemon started this part)."""
        if self._loaded:
            return
        raw = await self.journal.load_state(OWNERS_FILE)
        uids = {} if raw is None else self._decode(raw)
        self._loaded = True
        # An owner without a cursor is left from a crash between the two saves of a registration.
        self.uids = {name: uid for name, uid in uids.items() if name in self.journal.cursors}

    def _decode(self, raw: bytes) -> dict[str, int]:
        where = os.path.join(getattr(self.journal.store.disk, "root", "journal"), OWNERS_FILE)
        fix = ("remove it and restart edged: each consumer then belongs to the first user that acks or "
               "subscribes with it")
        try:
            data: Any = msgpack.unpackb(raw, raw=False)
        except Exception as e:  # any decoding failure is the same finding: the file is damaged
            raise OwnersFileError(f"{where}: not readable msgpack ({e or type(e).__name__}); {fix}") from None
        if not isinstance(data, dict):
            raise OwnersFileError(f"{where}: must be a map of consumer name to uid, not "
                                  f"{type(data).__name__}; {fix}")
        for name, uid in data.items():
            if not isinstance(name, str) or isinstance(uid, bool) or not isinstance(uid, int) or uid < 0:
                raise OwnersFileError(f"{where}: entry {p.shown(name)}: {p.shown(uid)} is not a consumer "
                                      f"name and a uid; {fix}")
        return data

    async def admit(self, session: Session, consumer: str) -> None:
        """Raise not_permitted unless this client may move `consumer`'s cursor; a consumer without
        an owner (new, or from before owners were kept) becomes the caller's."""
        await self.load()
        peer = session.peer
        owner = self.uids.get(consumer)
        if owner is None:
            # Set before the save's await: a second client registering the same name meanwhile is refused.
            self.uids[consumer] = peer.uid
            if consumer in self.journal.cursors:
                log.warning("consumer %r had no owner (registered before edged kept owners): now uid %d's "
                            "(client %r)", consumer, peer.uid, session.client)
            await self._save()
            return
        if owner == peer.uid or session.server.access.privileged(peer):
            return
        log.warning("refused to move consumer %r for client %r (%s): it belongs to uid %d",
                    consumer, session.client, peer, owner)
        raise p.RequestError(p.NOT_PERMITTED, f"consumer {consumer!r} belongs to uid {owner}: only that user, "
                                              "root or a privileged user may ack it or subscribe with it")

    async def forget(self, consumer: str) -> None:
        if self.uids.pop(consumer, None) is not None:
            await self._save()

    async def _save(self) -> None:
        await self.journal.save_state(OWNERS_FILE, msgpack.packb(self.uids, use_bin_type=True))

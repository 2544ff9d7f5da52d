"""The daemon part that holds the till's key (edged/identity.py) and journals each replacement.

At start: load STATE_DIR/identity, or make the first key (epoch 1) when the till
has none and has signed nothing. When the key is missing but closed days were
signed (the day book keeps every closed day's signature, whatever retention
deleted), the key was lost: the new one gets the next epoch and an
`identity.key` record names it and the key it replaces, so the chain's history
stays checkable and head office knows to enroll it. A key on disk that cannot
be read stops startup with one line (IdentityError), never a new key on a guess.
"""
from __future__ import annotations

import logging
from typing import Any

from .. import identity
from ..journal.service import Journal
from ..journal.store import Entry
from .book import DayBook

log = logging.getLogger("edged.identity")


class TillKey:
    name = "identity"

    def __init__(self, journal: Journal, days: DayBook, state_dir: str, till_id: str) -> None:
        self.journal = journal
        self.days = days
        self.state_dir = state_dir
        self.till_id = till_id
        self.identity: identity.Identity | None = None

    async def start(self) -> None:
        ident = identity.load(self.state_dir)
        if ident is None:
            signed = [d["signature"] for d in self.days.closed.values() if isinstance(d.get("signature"), dict)]
            previous = max(signed, key=lambda s: s["epoch"], default=None)
            ident = identity.create(self.state_dir, previous["epoch"] + 1 if previous else 1)
            if previous is not None:
                log.critical("identity: the key of epoch %d (%s) that signed closed days is gone from %s/identity; "
                             "made epoch %d (%s): head office must enroll it (see `edged identity`)",
                             previous["epoch"], previous["fingerprint"], self.state_dir, ident.epoch,
                             ident.fingerprint)
                body: dict[str, Any] = {**ident.describe(), "till_id": self.till_id,
                                        "previous": previous["fingerprint"],
                                        "reason": f"the key of epoch {previous['epoch']} was missing at start"}
                await self.journal.append([Entry("identity.key", body)])
        self.identity = self.days.identity = ident
        log.info("identity: key %s (epoch %d)", ident.fingerprint, ident.epoch)

    async def stop(self) -> None:
        pass

    def healthy(self) -> bool:
        return self.identity is not None

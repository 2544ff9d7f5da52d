"""Device events for clients that `watch` topics (PROTOCOL.md, device events).

Each event is encoded once and offered to every watcher of its topic. Offers
never wait: a watcher whose send queue is full is dropped (logged and counted
in `status`), so a client that stops reading cannot slow anybody down.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import framing
from . import protocol as p
from .registry import Level, may, needs, op

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("edged.relay")

TOPICS = ("scanner", "printer", "drawer", "usb", "day", "journal", "sync")


class Watchers:
    def __init__(self) -> None:
        self.sessions: set[Session] = set()
        self.published = 0
        self.dropped = 0  # watchers dropped for not reading
        # Per topic, events held while nobody watched (scans kept by `keep_unheard`): handed,
        # once, to the first session whose `watch` asks for them (`kept: true`), after its answer.
        self.backlogs: dict[str, Callable[[], list[dict[str, Any]]]] = {}

    def publish(self, event: dict[str, Any]) -> int:
        """Send `event` ({"event": "topic.name", ...}) to every watcher of its topic; how many got it."""
        topic = event["event"].split(".", 1)[0]
        self.published += 1
        frame = None
        heard = 0
        for session in list(self.sessions):
            if topic not in session.topics:
                continue
            frame = frame or framing.encode(event)
            if session.outbox.offer(frame):
                heard += 1
            else:
                self.sessions.discard(session)
                self.dropped += 1
                log.warning("client %r (%s) dropped: %d events queued and not read",
                             session.client, session.peer, session.outbox.depth)
                session.drop()
        return heard

    def _hand_over(self, session: Session, events: list[dict[str, Any]]) -> None:
        """Queue the held events as one batch that waits for room: once taken, none may be dropped."""
        if events:
            session.spawn(session.outbox.put(b"".join(framing.encode(e) for e in events), len(events)), "kept events")

    def _hand_over_backlog(self, session: Session, take: Callable[[], list[dict[str, Any]]]) -> None:
        self._hand_over(session, take())  # taken only after the response is sent: nothing is missed between

    def forget(self, session: Session) -> None:
        self.sessions.discard(session)

    @op("watch", Level.ANY, topics=needs(list), kept=may(bool))
    async def op_watch(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        topics = p.param(params, "topics", list)
        for i, topic in enumerate(topics):
            if topic not in TOPICS:
                raise p.RequestError(p.BAD_REQUEST, f"topics[{i}]: unknown topic {topic!r}; "
                                                    f"known: {', '.join(TOPICS)}")
        if p.param(params, "kept", bool, required=False, default=False):
            for topic in set(topics) & self.backlogs.keys():
                session.after_response.append(functools.partial(self._hand_over_backlog, session, self.backlogs[topic]))
        session.topics = set(topics)
        if topics:
            self.sessions.add(session)
        else:
            self.sessions.discard(session)  # an empty list stops watching
        return {"topics": sorted(session.topics)}

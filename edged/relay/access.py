"""Who is on the other end of a connection, and what they may do.

The kernel tells us (SO_PEERCRED, SO_PEERGROUPS), so a client cannot claim to
be someone else. Everyone who can open the socket (mode 0660, its group) may
sell, print and read the journal; each op's level comes from its declaration
(registry.py): privileged ops need root, the daemon's own user, or a user or
group from the config's allow-list; daemon ops need root or the daemon's user.
"""
from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .protocol import Level

_UCRED = struct.Struct("3i")
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; Python names it only in 3.12+
_MAX_GROUPS = 1024


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int]

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"


def peer_of(sock: socket.socket | None) -> Peer:
    if sock is None:
        return Peer(-1, -1, -1, frozenset())
    try:
        pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError:
        return Peer(-1, -1, -1, frozenset())
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * _MAX_GROUPS)
        groups = set(struct.unpack(f"{len(raw) // 4}I", raw))
    except OSError:  # an older kernel: the primary group is all we know
        groups = set()
    groups.add(gid)
    return Peer(pid, uid, gid, frozenset(groups))


class Access:
    def __init__(self, users: Iterable[str] = (), groups: Iterable[str] = ()) -> None:
        # Names were checked by the config; resolved once, as the daemon starts.
        self.daemon_uids = frozenset({0, os.getuid()})
        self.uids = set(self.daemon_uids) | {pwd.getpwnam(u).pw_uid for u in users}
        self.gids = {grp.getgrnam(g).gr_gid for g in groups}
        self.levels: Mapping[str, Level] = {}  # op -> level, from the server's registry

    def privileged(self, peer: Peer) -> bool:
        return peer.uid in self.uids or bool(peer.groups & self.gids)

    def allows(self, peer: Peer, level: Level) -> bool:
        if level is Level.ANY:
            return True
        if level is Level.DAEMON:
            return peer.uid in self.daemon_uids
        return self.privileged(peer)

    def permits(self, peer: Peer, op: str) -> bool:
        """May this peer call `op`? An op the server does not serve needs the daemon's own user."""
        return self.allows(peer, self.levels.get(op, Level.DAEMON))

    @staticmethod
    def refusal(op: str, level: Level) -> str:
        if level is Level.DAEMON:
            return f"{op!r} is for root and edged's own user only"
        return f"{op!r} needs a privileged user or group (daemon.privileged_users / privileged_groups)"

    def describe(self) -> str:
        return ", ".join([f"uid {u}" for u in sorted(self.uids)] + [f"gid {g}" for g in sorted(self.gids)])

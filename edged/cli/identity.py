"""`edged identity`: which key signs this till's days, and the command head office enrolls it with.

It reads identity.json only (public), never the private key, and needs no daemon: a technician
can run it on a till whose edged does not start. `--init` makes the key where there is none,
as the package's postinst does before edged first starts.
"""
from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import time
from typing import Any

from .. import config, identity
from ..day import tillkey
from ..printable import printable

_DESCRIPTION = """\
Show this till's identity: its till_id, the public key that signs every closed
day and export (with its epoch and fingerprint), and the command head office
runs to enroll it. Head office imports a till's exports only once its key is
enrolled. Reads only the public half (STATE_DIR/identity/identity.json); the
private key never leaves the till.

The key is made when edged first starts (the Debian package makes it at
install). If it is lost, edged makes a new one with the next epoch at its next
start and journals the change: enroll the new key at head office.

With --init: make the key now, if this till has none and no journal yet.
Run as root, the key is then given to the owner of the state directory, or to
--owner USER (the package uses _edged, the user edged runs as).
"""


def register(sub: Any) -> None:
    p = sub.add_parser("identity", help="this till's signing key and how head office enrolls it",
                       description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help=f"config file for till_id and daemon.state_dir "
                                                    f"(default {config.DEFAULT_PATH})")
    p.add_argument("--state-dir", metavar="DIR", help="the state directory (default: daemon.state_dir)")
    p.add_argument("--json", action="store_true", help="print it as one JSON object")
    p.add_argument("--init", action="store_true",
                   help="make the key now if there is none (nothing changes if there is one)")
    p.add_argument("--owner", metavar="USER", help="with --init as root: who owns the key (name or uid; "
                                                   "default: the owner of the state directory)")
    p.set_defaults(func=cmd_identity)


def cmd_identity(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    state_dir = args.state_dir or cfg.daemon.state_dir
    if args.owner and not args.init:
        print("edged: --owner goes with --init", file=sys.stderr)
        return 2
    if args.init:
        try:
            made = _init(state_dir, args.owner)
        except OSError as e:  # e.g. not root, in a directory that is not ours
            print(f"edged: {e.filename or state_dir}: {e.strerror}; run as root or as edged's user", file=sys.stderr)
            return 1
        if made is None:
            return 1
    info = tillkey.public_info(state_dir)
    if info is None:
        print(f"edged: no key yet in {tillkey.folder(state_dir)}: edged makes one when it first starts "
              f"(systemctl start edged), or run `edged identity --init` (as root: add --owner _edged)",
              file=sys.stderr)
        return 1
    out = {"till_id": cfg.till_id, "epoch": info["epoch"], "public_key": info["public_key"],
           "fingerprint": _fingerprint(state_dir, info["public_key"]),
           "created": info.get("created"), "state_dir": state_dir,
           "enroll": f"edged archive enroll ARCHIVE_DIR {cfg.till_id} {info['public_key']}"}
    if args.json:
        print(json.dumps(out))
        return 0
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(out["created"])) \
        if isinstance(out["created"], int) else "-"
    print(f"till_id      {printable(out['till_id'])}")
    print(f"public key   {printable(out['public_key'])}")
    print(f"fingerprint  {printable(str(out['fingerprint']))}")
    print(f"epoch        {out['epoch']} (1 for the till's first key; one more for each lost key replaced)")
    print(f"created      {created}")
    print("head office enrolls it with:")
    print(f"  {printable(out['enroll'])}")
    return 0


def _fingerprint(state_dir: str, public_key: str) -> str:
    """Computed from the key, not taken from the file: what head office will compute too."""
    try:
        return identity.fingerprint(identity.parse_public(public_key))
    except ValueError as e:
        raise identity.IdentityError(f"{os.path.join(tillkey.folder(state_dir), identity.INFO)}: {e}; "
                                     f"{identity.REMEDY}") from None


def _init(state_dir: str, owner: str | None) -> bool | None:
    """Make the key unless there is one; True if made, False if one was there, None if refused."""
    if os.path.exists(os.path.join(tillkey.folder(state_dir), identity.KEY)):
        print(f"{tillkey.folder(state_dir)}: this till has a key already; nothing changed", file=sys.stderr)
        return False
    journal = os.path.join(state_dir, "journal")
    if os.path.isdir(journal) and os.listdir(journal):
        # Only the daemon knows whether a lost key signed days (and so which epoch comes next,
        # journaled as identity.key): a key made here would skip that.
        print(f"edged: {state_dir} holds a journal: start edged instead (systemctl restart edged); it makes the "
              f"key itself, and journals the replacement if a key that signed days was lost", file=sys.stderr)
        return None
    uid, gid = _owner(state_dir, owner)
    if uid != os.geteuid() and os.geteuid() != 0:
        print(f"edged: only root may make a key for another user (--owner {owner})", file=sys.stderr)
        return None
    if not os.path.isdir(state_dir):  # as systemd's StateDirectory= would make it
        os.makedirs(state_dir, mode=0o750)
        os.chown(state_dir, uid, gid)
    folder = tillkey.folder(state_dir)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    # The directory first: a daemon starting meanwhile (as that user) can then take the lock and
    # wait, rather than fail on a root-owned directory.
    os.chown(folder, uid, gid)
    with tillkey.locked(state_dir):
        if identity.load(state_dir) is not None:  # the daemon made it while we looked
            print(f"{folder}: this till has a key already; nothing changed", file=sys.stderr)
            return False
        ident = identity.create(state_dir, 1)
        for name in (identity.KEY, identity.INFO):
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
    print(f"{folder}: made key {ident.fingerprint} (epoch 1) for {_name(uid)}", file=sys.stderr)
    return True


def _owner(state_dir: str, owner: str | None) -> tuple[int, int]:
    """uid and gid the key goes to: --owner (a name or uid), else the state directory's owner."""
    if owner is None:
        try:
            st = os.stat(state_dir)
        except FileNotFoundError:
            return os.geteuid(), os.getegid()
        return st.st_uid, st.st_gid
    try:
        pw = pwd.getpwnam(owner) if not owner.isdigit() else pwd.getpwuid(int(owner))
    except KeyError:
        if owner.isdigit():
            return int(owner), int(owner)
        raise SystemExit(f"edged: --owner {owner!r}: no such user") from None
    return pw.pw_uid, pw.pw_gid


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"

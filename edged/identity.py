"""The till's identity: one Ed25519 key pair that signs its closed days and exports.

The private key lives in STATE_DIR/identity/ed25519.key (PKCS#8 PEM, mode 0600 in
a 0700 directory, owned by edged's user) and nowhere else: never in the journal,
an export or a log. Beside it, identity.json holds what is public: the key's epoch,
public key and fingerprint. Head office enrolls the public key (`edged identity`
prints the command); an export is then accepted only when that key signed it.

A lost key cannot be recovered, only replaced: the next key gets the next epoch
and an `identity.key` record in the journal names both, so the chain's history
stays checkable and head office knows to enroll the new key (docs/JOURNAL.md,
"Signatures").
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DIR = "identity"
KEY = "ed25519.key"
INFO = "identity.json"
PREFIX = "ed25519:"  # how a public key is written: ed25519:<64 hex digits>
REMEDY = ("move the identity directory away and start edged: it makes a new key (a new epoch) that head office "
          "must enroll with `edged archive enroll`")


class IdentityError(Exception):
    """The key on disk cannot be used; str() is the one line `edged run` prints before it exits."""


def public_text(raw: bytes) -> str:
    return PREFIX + raw.hex()


def parse_public(text: str) -> bytes:
    """The 32 raw bytes of a public key written as ed25519:<hex>; ValueError naming what is wrong."""
    if not isinstance(text, str) or not text.startswith(PREFIX):
        raise ValueError(f"a public key is written {PREFIX}<64 hex digits>, got {str(text)[:80]!r}")
    try:
        raw = bytes.fromhex(text[len(PREFIX):])
    except ValueError:
        raise ValueError(f"public key {text[:80]!r}: not hex") from None
    if len(raw) != 32:
        raise ValueError(f"public key {text[:80]!r}: {len(raw)} bytes, an Ed25519 key has 32")
    return raw


def fingerprint(raw: bytes) -> str:
    """Short, stable name of a public key: sha256: and the first 16 bytes of its SHA-256, in hex."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:32]


def verify(raw_public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(raw_public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Identity:
    key: Ed25519PrivateKey
    epoch: int
    public: bytes  # 32 raw bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    @property
    def public_text(self) -> str:
        return public_text(self.public)

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    def describe(self) -> dict[str, Any]:
        """What may be shown and journaled (never the private key)."""
        return {"epoch": self.epoch, "public_key": self.public_text, "fingerprint": self.fingerprint}


def _dir(state_dir: str) -> str:
    return os.path.join(state_dir, DIR)


def read_info(state_dir: str) -> dict[str, Any] | None:
    """identity.json (public: epoch, key, fingerprint), None when there is none; needs no secret."""
    path = os.path.join(_dir(state_dir), INFO)
    try:
        raw = _read_small(path, 1 << 16)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IdentityError(f"{path}: cannot be read ({e.strerror or e}); {REMEDY}") from None
    try:
        info = json.loads(raw)
    except ValueError as e:
        raise IdentityError(f"{path}: unreadable ({e}); {REMEDY}") from None
    if not (isinstance(info, dict) and type(info.get("epoch")) is int and info["epoch"] >= 1
            and isinstance(info.get("public_key"), str)):
        raise IdentityError(f"{path}: not an identity (epoch, public_key); {REMEDY}")
    return info


def _read_small(path: str, limit: int) -> bytes:
    """A regular file of at most limit bytes, never through a link, never blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            raise OSError(f"not a regular file of at most {limit} bytes")
        if st.st_mode & 0o077 and path.endswith(KEY):  # others could read it: keep it from going on
            try:
                os.fchmod(fd, 0o600)
            except PermissionError:
                raise OSError(f"readable by others and owned by uid {st.st_uid}, not this user") from None
        return os.read(fd, limit + 1)
    finally:
        os.close(fd)


def load(state_dir: str) -> Identity | None:
    """The till's key, None when it has none yet; IdentityError when it is there but unusable."""
    folder = _dir(state_dir)
    path = os.path.join(folder, KEY)
    try:
        pem = _read_small(path, 4096)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IdentityError(f"{path}: cannot be read ({e.strerror or e}); {REMEDY}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise IdentityError(f"{path}: not a readable PEM private key ({e}); {REMEDY}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{path}: not an Ed25519 key; {REMEDY}")
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    info = read_info(state_dir)
    if info is None or info["public_key"] != public_text(public):
        raise IdentityError(f"{os.path.join(folder, INFO)}: missing or names another key than {KEY}; {REMEDY}")
    return Identity(key, info["epoch"], public)


def create(state_dir: str, epoch: int) -> Identity:
    """A new key pair of this epoch, written durably (key first, then identity.json)."""
    folder = _dir(state_dir)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ident = Identity(key, epoch, public)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write(folder, KEY, pem, 0o600)
    info = {**ident.describe(), "created": int(time.time())}
    _write(folder, INFO, (json.dumps(info, indent=1, sort_keys=True) + "\n").encode(), 0o644)
    return ident


def _write(folder: str, name: str, data: bytes, mode: int) -> None:
    tmp = os.path.join(folder, f".{name}.tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(folder, name))
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)

"""A first-time user on a bare Debian 12: the README's two commands and the package build, run in
a fresh clone inside a Debian 12 minbase that has only make and git added (no Python, no compiler),
as root, with this machine's kernel devices (loop devices for the stick tests) and network.

Each run starts from a pristine copy of the cached minbase, so nothing an earlier run installed
can hide a missing install step. Prints one summary line per command, and exits non-zero when
one fails (its output's tail shown; whole logs under WORK). Every step runs, whatever the one before did.

Usage (make test-fresh, root): python3 tests/package/fresh.py [WORK]   (default /var/tmp/edged-fresh)
"""
from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rootfs import CACHE, debootstrap

REPO = Path(__file__).resolve().parents[2]
BARE = ["make", "git"]
# The README's two commands, then the package build, each as its own step.
STEPS = [("make demo", "make demo"), ("make test", "make test"), ("make package", "make package")]
# This machine reaches package registries through its own certificate authorities (the Debian way:
# /usr/local/share/ca-certificates, taken in when ca-certificates is installed) and pip settings; a
# fresh machine of this kind has them too, so they are copied into the bare Debian.
HOST_SETTINGS = ["/usr/local/share/ca-certificates", "/etc/pip.conf", "/etc/xdg/pip"]
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
       "LANG": "C.UTF-8", "TERM": "dumb", "CI": "true"}


def bare_rootfs(log) -> Path:
    root = CACHE / f"bookworm-bare-{hashlib.sha256(' '.join(BARE).encode()).hexdigest()[:12]}"
    if not (root / ".complete").exists():
        log(f"debootstrap Debian 12 minbase + {' + '.join(BARE)} into {root} (first run only)")
        debootstrap(root, "minbase", BARE)
        (root / ".complete").touch()
    return root


def run(work: Path, log) -> int:
    base = bare_rootfs(log)
    root = work / "root"
    if root.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True)
    (root / "repo").mkdir()
    for path in map(Path, HOST_SETTINGS):
        if path.is_dir():
            shutil.copytree(path, root / str(path).lstrip("/"), dirs_exist_ok=True)
        elif path.exists():
            shutil.copy(path, root / str(path).lstrip("/"))
    failed = 0
    for name, command in [("git clone", "git -c safe.directory='*' clone -q /repo /root/edged"), *STEPS]:
        t0 = time.monotonic()
        out = work / f"{name.replace(' ', '-')}.log"
        code = in_bare(root, command if name == "git clone" else f"cd /root/edged && {command}", out)
        lines = out.read_text(errors="replace").splitlines()
        log(f"{name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - t0:.0f} s, "
            f"{len(lines)} lines of output ({out})")
        if name == "make test":
            summary = [line for line in lines if " passed" in line or " failed" in line]
            log(f"  {summary[-1].strip('= ') if summary else 'no pytest summary'}")
        if code != 0:
            print("\n".join(lines[-30:]), file=sys.stderr)
            failed += 1
            if name == "git clone":
                break
    return failed


def in_bare(root: Path, command: str, out: Path) -> int:
    """COMMAND as root in the bare Debian, in a private mount namespace: its mounts of /proc, /sys,
    /dev and the repository go away with it."""
    # The root a mount point of its own: systemd-nspawn (make package) remounts / inside.
    r, repo = shlex.quote(str(root)), shlex.quote(str(REPO))
    binds = [f"mount --bind {r} {r}", f"mount --rbind /dev {r}/dev", f"mount --rbind /sys {r}/sys",
             f"mount -t proc proc {r}/proc", f"mount -t tmpfs tmpfs {r}/run", f"mount -t tmpfs tmpfs {r}/tmp",
             f"mount --bind -o ro {repo} {r}/repo"]
    env = " ".join(shlex.quote(f"{k}={v}") for k, v in ENV.items())
    script = " && ".join(binds) + f" && exec chroot {r} /usr/bin/env -i {env} /bin/sh -c {shlex.quote(command)}"
    with open(out, "w") as sink:
        # A PID namespace too: whatever a step started (udevd, udisksd, edged) dies with it.
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
                               "sh", "-c", script],
                              stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode


if __name__ == "__main__":
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "/var/tmp/edged-fresh").resolve()
    sys.exit(1 if run(work, lambda line: print(f"fresh: {line}", file=sys.stderr, flush=True)) else 0)

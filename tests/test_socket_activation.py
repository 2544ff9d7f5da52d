"""edged.socket: the daemon takes the listening socket from systemd (LISTEN_FDS), and a client
that connects while edged is dead waits in that socket's backlog for the next edged."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from edged.client import BlockingClient
from edged.systemd import NotifyListener, listen_socket


def start_activated(tmp, listener: socket.socket, notify: NotifyListener) -> subprocess.Popen:
    """Start edged as systemd does for a socket unit: the socket on fd 3, LISTEN_PID its own pid."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "WATCHDOG_"))}
    env.update({"NOTIFY_SOCKET": notify.path, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "edged.socket"})
    fd = listener.fileno()
    return subprocess.Popen(
        ["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", sys.executable, "-m", "edged", "run", "--simulate",
         "--config", os.devnull, "--state-dir", str(tmp / "state"), "--socket", str(tmp / "edged.sock")],
        env=env, pass_fds=(3,), preexec_fn=lambda: os.dup2(fd, 3) if fd != 3 else None,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_activated_socket_survives_a_killed_daemon(short_dir):
    path = str(short_dir / "edged.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o666)  # as SocketMode= would set it; edged must leave it alone
    listener.listen(64)
    notify = NotifyListener(short_dir / "notify")
    first = start_activated(short_dir, listener, notify)
    try:
        assert notify.wait_for("READY=1", 30), first.stderr.read() if first.poll() is not None else "no READY"
        with BlockingClient.connect(path, "pos") as c:
            assert c.request("append", records=[{"kind": "sale", "body": {"n": 1}}])["records"][0]["seq"] == 1
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert os.path.exists(path) and oct(os.stat(path).st_mode & 0o777) == "0o666"

        # Nobody serves the socket now; a client connects anyway and is answered by the next edged.
        waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        waiting.connect(path)
        waiting.close()
        notify.messages.clear()
        second = start_activated(short_dir, listener, notify)
        try:
            with BlockingClient.connect(path, "pos", timeout=30) as c:  # connects into the backlog, then is served
                assert c.request("append", records=[{"kind": "sale", "body": {"n": 2}}])["records"][0]["seq"] == 2
                assert c.request("status")["journal"]["last_seq"] == 2
            assert notify.wait_for("READY=1", 10)
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
            err = second.stderr.read()
            assert f"listening on {path} (from systemd's edged.socket" in err
            assert os.path.exists(path), "the socket unit's socket must outlive edged"
        finally:
            second.kill()
            second.wait()
    finally:
        first.kill()
        first.wait()
        listener.close()


def test_listen_socket_only_for_this_process(short_dir):
    assert listen_socket({"LISTEN_PID": "1", "LISTEN_FDS": "1"}) is None
    assert listen_socket({}) is None
    assert listen_socket({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}) is None

"""A client of edged in the guest watching its device events (guest/watch_events.py, run as a
transient unit), read by the host as JSON lines over 9p."""
from __future__ import annotations

import time
from collections.abc import Callable

from till import GUEST, OUT, Till, whole_lines


class EventWatch:
    def __init__(self, till: Till, name: str, *topics: str) -> None:
        self.till, self.name = till, name
        self.unit = f"watch-{name}"
        self.guest_file = f"{OUT}/{self.unit}.jsonl"
        self.host_file = till.vm.share / "out" / f"{self.unit}.jsonl"
        till.vm.sh(f"rm -f {self.guest_file} {self.guest_file}.ready; "
                   f"systemd-run --unit={self.unit} --collect -p StandardError=file:{OUT}/{self.unit}.log "
                   f"python3 {GUEST}/watch_events.py {self.guest_file} {' '.join(topics)}")
        till.vm.wait_for(f"event watcher {name} subscribed", f"test -f {self.guest_file}.ready", timeout=90)
        self.seen = 0  # events already handed out by `next`

    def events(self) -> list[dict]:
        try:
            text = self.host_file.read_text()
        except FileNotFoundError:
            return []
        return whole_lines(text)

    def next(self, what: str, match: Callable[[dict], bool], timeout: float = 60) -> dict:
        """The first event after those already handed out that MATCH accepts; the ones skipped
        on the way are handed out too."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.events()
            for i in range(self.seen, len(got)):
                if match(got[i]):
                    self.seen = i + 1
                    return got[i]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no event {what} in {timeout} s; events since the last one taken: "
                                   f"{got[self.seen:]}")
            time.sleep(0.05)  # a file in the share, read on the host: costs the guest nothing

    def since(self) -> list[dict]:
        """Events not handed out yet (and marks them handed out)."""
        got = self.events()
        new, self.seen = got[self.seen:], len(got)
        return new

    def stop(self) -> None:
        self.till.vm.sh(f"systemctl stop {self.unit} 2>/dev/null; true", check=False)

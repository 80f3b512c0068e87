"""Where alerts go: an append-only JSON-lines file and an optional webhook.

:class:`EventLog` appends each event as one line with a single ``write`` on a file opened
with ``O_APPEND``, then ``fsync``: a crash leaves whole lines, or at worst one unfinished
last line, which the next open moves aside to ``EVENTS.partial`` (nothing is deleted) before
appending. Event ids continue from the last one in the file, so ``sora watch`` restarted on
the same file continues it.

:class:`Webhook` posts each event as JSON from a background thread with retries (1, 2, 4 s);
the stream never waits for it: when the queue of unsent events is full the oldest is dropped
and counted.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import urllib.request
from pathlib import Path

from sora.errors import SoraError

log = logging.getLogger("sora")


def put_dropping_oldest(slot: queue.Queue, item) -> list:
    """Put ``item`` in the bounded queue ``slot`` without waiting: while it is full, the
    oldest item is taken out. Returns the items dropped to make room."""
    dropped = []
    while True:
        try:
            slot.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                dropped.append(slot.get_nowait())
            except queue.Empty:
                pass


class EventLog:
    """Append-only events file (see the module docstring). ``path`` ``None``: events are
    numbered but not written."""

    def __init__(self, path: str | Path | None):
        self.path = None if path is None else Path(path)
        self.next_id = 1
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size:
            data = self.path.read_bytes()
            if not data.endswith(b"\n"):  # a crash mid-line: keep the fragment, aside
                cut = data.rfind(b"\n") + 1
                with open(self.path.with_name(self.path.name + ".partial"), "ab") as f:
                    f.write(data[cut:] + b"\n")
                os.truncate(self.path, cut)
                log.warning(
                    "%s: an unfinished last line was moved to %s.partial", self.path, self.path.name
                )
                data = data[:cut]
            for line in reversed(data.splitlines()):
                try:
                    self.next_id = int(json.loads(line)["id"]) + 1
                    break
                except (ValueError, KeyError, TypeError):
                    continue
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as err:
            raise SoraError(f"cannot open the events file ({err.strerror})", self.path) from None

    def append(self, event: dict) -> dict:
        """Give ``event`` the next ``id``, write it as one line; returns it."""
        event = {"id": self.next_id, **event}
        self.next_id += 1
        if self.path is not None:
            os.write(self.fd, (json.dumps(event) + "\n").encode())
            os.fsync(self.fd)
        return event

    def close(self) -> None:
        if self.path is not None:
            os.close(self.fd)


class Webhook:
    """POST each event as JSON to ``url`` from a background thread; never blocks."""

    def __init__(self, url: str, *, retries: int = 3, timeout: float = 2.0, size: int = 256):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--webhook must be an http(s) URL, got {url!r}")
        self.url, self.retries, self.timeout = url, retries, timeout
        self.queue: queue.Queue = queue.Queue(size)
        self.sent = self.failed = self.dropped = 0
        self._thread = threading.Thread(target=self._work, daemon=True, name="sora-webhook")
        self._thread.start()

    def post(self, event: dict) -> None:
        self.dropped += len(put_dropping_oldest(self.queue, event))

    def _send(self, event: dict) -> bool:
        body = json.dumps(event).encode()
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(
                    self.url, data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    if 200 <= r.status < 300:
                        return True
            except OSError:
                pass
            if attempt < self.retries:
                time.sleep(2**attempt)
        return False

    def _work(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            if self._send(event):
                self.sent += 1
            else:
                self.failed += 1

    def close(self, wait: float = 5.0) -> None:
        """Send what is queued (for at most ``wait`` seconds), then stop."""
        try:
            self.queue.put(None, timeout=wait)
        except queue.Full:
            return
        self._thread.join(wait)

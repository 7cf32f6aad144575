"""The agent's sending side of one Connect stream.

gRPC Python takes a request stream as an iterator and pulls from it on a
thread of its own; the Outbox feeds that iterator from a queue, so any thread
can send with put(). When nothing was sent for a heartbeat interval the
iterator sends a heartbeat by itself (the site treats an agent silent past its
heartbeat timeout as gone), and when nothing was heard from the site for the
agent's own timeout it calls `on_silence` (the agent then cuts the stream and
reconnects). Both go on while the trainer's thread is busy.
"""

from __future__ import annotations

import queue
import time
from typing import Callable, Iterator, Optional

from campfire.agent.v1 import agent_service_pb2 as agent_pb

_CLOSE = object()  # ends the request stream (half-close)
_WAKE = object()  # makes the iterator recompute its wait


class Outbox:
    def __init__(self, heartbeat_interval: float, silence_timeout: float, last_heard: Callable[[], float], on_silence: Callable[[], None]) -> None:
        self._queue: "queue.Queue[object]" = queue.Queue()
        self._heartbeat_interval = heartbeat_interval
        self._silence_timeout = silence_timeout
        self._last_heard = last_heard
        self._on_silence = on_silence
        self._sequence = 0
        self.closed = False

    def put(self, request: agent_pb.ConnectRequest) -> bool:
        """Queues a message; False once the stream's sending side is closed."""
        if self.closed:
            return False
        self._queue.put(request)
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put(_CLOSE)

    def set_heartbeat_interval(self, seconds: float) -> None:
        self._heartbeat_interval = seconds
        self._queue.put(_WAKE)

    def requests(self) -> Iterator[agent_pb.ConnectRequest]:
        last_sent = time.monotonic()
        silence_reported = False
        while True:
            now = time.monotonic()
            wait = max(0.0, last_sent + self._heartbeat_interval - now)
            if self._silence_timeout > 0:
                wait = min(wait, max(0.01, self._silence_timeout / 4))
            try:
                item: Optional[object] = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is _CLOSE:
                return
            now = time.monotonic()
            if self._silence_timeout > 0 and not silence_reported and now - self._last_heard() > self._silence_timeout:
                silence_reported = True
                self._on_silence()
            if item is _WAKE:
                continue
            if item is None:
                if now - last_sent < self._heartbeat_interval:
                    continue
                self._sequence += 1
                heartbeat = agent_pb.Heartbeat(sequence=self._sequence)
                heartbeat.sent_at.GetCurrentTime()
                item = agent_pb.ConnectRequest(heartbeat=heartbeat)
            last_sent = now
            yield item  # type: ignore[misc]

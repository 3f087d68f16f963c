"""A TCP proxy on loopback that cuts connections at random byte offsets, for fault tests.

Each accepted connection is forwarded to the target. With probability
``cut_rate`` a connection is cut: after a random number of bytes (up to
``max_offset``) in the request direction, or in the response direction, the
proxy closes both sides. The random choices come from a seeded
``random.Random``, so a failing run can be replayed. It only listens on and
connects to 127.0.0.1, and stops when the context manager exits.
"""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class CutProxy:
    target_port: int
    seed: int = 1
    cut_rate: float = 0.4
    max_offset: int = 4096
    port: int = 0
    cuts: dict[str, int] = field(default_factory=lambda: {"request": 0, "response": 0, "none": 0})

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> CutProxy:
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _plan(self) -> tuple[str, int]:
        with self._lock:
            if self._rng.random() >= self.cut_rate:
                self.cuts["none"] += 1
                return "none", 0
            direction = self._rng.choice(("request", "response"))
            self.cuts[direction] += 1
            return direction, self._rng.randint(1, self.max_offset)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            direction, offset = self._plan()
            thread = threading.Thread(target=self._serve, args=(client, direction, offset), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, client: socket.socket, direction: str, offset: int) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
        except OSError:
            client.close()
            return
        done = threading.Event()

        def pump(source: socket.socket, sink: socket.socket, limit: int | None) -> None:
            sent = 0
            try:
                while not done.is_set():
                    data = source.recv(65536)
                    if not data:
                        break
                    if limit is not None and sent + len(data) >= limit:
                        sink.sendall(data[: max(0, limit - sent)])
                        break  # cut here
                    sink.sendall(data)
                    sent += len(data)
            except OSError:
                pass
            finally:
                done.set()
                for sock in (client, upstream):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        up = threading.Thread(target=pump, args=(client, upstream, offset if direction == "request" else None),
                              daemon=True)
        up.start()
        pump(upstream, client, offset if direction == "response" else None)
        up.join(timeout=30)
        client.close()
        upstream.close()

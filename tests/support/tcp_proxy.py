"""A small TCP forwarder on 127.0.0.1 that a test can cut off and reconnect.

Every connection accepted on `port` is forwarded, byte for byte, to the upstream port. `block()`
cuts every open connection (as a network failure would) and makes the proxy cut each new one
at once, until `unblock()`. Threads only: one acceptor, two pumps per connection.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

LOOPBACK = "127.0.0.1"


def _reset(sock: socket.socket) -> None:
    """Cut a connection at once (SO_LINGER 0: unsent data is dropped). The shutdown also wakes
    a pump thread blocked reading from it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    def __init__(self, upstream_port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self._blocked = False
        self._closed = False
        self.accepted = 0
        self.refused = 0
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._acceptor.start()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def blocked(self) -> bool:
        return self._blocked

    def block(self) -> None:
        """Reset every open connection and every new one until `unblock()`."""
        with self._lock:
            self._blocked = True
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)

    def unblock(self) -> None:
        with self._lock:
            self._blocked = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.block()
        self._acceptor.join(5)
        for t in list(self._threads):
            t.join(5)

    # -- internals ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    _reset(client)
                    return
                blocked = self._blocked or self.upstream_port is None
            if blocked:
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection((LOOPBACK, self.upstream_port), timeout=5)
            except OSError:
                self.refused += 1
                _reset(client)
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._blocked or self._closed:
                    _reset(client)
                    _reset(upstream)
                    continue
                self._pairs.append((client, upstream))
                self.accepted += 1
                pumps = [
                    threading.Thread(target=self._pump, args=(a, b), daemon=True)
                    for a, b in ((client, upstream), (upstream, client))
                ]
                self._threads = [t for t in self._threads if t.is_alive()] + pumps
            for t in pumps:
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # One side ended: end both, and forget the pair.
            with self._lock:
                self._pairs = [p for p in self._pairs if src not in p]
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

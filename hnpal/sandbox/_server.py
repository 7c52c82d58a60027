"""The HTTP plumbing every sandbox server shares: a threading server on loopback that ignores clients
hanging up, bound at construction (so its URL is known before start), served from a daemon thread."""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

CONNECTION_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_date_cache: list[Any] = [None, ""]  # [second, Date header]


class QuietThreadingServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # clients open many connections at once; the default backlog is 5

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # the client went away: not the server's error
            return
        super().handle_error(request, client_address)


class SandboxHandler(BaseHTTPRequestHandler):
    """The request plumbing of every sandbox: keep-alive HTTP/1.1, quiet, tolerant of clients that hang
    up, bodies read whole (Content-Length or chunked). Each sandbox's handler defines
    ``_serve(method)``, which every ``do_*`` calls."""

    _serve: Callable[[str], None]

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body may go out in separate writes
    sys_version = ""
    server: Any  # QuietThreadingServer with the owning sandbox as an attribute

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, formatted once a second (not once a request)."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        second = int(time.time())
        cached = _date_cache
        if cached[0] != second:
            cached = _date_cache[:] = [second, super().date_time_string(second)]
        return cached[1]

    def handle(self) -> None:
        try:
            super().handle()
        except CONNECTION_ERRORS:
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _reply(self, status: int, content_type: str | None, headers: list[tuple[str, str]], body: bytes) -> None:
        """Answer: status line, headers and body in one write (one syscall), composed here rather than
        through send_response/send_header (what they write, for a fraction of the CPU)."""
        lines = [
            f"{self.protocol_version} {status} {_REASONS.get(status, '')}\r\n"
            f"Server: {self.version_string()}\r\nDate: {self.date_time_string()}\r\n"
        ]
        if content_type:
            lines.append(f"Content-Type: {content_type}\r\n")
        for key, value in headers:
            lines.append(f"{key}: {value}\r\n")
            if key.lower() == "connection" and value.lower() == "close":
                self.close_connection = True
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        try:
            self.wfile.write("".join(lines).encode("latin-1", "strict") + body)
        except CONNECTION_ERRORS:
            self.close_connection = True

    def _drop(self, mode: str) -> None:
        """Hang up without an answer: ``close`` (FIN) or ``reset`` (RST)."""
        self.close_connection = True
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


class LoopbackServer:
    """Lifecycle of a sandbox server: :meth:`_bind` in ``__init__``, then start/stop or ``with``."""

    _thread_name = "sandbox"

    def _bind(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], owner_attr: str) -> str:
        """Bind the socket; the handler finds this object as ``self.server.<owner_attr>``. Returns the
        root URL (``http://host:port``)."""
        self._stopping = threading.Event()  # set on stop: wakes requests sleeping in latency or faults
        self._thread: threading.Thread | None = None
        self._httpd = QuietThreadingServer((host, port), handler)
        setattr(self._httpd, owner_attr, self)
        bound_host, bound_port = self._httpd.server_address[:2]
        bound = bound_host.decode() if isinstance(bound_host, bytes) else str(bound_host)
        shown = bound if ":" not in bound else f"[{bound}]"
        self.host = bound
        self.port = int(bound_port)
        return f"http://{shown}:{self.port}"

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                daemon=True,
                name=f"{self._thread_name}-{self.port}",
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the command line)."""
        self._httpd.serve_forever(poll_interval=0.2)

    def serve_cli(self, url: str) -> int:
        """The command line's loop: print ``url``, serve until Ctrl-C, stop. Returns the exit code."""
        print(url, flush=True)
        try:
            self.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
        return 0

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

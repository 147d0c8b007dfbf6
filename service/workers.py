"""gunicorn's gthread and gevent workers, answering their own errors in JSON and dropping
clients too slow to take a response quietly.

gunicorn answers requests it cannot parse (an over-long request line, too many or too
large headers, a malformed method...) before the app sees them, with an HTML page. The
worker's ``handle_error`` hook is where that happens; this worker lets gunicorn classify
the error and log it as usual, and only rewrites the page it sends into the service's
JSON error shape.

A push connection's writes carry a timeout (``service.push.PUSH_WRITE_TIMEOUT_SECONDS``);
when a client takes no bytes for that long, the write raises TimeoutError inside the
worker's ``handle_request``, which gunicorn would log as a socket error with a traceback.
Here that is one line, and the connection is closed the way gunicorn closes one it is
done with (StopIteration); so is a write that a draining worker cut.
"""

from __future__ import annotations

import errno
import json
import re
import socket
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from service.errors import snake_code
from service.logs import get_logger

_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n")


def json_error_response(status: int, reason: str) -> bytes:
    body = json.dumps({"error": snake_code(reason), "message": reason}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _JsonErrorSocket:
    """Passes everything through to the client socket, except gunicorn's HTML error page,
    which it replaces with the JSON equivalent (same status)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def sendall(self, data: bytes) -> None:
        match = _STATUS_LINE.match(data)
        if match and b"Content-Type: text/html" in data.split(b"\r\n\r\n", 1)[0]:
            data = json_error_response(int(match.group(1)), match.group(2).decode("latin-1"))
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DropsSlowClients:
    """Mixed into a gunicorn worker class: a write timing out ends the connection quietly."""

    def handle_request(self, *args: Any) -> Any:
        try:
            return super().handle_request(*args)  # type: ignore[misc]
        except TimeoutError:
            get_logger("service.worker").info("client too slow to take the response: dropped")
            raise StopIteration() from None
        except OSError as exc:
            # EBADF: the socket was shut down under a blocked write, as a draining worker
            # does to the push connections that would not end (service.capacity); gevent
            # says so with its cancel_wait_ex.
            if exc.errno != errno.EBADF:
                raise
            get_logger("service.worker").info("connection cut while draining")
            raise StopIteration() from None


class JsonErrorThreadWorker(_DropsSlowClients, ThreadWorker):  # type: ignore[misc]
    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        super().handle_error(req, _JsonErrorSocket(client), addr, exc)


def _gevent_worker() -> type:
    # Imported only when chosen: gevent's worker monkey-patches the process on import of
    # its run loop, which must not happen in a gthread service.
    from gunicorn.workers.ggevent import GeventWorker

    class JsonErrorGeventWorker(_DropsSlowClients, GeventWorker):  # type: ignore[misc]
        def handle_error(
            self, req: Any, client: socket.socket, addr: Any, exc: BaseException
        ) -> None:
            super().handle_error(req, _JsonErrorSocket(client), addr, exc)

    return JsonErrorGeventWorker


def __getattr__(name: str) -> Any:
    if name == "JsonErrorGeventWorker":
        return _gevent_worker()
    raise AttributeError(name)

"""The server side of a push-only WebSocket, on wsproto's sans-I/O protocol engine and the
connection's own socket (gunicorn hands it over in ``gunicorn.socket``).

Built here rather than taken from simple-websocket (flask-sock's engine) because what a
server needs against hostile and slow clients is what that one does not give: it buffers
every message a client sends without bound, always accepts permessage-deflate with its
context kept per connection and inflates whatever arrives at once, cuts frames on a
short ``send()``, and lets a blocked send's TimeoutError reach the application. Here:

* nothing is negotiated but permessage-deflate (RFC 7692), and that on the server's
  terms: no context taken over by either side, so that what is pushed is compressed once
  per tick for every connection (``service.fanout.Rendered.deflated``) and nothing is held
  between messages; no subprotocol;
* what a client sends is read and dropped; a message over ``MAX_MESSAGE_BYTES`` closes
  the connection with 1009 (message too big) as soon as that much has arrived, inflated
  or not: the reader hands wsproto ``RECEIVE_BYTES`` at a time, so a compressed message
  inflates by at most deflate's ratio (~1,000:1) of that before it is refused;
* every frame goes out whole (``sendall``) or not at all: a client that does not take it
  within the send timeout has its connection cut, and the caller is told so (``False``);
* a ping every ``ping_interval``; a peer that has not answered the last one by the next,
  or that closed its end, is gone at once: ``ended`` is set, which the sender waits on.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from service.errors import ApiError
from service.fanout import SocketWriter

MAX_MESSAGE_BYTES = 4096  # clients have nothing to say; what they do say stays small
RECEIVE_BYTES = 4096
CLOSE_WAIT_SECONDS = 1.0  # for the peer's answer to our close frame


class NotAWebSocket(ApiError):
    def __init__(self, problem: str) -> None:
        super().__init__(
            400,
            "bad_request",
            f"Expected a WebSocket handshake (Upgrade: websocket) here: {problem}.",
        )


def handshake_request(environ: dict[str, Any]) -> bytes:
    """The request as it came, rebuilt from the WSGI environ (the server has read it)."""
    lines = [f"{environ.get('REQUEST_METHOD', 'GET')} / HTTP/1.1"]
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = "-".join(part.capitalize() for part in key[5:].split("_"))
            lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


class WebSocket:
    """One accepted WebSocket. ``accept`` checks the handshake without sending a byte (so a
    bad one is still an ordinary HTTP error); ``open`` sends the 101 and starts reading."""

    def __init__(
        self,
        sock: socket.socket,
        connection: WSConnection,
        *,
        ping_interval: float,
        send_timeout: float,
        ended: threading.Event,
        sending: threading.Lock | None = None,
        offers: Iterable[str] = (),
    ) -> None:
        self._sock = sock
        self._writer = SocketWriter(sock)
        self._connection = connection
        self._ping_interval = ping_interval
        self._send_timeout = send_timeout
        self.ended = ended
        self.close_code: int | None = None  # what ended it, when we know
        self.too_slow = False  # a send timed out: the client stopped reading
        # Held by whoever writes a frame: the sender, the reader (pongs, pings), and the
        # fan-out writing directly (its subscription's ``writing``).
        self._sending = sending or threading.Lock()
        self._reader: threading.Thread | None = None
        self._reader_done = threading.Event()
        self._gone = False
        self._on_gone: Callable[[], None] | None = None
        self._wait_turn: Callable[[], None] = lambda: None
        self._offers = list(offers)  # the extensions the client offered
        self.deflate = False  # permessage-deflate agreed: send Rendered.deflated frames

    @classmethod
    def accept(
        cls,
        environ: dict[str, Any],
        *,
        ping_interval: float,
        send_timeout: float,
        ended: threading.Event,
        sending: threading.Lock | None = None,
    ) -> WebSocket:
        sock = environ.get("gunicorn.socket")
        if sock is None:
            raise ApiError(501, "not_implemented", "WebSockets are served under gunicorn only.")
        connection = WSConnection(ConnectionType.SERVER)
        try:
            connection.receive_data(handshake_request(environ))
            events = list(connection.events())
        except RemoteProtocolError as exc:
            raise NotAWebSocket(str(exc)) from None
        if not (events and isinstance(events[0], Request)):
            raise NotAWebSocket("incomplete handshake")
        return cls(
            sock,
            connection,
            ping_interval=ping_interval,
            send_timeout=send_timeout,
            ended=ended,
            sending=sending,
            offers=[str(offer) for offer in events[0].extensions or ()],
        )

    def open(
        self,
        on_gone: Callable[[], None] | None = None,
        *,
        deflate: bool = True,
        wait_turn: Callable[[], None] | None = None,
    ) -> bool:
        """Send the 101 and start reading; False if that failed. With ``deflate``,
        permessage-deflate is agreed when the client offers it (then ``self.deflate``).
        ``on_gone`` is called once the connection is gone, whoever noticed; the reader
        calls ``wait_turn`` each time it wakes, before it reads or pings (the fan-out's
        ``wait_for_fanout``: a wave of pongs from thousands of clients must not stretch
        a tick's fan-out)."""
        self._on_gone = on_gone
        self._wait_turn = wait_turn or (lambda: None)
        self._sock.settimeout(self._send_timeout)
        extension = PerMessageDeflate(
            client_no_context_takeover=True, server_no_context_takeover=True
        )
        offered = any(offer.split(";")[0].strip() == extension.name for offer in self._offers)
        extensions: list[Extension] = [extension] if deflate and offered else []
        if not self._send(AcceptConnection(extensions=extensions)):
            return False
        self.deflate = extension.enabled()
        self._reader = threading.Thread(target=self._read, name="websocket-reader", daemon=True)
        self._reader.start()
        return True

    def send_text(self, text: str) -> bool:
        """Send one whole text frame; False when the connection is gone (or was just cut)."""
        return self._send(TextMessage(data=text))

    def send_frame(self, frame: bytes) -> bool:
        """Send a frame already encoded (the fan-out encodes each tick's once for every
        connection); False when the connection is gone (or was just cut)."""
        with self._sending:
            return self.write_all((frame,))

    def write_nowait(self, frame: bytes) -> bool:
        """Holding the sending lock: write what the socket takes of ``frame`` now; False
        when some is left (sent before anything else, by ``write_all`` or any send).
        Raises OSError when the connection is gone."""
        if self._gone:
            raise ConnectionResetError("the WebSocket is gone")
        try:
            return self._writer.write_nowait(frame)
        except OSError:
            self._cut_locked()
            raise

    def write_all(self, frames: Iterable[bytes] = ()) -> bool:
        """Holding the sending lock: what is left of a frame, then ``frames``, each whole
        within the send timeout; False (the connection cut) when that failed."""
        if self._gone:
            return False
        try:
            self._writer.write_all(frames)
            return True
        except TimeoutError:
            self.too_slow = True
        except OSError:
            pass
        self._cut_locked()  # part of a frame may have gone out: nothing may follow it
        return False

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake, give the peer a moment to answer, then end."""
        if self._send(CloseConnection(code=code, reason=reason)):
            self.close_code = self.close_code or code
            if self._reader is not None:
                self._reader_done.wait(CLOSE_WAIT_SECONDS)
        self.finish()

    def finish(self) -> None:
        """End the connection (if not already) and wait for the reader to stop."""
        self._cut()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=CLOSE_WAIT_SECONDS)

    def _send(self, event: Any) -> bool:
        with self._sending:
            if self._gone:
                return False
            try:
                data = self._connection.send(event)
            except LocalProtocolError:  # the connection is closing already
                self._cut_locked()
                return False
            return self.write_all((data,))

    def _cut(self) -> None:
        with self._sending:
            self._cut_locked()

    def _cut_locked(self) -> None:
        self.ended.set()
        if not self._gone:
            self._gone = True
            with suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            if self._on_gone is not None:
                self._on_gone()

    def _read(self) -> None:
        """Read and answer what the client sends, ping it, and notice when it is gone."""
        awaiting_pong = False
        message_bytes = 0
        # poll, not select: select() cannot watch a descriptor past FD_SETSIZE (1024), and
        # a worker holding thousands of connections gives out such descriptors.
        readable = select.poll()
        readable.register(self._sock, select.POLLIN)
        try:
            while not self._gone:
                woken_by_the_client = bool(readable.poll(self._ping_interval * 1000))
                self._wait_turn()
                if not woken_by_the_client:
                    if awaiting_pong:  # not answered in a whole interval: gone
                        self.close_code = CloseReason.POLICY_VIOLATION
                        break
                    awaiting_pong = self._send(Ping())
                    continue
                data = self._sock.recv(RECEIVE_BYTES)
                if not data:
                    break
                self._connection.receive_data(data)
                for event in self._connection.events():
                    if isinstance(event, Pong):
                        awaiting_pong = False
                    elif isinstance(event, Ping):
                        self._send(event.response())
                    elif isinstance(event, CloseConnection):
                        self.close_code = self.close_code or event.code
                        if self._connection.state is ConnectionState.REMOTE_CLOSING:
                            self._send(event.response())  # the peer closed: answer it
                        elif self._connection.state is ConnectionState.OPEN:
                            self._send(event)  # a protocol error: wsproto says which code
                        return
                    elif isinstance(event, Message):
                        message_bytes += len(event.data)
                        if message_bytes > MAX_MESSAGE_BYTES:
                            self.close_code = CloseReason.MESSAGE_TOO_BIG
                            self._send(CloseConnection(CloseReason.MESSAGE_TOO_BIG, "too big"))
                            return
                        if event.message_finished:
                            message_bytes = 0  # read, and dropped: nothing is asked of it
        except (OSError, ValueError, RemoteProtocolError, LocalProtocolError):
            pass  # the connection is broken, or was cut under us: it is gone either way
        finally:
            self._reader_done.set()
            self._cut()

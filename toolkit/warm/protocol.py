"""Where a warm server lives and how the client, the server and its workers talk to it.

Imported by a ``toolkit`` process once it found a server's socket (and by the server and its workers).

Where the socket is: :mod:`toolkit.warm.paths`.

A message is a 4-byte big-endian length and that many bytes of JSON; descriptors travel with the first
bytes of a message (``SCM_RIGHTS``). Both ends check the peer's uid (``SO_PEERCRED``).
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["ProtocolError", "address", "connect", "current_umask", "peer", "recv_msg", "send_msg"]

_HEADER = struct.Struct(">I")
_MAX_MESSAGE = 1 << 24
_MAX_FDS = 8
_UCRED = struct.Struct("3i")  # pid, uid, gid
_SUN_PATH = 108  # bytes in sockaddr_un's sun_path on Linux, its terminating NUL included


@contextmanager
def address(path: Path) -> Iterator[str]:
    """Yield an address for the socket at ``path`` that fits ``sun_path``, for the length of a bind or connect.

    A state dir deep enough (``TOOLKIT_WARM_DIR`` under a long temporary or home path) puts the socket's
    path beyond the 107 bytes an ``AF_UNIX`` address can hold; the socket is then addressed through a
    descriptor of its directory (``/proc/self/fd/N/name``), which names the same file.
    """
    if len(os.fsencode(path)) < _SUN_PATH:
        yield str(path)
        return
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        short = f"/proc/self/fd/{directory}/{path.name}"
        if len(os.fsencode(short)) >= _SUN_PATH:
            raise OSError(f"warm server socket name too long for an AF_UNIX address: {path.name}")
        yield short
    finally:
        os.close(directory)


class ProtocolError(OSError):
    """The peer closed the connection or sent something that is not a message."""


def peer(sock: socket.socket) -> tuple[int, int]:
    """Return the connected peer's ``(pid, uid)``."""
    pid, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid


def current_umask() -> int:
    """Return this process's umask (which can only be read by setting it: set back at once)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def connect(path: Path, timeout: float | None = 10.0) -> socket.socket:
    """Connect to the server at ``path``; raise ``OSError`` when none answers or it runs as another user."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        with address(path) as where:
            sock.connect(where)
        if peer(sock)[1] != os.getuid():
            raise ProtocolError(f"warm server at {path}: another user's process")
    except BaseException:
        sock.close()
        raise
    return sock


def send_msg(sock: socket.socket, doc: dict[str, Any], fds: tuple[int, ...] | list[int] = ()) -> None:
    """Send ``doc`` as one message, with ``fds`` attached."""
    body = json.dumps(doc, separators=(",", ":")).encode()
    data = _HEADER.pack(len(body)) + body
    sent = socket.send_fds(sock, [data], list(fds)) if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ProtocolError("the peer closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_msg(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Receive one message and the descriptors that came with it (the caller owns them)."""
    data, fds, _, _ = socket.recv_fds(sock, _HEADER.size, _MAX_FDS)
    if not data:
        for fd in fds:
            os.close(fd)
        raise ProtocolError("the peer closed the connection")
    try:
        header = data + (_recv_exact(sock, _HEADER.size - len(data)) if len(data) < _HEADER.size else b"")
        (size,) = _HEADER.unpack(header)
        if size > _MAX_MESSAGE:
            raise ProtocolError(f"message of {size} bytes (at most {_MAX_MESSAGE})")
        doc = json.loads(_recv_exact(sock, size))
        if not isinstance(doc, dict):
            raise ProtocolError(f"a message is a JSON object, found {type(doc).__name__}")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return doc, list(fds)

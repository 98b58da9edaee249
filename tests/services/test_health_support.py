"""The health tests' loopback backend (tests/services/health_support.py) does what they rely on."""

from __future__ import annotations

import socket

import pytest

from tests.services.health_support import backends


def test_the_support_server_switches_modes_and_dies():
    with backends(1) as (b,):
        with socket.create_connection(("127.0.0.1", b.port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
        b.stop()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", b.port), timeout=2)
        b.start()
        socket.create_connection(("127.0.0.1", b.port), timeout=2).close()

"""What the live-feed tests share: the Host and Origin of the site, a signed-in session's cookie,
and waiting for a message of one type on a WebSocket."""

from __future__ import annotations

from channels.testing import WebsocketCommunicator
from django.test import Client

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")  # the Origin must be this same site (steering.live.origin)


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def receive_type(comm: WebsocketCommunicator, wanted: str, timeout: float = 5.0) -> dict:
    while True:
        message = await comm.receive_json_from(timeout=timeout)
        if message["type"] == wanted:
            return message

"""API reads in JSON are served gzip-compressed to clients that ask; pages and writes never are."""

from __future__ import annotations

import gzip
import json

import pytest
from rest_framework.test import APIClient

from tests import factories as f

pytestmark = pytest.mark.django_db


def some_fleet() -> None:
    for _ in range(3):
        f.fleet(20, capacity_rps=100)


def test_the_topology_is_compressed_for_a_client_that_asks_and_means_the_same(viewer_api: APIClient) -> None:
    some_fleet()
    plain = viewer_api.get("/api/v1/topology/")
    packed = viewer_api.get("/api/v1/topology/", HTTP_ACCEPT_ENCODING="gzip, deflate, br")
    assert plain.status_code == packed.status_code == 200
    assert "Content-Encoding" not in plain and packed["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed["Vary"]
    body = gzip.decompress(packed.content)
    unpacked, expected = json.loads(body), json.loads(plain.content)
    assert unpacked.pop("generated_at") >= expected.pop("generated_at")
    assert unpacked == expected
    assert len(packed.content) * 4 < len(body)   # JSON of a fleet shrinks several times
    assert int(packed["Content-Length"]) == len(packed.content)


def test_a_compressed_list_still_answers_304_to_its_etag(viewer_api: APIClient) -> None:
    some_fleet()
    first = viewer_api.get("/api/v1/backends/?page_size=50", HTTP_ACCEPT_ENCODING="gzip")
    assert first["Content-Encoding"] == "gzip" and first["ETag"].startswith('W/"')
    again = viewer_api.get("/api/v1/backends/?page_size=50", HTTP_ACCEPT_ENCODING="gzip",
                           HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304


def test_an_object_read_compressed_can_still_be_written_with_its_etag(admin_api: APIClient) -> None:
    backend = f.backend(version="1.4.2")
    read = admin_api.get(f"/api/v1/backends/{backend.pk}/", HTTP_ACCEPT_ENCODING="gzip")
    assert read["Content-Encoding"] == "gzip" and read["ETag"].startswith('W/"')
    write = admin_api.patch(f"/api/v1/backends/{backend.pk}/", {"weight": 7}, format="json",
                            HTTP_IF_MATCH=read["ETag"], HTTP_X_CHANGE_REASON="compressed read, then write")
    assert write.status_code == 200, write.content
    assert "Content-Encoding" not in write   # writes are never compressed


def test_pages_are_never_compressed(client: object) -> None:
    from django.test import Client

    assert isinstance(client, Client)
    page = client.get("/accounts/login/", HTTP_ACCEPT_ENCODING="gzip")
    assert page.status_code == 200 and "Content-Encoding" not in page

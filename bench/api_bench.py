"""The API at fleet size: 200 PoPs, 20,000 backends; what operators and the dashboard wait for.

    .venv/bin/python bench/api_bench.py --pops 200 --backends-per-pop 100
    .venv/bin/python bench/api_bench.py --database-url postgres://postgres@127.0.0.1:5432/steering_bench

Server time, in process (Django's test client through the whole middleware stack, so no HTTP
client's cost is counted), of:

- a drain, with 10 operators draining different backends at once (each its own PoP's);
- a list of 1,000 backends, beside the anchor: a plain DRF ListAPIView with a ModelSerializer of
  every field over the same rows, in the same run;
- the topology snapshot (gzip-compressed, as a browser asks for it), with its sizes;
- the what-if of draining a whole region (a dry run, as the dialog sends while an operator types).

Also the queries each one makes (a guard check must not load the PoPs one query per backend).
SQLite and a private Redis in a temp dir by default; `--database-url` for an empty PostgreSQL.
Prints a JSON summary; figures in bench/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probe_bench import setup_django  # noqa: E402  (bench/ is on sys.path when a bench runs as a script)

REGIONS = 5


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def figures(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": round(percentile(ms, 0.5), 1), "p95_ms": round(percentile(ms, 0.95), 1),
            "p99_ms": round(percentile(ms, 0.99), 1), "mean_ms": round(statistics.mean(ms), 1) if ms else 0.0}


def make_fleet(pops: int, per_pop: int) -> None:
    """REGIONS regions, `pops` PoPs spread over them, one service answering in every region, one
    pool of `per_pop` backends per PoP (traffic configured, so the guard has something to judge)."""
    from steering.models import VIP, Backend, Pool, PoP, Region, Service

    regions = [Region.objects.create(slug=f"r{i}", name=f"Region {i}", latitude=i * 10.0, longitude=i * 20.0)
               for i in range(REGIONS)]
    service = Service.objects.create(slug="api", fqdn="api.example.net")
    for i, region in enumerate(regions):
        VIP.objects.create(service=service, region=region, address=f"192.0.2.{i + 1}")
    PoP.objects.bulk_create([PoP(region=regions[i % REGIONS], slug=f"p{i:03d}", name=f"PoP {i}", city="Loopback",
                                 latitude=(i % 90) * 1.0, longitude=(i % 180) * 1.0) for i in range(pops)])
    Pool.objects.bulk_create([Pool(pop=p, service=service, slug="web", expected_rps=per_pop * 20)
                              for p in PoP.objects.order_by("pk")])
    Backend.objects.bulk_create([Backend(pool=pool, name=f"b{j}", address=f"127.30.{k % 250}.{j % 250 + 1}",
                                         port=8080, capacity_rps=100)
                                 for k, pool in enumerate(Pool.objects.order_by("pk")) for j in range(per_pop)],
                                batch_size=2000)


def timed(call: Callable[[], Any], rounds: int) -> tuple[list[float], Any]:
    samples, last = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        last = call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples, last


def queries_of(call: Callable[[], Any]) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        call()
    return len(captured)


def anchor_view() -> Any:
    """The anchor: DRF's plainest list of the same rows (ModelSerializer, every field, paginated)."""
    from rest_framework import generics, pagination, serializers

    from steering.models import Backend

    class Plain(serializers.ModelSerializer):  # type: ignore[type-arg]
        class Meta:
            model = Backend
            fields = "__all__"

    class Page(pagination.PageNumberPagination):
        page_size_query_param = "page_size"
        max_page_size = 1000

    class PlainList(generics.ListAPIView):  # type: ignore[type-arg]
        queryset = Backend.objects.order_by("pk")
        serializer_class = Plain
        pagination_class = Page
        permission_classes: list[Any] = []

    return PlainList.as_view()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pops", type=int, default=200)
    ap.add_argument("--backends-per-pop", type=int, default=100)
    ap.add_argument("--operators", type=int, default=10)
    ap.add_argument("--drains-each", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="steering-api-bench-"))
    from config.embedded import PrivateRedis

    redis = PrivateRedis().start()
    try:
        setup_django(tmp, redis.url, database_url=args.database_url)
        from django.conf import settings
        from django.contrib.auth.models import User
        from django.db import connection
        from django.test import Client
        from rest_framework.test import APIRequestFactory, force_authenticate

        from steering.choices import Role
        from steering.models import Backend, Region

        settings.ALLOWED_HOSTS = ["*"]
        settings.STEERING_DATAPLANE_CONFIRM = False  # no agents run here: a drain completes by its deadline
        make_fleet(args.pops, args.backends_per_pop)
        from django.contrib.auth.models import Group

        operators = []
        for i in range(args.operators):
            user = User.objects.create_user(f"op{i}", password="bench-pass-123")
            user.groups.add(Group.objects.get_or_create(name=Role.OPERATOR)[0])
            operators.append(user)

        def client_for(user: Any) -> Client:
            c = Client(HTTP_ACCEPT_ENCODING="gzip")
            c.force_login(user)
            return c

        me = client_for(operators[0])
        summary: dict[str, Any] = {"pops": args.pops, "backends": Backend.objects.count(),
                                   "database": connection.vendor}

        # Lists: ours beside DRF's plainest, the same 1,000 rows.
        list_url = "/api/v1/backends/?page_size=1000"
        ours, answer = timed(lambda: me.get(list_url), args.rounds)
        assert answer.status_code == 200, answer.content[:300]
        factory, view = APIRequestFactory(), anchor_view()

        def anchor() -> Any:
            request = factory.get("/anchor/?page_size=1000")
            force_authenticate(request, operators[0])
            response = view(request)
            response.render()
            return response

        plain, plain_answer = timed(anchor, args.rounds)
        assert plain_answer.status_code == 200
        summary["list_1000_backends"] = {**figures(ours), "queries": queries_of(lambda: me.get(list_url)),
                                         "anchor_plain_drf": figures(plain),
                                         "ratio_p95": round(percentile(ours, 0.95) / percentile(plain, 0.95), 2),
                                         "goal_p95_ms": 100, "met": percentile(ours, 0.95) < 100}

        # The topology snapshot, compressed as a browser asks for it.
        topo, answer = timed(lambda: me.get("/api/v1/topology/"), max(5, args.rounds // 2))
        body = answer.content
        raw = gzip.decompress(body) if answer.get("Content-Encoding") == "gzip" else body
        summary["topology"] = {**figures(topo), "bytes": len(raw), "gzip_bytes": len(body),
                               "queries": queries_of(lambda: me.get("/api/v1/topology/")),
                               "goal_p95_ms": 500, "met": percentile(topo, 0.95) < 500}
        json.loads(raw)

        # The what-if of draining a region (a dry run: no lock, nothing written).
        region = Region.objects.order_by("pk").first()
        assert region is not None
        whatif_url = f"/api/v1/regions/{region.pk}/drain/"
        whatif_body = {"reason": "what if", "dry_run": True}
        whatif, answer = timed(lambda: me.post(whatif_url, whatif_body, content_type="application/json"), args.rounds)
        assert answer.status_code == 200, answer.content[:300]
        summary["region_drain_whatif"] = {
            **figures(whatif), "backends_in_region": Backend.objects.filter(pool__pop__region=region).count(),
            "queries": queries_of(lambda: me.post(whatif_url, whatif_body, content_type="application/json")),
            "goal_ms": 200, "met": percentile(whatif, 0.95) < 200}

        # Drains: 10 operators at once, each on backends of its own PoP (one backend is not drained
        # and undrained again: the 5 s wait period between changes to an object would refuse it).
        per_op = [list(Backend.objects.filter(pool__pop__slug=f"p{i:03d}").order_by("pk")
                       .values_list("pk", flat=True)[: args.drains_each]) for i in range(args.operators)]
        drain_ms: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()
        start_line = threading.Barrier(args.operators)

        def operator(i: int) -> None:
            c = client_for(operators[i])
            start_line.wait()
            for pk in per_op[i]:
                t0 = time.perf_counter()
                r = c.post(f"/api/v1/backends/{pk}/drain/", {"reason": "deploy", "grace_seconds": 30},
                           content_type="application/json")
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    drain_ms.append(ms)
                    if r.status_code != 202:
                        failures.append(str(r.status_code))
            connection.close()

        threads = [threading.Thread(target=operator, args=(i,)) for i in range(args.operators)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        one = Backend.objects.filter(pool__pop__slug=f"p{args.operators:03d}").order_by("pk").values_list("pk", flat=True)[0]
        drain_queries = queries_of(lambda: me.post(f"/api/v1/backends/{one}/drain/",
                                                   {"reason": "count", "grace_seconds": 30},
                                                   content_type="application/json"))
        summary["drain_10_operators"] = {**figures(drain_ms), "failures": len(failures),
                                         "failure_statuses": sorted(set(failures))[:5], "queries": drain_queries,
                                         "goal_p99_ms": 50, "met": percentile(drain_ms, 0.99) < 50}
        print(json.dumps(summary, indent=2))
    finally:
        redis.stop()


if __name__ == "__main__":
    main()

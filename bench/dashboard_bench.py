"""The dashboard on a big fleet, in Debian's Chromium: first render, delta latency, flap storm.

    .venv/bin/python bench/dashboard_bench.py --pops 200 --backends 20000

What runs (everything stops by itself; nothing listens outside 127.0.0.0/8):
  - a private redis-server and a SQLite DB in a temp dir; the fleet bulk-created into it
    (regions, PoPs spread over the globe, 4 pools per PoP, backends evenly split, all up and ready);
  - the real stack's web side: `uvicorn config.asgi:application` (HTTP + WebSocket) on a free port;
  - Chromium (/usr/bin/chromium, headless, 1280x800) through Playwright, signed in with the form.
Figures:
  - first render: navigation start -> the map and every PoP marker in the DOM (a MutationObserver
    installed before the page's scripts records performance.now()); the topology fetch's size and
    time from the Resource Timing entry; any performance marks the page sets;
  - delta applied: a backend changed through the service layer (health through
    services.health, as the prober does) -> its PoP marker's data-health changes in the DOM;
  - flap storm: backends flapping through the service layer as fast as one thread can commit,
    and the live messages the browser receives per second meanwhile (server-side coalescing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM = os.environ.get("STEERING_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "bench-operator-pass-123"
T = TypeVar("T")

# Installed before the page's own scripts: time (ms since navigation start) when the map and all
# `want` PoP markers are in the DOM.
FIRST_RENDER_JS = """
(() => {
  const want = %d;
  window.__bench = { firstRender: null, seen: {} };
  const check = () => {
    if (window.__bench.firstRender !== null) return;
    if (document.querySelector('[data-testid=map]') &&
        document.querySelectorAll('[data-testid=pop-marker]').length >= want) {
      window.__bench.firstRender = performance.now();
      observer.disconnect();
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(document, { childList: true, subtree: true });
})();
"""

# Every message the page's WebSocket receives, timestamped in the browser (epoch ms).
WS_FRAMES_JS = """
(() => {
  window.__benchFrames = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => {
        try {
          const m = JSON.parse(ev.data);
          window.__benchFrames.push([performance.timeOrigin + performance.now(), m.type,
                                     m.from_version ?? null, m.version ?? null]);
        } catch (e) { /* not JSON */ }
      });
    }
  };
})();
"""

# Records when a PoP marker's data-health first differs from what it was (epoch ms).
WATCH_MARKER_JS = """
(slug) => {
  const el = document.querySelector(`[data-testid=pop-marker][data-pop="${slug}"]`);
  if (!el) return false;
  const before = el.getAttribute('data-health');
  const done = () => { window.__bench.seen[slug] = performance.timeOrigin + performance.now(); };
  const obs = new MutationObserver(() => {
    const now = document.querySelector(`[data-testid=pop-marker][data-pop="${slug}"]`);
    if (now && now.getAttribute('data-health') !== before) { done(); obs.disconnect(); }
  });
  obs.observe(document.querySelector('[data-testid=map]') || document, { attributes: true, subtree: true,
                                                                         childList: true });
  return before;
}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setup_django(tmp: Path, redis_url: str) -> None:
    from probe_bench import setup_django as setup  # bench/ is on sys.path when a bench runs as a script

    setup(tmp, redis_url, collectstatic=True)


def make_fleet(pops: int, backends: int) -> dict[str, Any]:
    """Bulk-created (a bench, not a product path): no Change rows, no live deltas."""
    from django.contrib.auth.models import Group, User

    from steering.models import Backend, Pool, PoP, Region, Service

    regions = Region.objects.bulk_create([
        Region(slug=f"r{i:02d}", name=f"Region {i}", latitude=-40 + i * 9, longitude=-160 + i * 33) for i in range(10)])
    PoP.objects.bulk_create([
        PoP(region=regions[i % 10], slug=f"p{i:03d}", name=f"PoP {i}", city=f"City {i}",
            latitude=round(-55 + (i * 37) % 125, 3), longitude=round(-175 + (i * 71) % 350, 3), capacity_rps=100000)
        for i in range(pops)])
    services = Service.objects.bulk_create([Service(slug="api", fqdn="api.example.net"),
                                            Service(slug="static", fqdn="static.example.net", protocol="tcp")])
    pop_rows = list(PoP.objects.order_by("pk"))
    Pool.objects.bulk_create([Pool(pop=p, service=services[k % 2], slug=f"pool{k}", expected_rps=100)
                              for p in pop_rows for k in range(4)])
    pools = list(Pool.objects.order_by("pk"))
    per_pool, extra = divmod(backends, len(pools))
    rows = []
    for index, pool in enumerate(pools):
        for n in range(per_pool + (1 if index < extra else 0)):
            rows.append(Backend(pool=pool, name=f"b{n}", address=f"127.20.{index // 250}.{index % 250 + 1}",
                                port=10000 + n, capacity_rps=1000, health="up"))
    Backend.objects.bulk_create(rows, batch_size=2000)
    user = User.objects.create_user("bench-operator", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    return {"regions": len(regions), "pops": len(pop_rows), "pools": len(pools), "backends": len(rows)}


class Orm:
    """ORM calls on a thread of their own: Playwright's sync API keeps an event loop in this one."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="orm")

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.pool.submit(fn, *args, **kwargs).result()


def start_server(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    log = (tmp / "uvicorn.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                             "--port", str(port), "--lifespan", "off", "--no-access-log"],
                            cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"uvicorn did not come up; see {tmp / 'uvicorn.log'}")
        time.sleep(0.2)


def first_render(page: Any, timeout_s: float) -> dict[str, Any]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto("/", wait_until="commit")
    try:
        page.wait_for_function("window.__bench && window.__bench.firstRender !== null", timeout=timeout_s * 1000,
                               polling=100)
    except PlaywrightTimeout:
        markers = page.locator("[data-testid=pop-marker]").count()
        maps = page.locator("[data-testid=map]").count()
        raise SystemExit(f"no first render within {timeout_s:.0f} s: {maps} map(s), {markers} PoP marker(s) "
                         f"in the DOM") from None
    return page.evaluate("""() => {
        const topo = performance.getEntriesByType('resource').filter(e => e.name.includes('/api/v1/topology/'));
        const nav = performance.getEntriesByType('navigation')[0];
        return {
          first_render_ms: window.__bench.firstRender,
          dom_content_loaded_ms: nav ? nav.domContentLoadedEventEnd : null,
          topology_fetch_ms: topo.length ? topo[0].responseEnd - topo[0].startTime : null,
          topology_bytes: topo.length ? (topo[0].encodedBodySize || topo[0].transferSize) : null,
          marks: performance.getEntriesByType('mark').map(m => [m.name, Math.round(m.startTime)]),
        };
    }""")


def delta_latency(page: Any, orm: Orm, backend_id: int, slug: str) -> dict[str, float] | None:
    """None when there is no marker to watch; NaN when the marker did not change within 60 s."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from steering.services.health import do_record_health

    before = page.evaluate(WATCH_MARKER_JS, slug)
    if before is False:
        return None
    started = time.time()
    orm(do_record_health, backend_id, new_health="down", evidence={"why": "bench: one backend down"})
    returned = time.time()
    try:
        page.wait_for_function(f"window.__bench.seen['{slug}'] !== undefined", timeout=60_000, polling=50)
    except PlaywrightTimeout:
        return {"service_call_ms": (returned - started) * 1000, "change_to_dom_ms": float("nan"),
                "commit_to_dom_ms_at_most": float("nan")}
    seen = page.evaluate(f"window.__bench.seen['{slug}']") / 1000.0
    return {"service_call_ms": (returned - started) * 1000, "change_to_dom_ms": (seen - started) * 1000,
            "commit_to_dom_ms_at_most": (seen - returned) * 1000 if seen > returned else 0.0}


def storm_worker(backend_ids: list[int], start_at: float, seconds: float, out: Any) -> None:
    """One flapping process (as one of several workers would be): its own Django, DB connection and
    channel-layer client; flips its backends down/up through the service layer until the window ends."""
    import django

    django.setup()
    from steering.services.health import do_record_health

    commits, n = 0, 0
    time.sleep(max(0.0, start_at - time.time()))
    while time.time() - start_at < seconds:
        bid = backend_ids[n % len(backend_ids)]
        health = "down" if (n // len(backend_ids)) % 2 == 0 else "up"
        if do_record_health(bid, new_health=health, evidence={"why": "bench: flap"}):
            commits += 1
        n += 1
    out.put(commits)


def flap_storm(backend_ids: list[int], seconds: float, procs: int) -> dict[str, Any]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # not fork: this process runs Playwright's threads
    out = ctx.Queue()
    start_at = time.time() + 5.0  # every worker has imported Django by then
    workers = [ctx.Process(target=storm_worker, args=(backend_ids[i::procs], start_at, seconds, out))
               for i in range(procs)]
    for w in workers:
        w.start()
    commits = sum(out.get(timeout=seconds + 120) for _ in workers)
    for w in workers:
        w.join(timeout=30)
    return {"commits": commits, "began": start_at, "ended": start_at + seconds, "processes": procs}


def channel_storm(backend_ids: list[int], seconds: float) -> dict[str, Any]:
    """Deltas straight into the channel-layer group, as services.effects sends them, as fast as one
    event loop can: the rate a busy fleet with many workers reaches, which this shared machine's
    SQLite cannot commit. Real representations with flipping health; versions continue the DB's
    (the browser ends ahead of the DB: run last)."""
    import asyncio

    from channels.layers import get_channel_layer

    from steering.readmodels.version import current_version
    from steering.redis_keys import LIVE_GROUP
    from steering.services.effects import build_delta

    base = current_version()
    template = {bid: build_delta(0, [{"op": "upsert", "type": "backend", "id": bid}])["changes"][0]
                for bid in backend_ids}

    async def run() -> tuple[int, float, float]:
        layer = get_channel_layer()
        n = 0
        began = time.time()
        while time.time() - began < seconds:
            bid = backend_ids[n % len(backend_ids)]
            health = "down" if (n // len(backend_ids)) % 2 == 0 else "up"
            change = {**template[bid], "data": {**template[bid]["data"], "health": health}}
            n += 1
            await layer.group_send(LIVE_GROUP, {"type": "live.delta",
                                                "delta": {"type": "delta", "version": base + n, "changes": [change]}})
        return n, began, time.time()

    n, began, ended = asyncio.run(run())
    return {"commits": n, "began": began, "ended": ended, "processes": 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pops", type=int, default=200)
    ap.add_argument("--backends", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3, help="first-render measurements (page loads)")
    ap.add_argument("--deltas", type=int, default=5, help="delta-latency measurements")
    ap.add_argument("--storm-seconds", type=float, default=10.0)
    ap.add_argument("--storm-procs", type=int, default=4, help="processes flapping backends at once")
    ap.add_argument("--render-timeout", type=float, default=180.0, help="seconds to wait for all markers")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (DB, logs)")
    args = ap.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    from config.embedded import PrivateRedis

    tmp = Path(tempfile.mkdtemp(prefix="steering-dashbench-"))
    redis = PrivateRedis().start()
    server: subprocess.Popen[bytes] | None = None
    result: dict[str, Any] = {}
    try:
        setup_django(tmp, redis.url)
        t = time.monotonic()
        result["fleet"] = make_fleet(args.pops, args.backends)
        result["fleet"]["seed_seconds"] = round(time.monotonic() - t, 1)
        port = free_port()
        server = start_server(tmp, port)
        from steering.models import Backend

        # One backend in each of the first PoPs for the delta figure; two per PoP flap in the storm.
        by_pop: dict[str, list[int]] = {}
        for pk, slug in Backend.objects.order_by("pk").values_list("pk", "pool__pop__slug"):
            by_pop.setdefault(slug, []).append(pk)
        orm = Orm()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=f"http://127.0.0.1:{port}")
            page = context.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto("/")
            page.fill("#id_username", "bench-operator")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"http://127.0.0.1:{port}/")
            context.add_init_script(FIRST_RENDER_JS % args.pops)
            context.add_init_script(WS_FRAMES_JS)
            try:
                renders = [first_render(page, args.render_timeout) for _ in range(args.runs)]
            except SystemExit:
                page.screenshot(path=str(tmp / "dashboard.png"))
                (tmp / "console.txt").write_text("\n".join(console))
                print(f"see {tmp}/dashboard.png, console.txt, uvicorn.log", file=sys.stderr)
                args.keep = True
                raise
            result["first_render"] = renders
            # Let the live feed say hello on the last load before measuring deltas.
            page.wait_for_selector("[data-testid=live-status][data-state=live]", timeout=60_000)
            slugs = sorted(by_pop)[: args.deltas]
            deltas = [delta_latency(page, orm, by_pop[slug][0], slug) for slug in slugs]
            result["delta"] = [d for d in deltas if d is not None]
            flappers = [pk for slug in sorted(by_pop) for pk in by_pop[slug][1:3]]
            page.evaluate("window.__benchFrames.length = 0")
            storm = flap_storm(flappers, args.storm_seconds, args.storm_procs)
            page.wait_for_timeout(12000)  # the last window, and two version beacons should the tail be lost
            frames = [(at / 1000.0, kind, first, last) for at, kind, first, last in page.evaluate("window.__benchFrames")]
            result["storm"] = summarize_storm(storm, frames, orm)
            page.evaluate("window.__benchFrames.length = 0")
            storm = orm(channel_storm, flappers, args.storm_seconds)
            page.wait_for_timeout(2000)
            frames = [(at / 1000.0, kind, first, last) for at, kind, first, last in page.evaluate("window.__benchFrames")]
            result["channel_storm"] = summarize_storm(storm, frames, orm)
            result["channel_storm"]["server_version"] = storm["commits"] + result["storm"]["server_version"]
            page.screenshot(path=str(tmp / "dashboard.png"))
            browser.close()
        orm.pool.shutdown()
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, 15)
            server.wait(timeout=15)
        redis.stop()
    report(result, args, tmp)


def summarize_storm(storm: dict[str, Any], frames: list[tuple[float, str, int | None, int | None]],
                    orm: Orm) -> dict[str, Any]:
    from steering.readmodels.version import current_version

    seconds = storm["ended"] - storm["began"]
    deltas = [f for f in frames if f[1] == "delta"]
    in_storm = [f for f in deltas if storm["began"] <= f[0] <= storm["ended"] + 0.5]
    per_second = Counter(int(f[0] - storm["began"]) for f in in_storm)
    return {
        "seconds": round(seconds, 2),
        "processes": storm["processes"],
        "versions_committed": storm["commits"],
        "versions_per_second": round(storm["commits"] / seconds, 1),
        "messages_received": len(in_storm),
        "messages_per_second_mean": round(len(in_storm) / seconds, 1),
        "messages_per_second_max": max(per_second.values(), default=0),
        "last_version_received": max((f[3] or 0 for f in frames if f[1] in ("delta", "hello")), default=None),
        # Messages that do not continue the previous one (the channel layer dropped some): the browser refetches.
        "gaps": sum(1 for a, b in zip(deltas, deltas[1:], strict=False) if (b[2] or b[3] or 0) > (a[3] or 0) + 1),
        "hellos": sum(1 for f in frames if f[1] == "hello"),
        "server_version": orm(current_version),
    }


def report(result: dict[str, Any], args: argparse.Namespace, tmp: Path) -> None:
    print(json.dumps(result, indent=2))
    renders = [r["first_render_ms"] for r in result.get("first_render", [])]
    if renders:
        print(f"first render ({result['fleet']['pops']} PoPs, {result['fleet']['backends']} backends): "
              f"median {statistics.median(renders):.0f} ms, runs {[round(r) for r in renders]} (goal < 2000 ms)")
    deltas = [d["change_to_dom_ms"] for d in result.get("delta", []) if d["change_to_dom_ms"] == d["change_to_dom_ms"]]
    if deltas:
        print(f"delta applied (service call -> marker in DOM): median {statistics.median(deltas):.0f} ms, "
              f"max {max(deltas):.0f} ms over {len(deltas)}")
    else:
        print("delta applied: n/a (no [data-testid=pop-marker] to watch)")
    storm = result.get("storm")
    if storm:
        print(f"flap storm ({storm['processes']} processes): {storm['versions_per_second']} versions/s committed "
              f"for {storm['seconds']} s -> "
              f"{storm['messages_per_second_mean']} live messages/s mean, {storm['messages_per_second_max']} max "
              f"(last version received {storm['last_version_received']}, server {storm['server_version']}, "
              f"gaps {storm['gaps']}, version beacons {storm['hellos']})")
    storm = result.get("channel_storm")
    if storm:
        print(f"channel-layer storm: {storm['versions_per_second']} versions/s published for {storm['seconds']} s -> "
              f"{storm['messages_per_second_mean']} live messages/s mean, {storm['messages_per_second_max']} max "
              f"(last version received {storm['last_version_received']} of {storm['server_version']}, "
              f"gaps {storm['gaps']})")
    if args.keep:
        print(f"kept: {tmp} (steering.sqlite3, uvicorn.log, dashboard.png)")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""HAProxy as the PoP's local L4/L7 data plane.

- `model`: plain data (no Django) describing what one PoP's HAProxy should do.
- `desired`: builds that plain data from the database (with `jobs`, the only Django-aware part).
- `render`: a complete haproxy.cfg from the plain data.
- `runtime`: a small Runtime API client over the admin unix socket.
- `apply`: desired vs `show servers state` -> minimal runtime commands, drift, reconcile.
- `stats`: `show stat` -> per-backend sessions and rates in Redis.
- `jobs`: per-PoP entry points for tasks/ (sync after a change, reconcile on a schedule, stats).
"""

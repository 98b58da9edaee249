"""HAProxy as the PoP's local L4/L7 data plane.

- `model`: plain data (no Django) describing what one PoP's HAProxy should do.
- `desired`: builds that plain data from the database (the only Django-aware part; the control
  plane serves it to each PoP's agent, steering.agents.haproxy, through the agent contract).
- `render`: a complete haproxy.cfg from the plain data.
- `runtime`: a small Runtime API client over the admin unix socket.
- `apply`: desired vs `show servers state` -> minimal runtime commands, drift, reconcile.
- `stats`: `show stat` -> per-backend sessions and rates (the agent reports them to the API).
- `demo`: what `make run` starts: one agent per demo PoP, each running its own HAProxy.
"""

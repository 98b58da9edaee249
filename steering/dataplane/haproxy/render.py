"""Render a complete haproxy.cfg for one PoP from plain data (no Django).

Choices worth knowing:
- No active health checks of HAProxy's own: we probe ourselves (steering.health) and hand HAProxy
  the result as the effective weight. A second, independent prober in HAProxy would pull servers
  out on its own when most of a pool looks down, which is exactly what our panic mode refuses to
  do, and operators would see two verdicts that disagree.
- Passive health, per pool (PoolSpec.retries, redispatch, retry_on, observe, error_limit):
  `retries` + `option redispatch 1` retry a failed connection on ANOTHER server, `retry-on` also
  replays a request whose server died under it (empty response, timeout) but only for idempotent
  methods (`http-request disable-l7-retry` for the rest), so a backend that dies costs clients
  nothing. `observe layer4` + `error-limit` + `on-error mark-down` take a server out of rotation
  after that many failed connections in a row, within milliseconds. HAProxy needs `check` for
  observe; its check here is a plain TCP connect that only brings a server back once it accepts
  connections again (`fall` so high it never takes one out by itself): HAProxy judges live
  traffic only, the prober stays the one active verdict. The control plane reads HAProxy's
  verdict and the live counters and decides ejections, bounded (steering.services.outliers).
- No Runtime API command changes a pool's passive settings, so the config says which ones it was
  rendered with: one process-wide variable per pool (`proc.steering_passive_<id>`, read with
  `get var`). The agent of an HAProxy it does not run compares them with the desired ones and
  refuses a version HAProxy cannot apply without a reload; the agent that runs HAProxy checks its
  reload by them.
- Every `balance` is dynamic, so the Runtime API can `add server` (HAProxy 2.6 needs it).
- Draining cannot be written in a config, so a draining server renders as `weight 0` (no new
  sessions, open ones finish): after a restart `apply` treats weight 0 and `drain` as the same.
- A backend's mode follows its service's frontend: a frontend can only use backends of its mode.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steering.dataplane.haproxy.model import ALGORITHMS, DRAIN, MAINT, PoolSpec, PopSpec, ServerSpec, ServiceSpec

DEFAULT_TIMEOUTS = {
    "connect": "5s", "client": "60s", "server": "60s", "queue": "10s",
    "http-request": "10s", "http-keep-alive": "10s", "client-fin": "5s", "tunnel": "1h", "check": "2s",
}

# RFC 9110 §9.2.2: requests with these methods may be replayed automatically.
IDEMPOTENT_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE")
# HAProxy's check when `observe` is on: it runs only to put a server HAProxy took out back in
# (every `downinter`, `rise` successes); `fall` is high enough that checks never take one out.
OBSERVE_CHECK = "inter 10s fastinter 1s downinter 1s rise 2 fall 1000"


@dataclass(frozen=True)
class Rendered:
    text: str
    warnings: tuple[str, ...]


def quote(value: str) -> str:
    """A config word in single quotes: no escapes, no environment expansion inside."""
    if "'" in value or "\n" in value:
        raise ValueError(f"cannot put {value!r} in an HAProxy config")
    return f"'{value}'"


def server_address(address: str, port: int) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"{address}:{port}"  # a hostname, resolved by libc when HAProxy starts (init-addr)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def bind_address(service: str, bind: tuple[str, int]) -> str:
    """A frontend's `bind` word: the address the model gives the service at this PoP (its VIP),
    whatever network it is in; only a malformed one is refused."""
    host, port = bind
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"service {service}: bind {host!r} is not an IP address") from exc
    if not 0 < port < 65536:
        raise ValueError(f"service {service}: bind port {port} is out of range")
    return server_address(host, port)


def observe_words(pool: PoolSpec) -> str:
    """A server's passive-health words for this pool ("" when observe is off). The agent can give a
    server it adds at runtime the same words (then `enable health` it): `add server` takes them."""
    if pool.observe != "layer4":
        return ""
    return f"check observe layer4 error-limit {int(pool.error_limit)} on-error mark-down {OBSERVE_CHECK}"


def passive_var(pool_id: int) -> str:
    """The process-wide variable holding a pool's rendered passive settings."""
    return f"proc.steering_passive_{int(pool_id)}"


def passive_settings(pool: PoolSpec, mode: str) -> str:
    """What of a pool's passive settings its config renders, as one word safe inside `str()`:
    `retries:3/redispatch:1/retry-on:conn-failure+empty-response/observe:layer4/error-limit:5`.
    A setting that renders nothing (retry-on in TCP, error-limit without observe) is left empty, so
    changing it asks for no reload."""
    retries = max(0, int(pool.retries))
    words = pool.retry_on.split() if mode == "http" and retries else []
    for word in words:
        if not word.replace("-", "").isalnum() or not word.isascii():
            raise ValueError(f"pool {pool.slug}: unusable retry-on keyword {word!r}")
    observing = pool.observe == "layer4"
    return "/".join([f"retries:{retries}", f"redispatch:{int(bool(retries and pool.redispatch))}",
                     f"retry-on:{'+'.join(words)}", f"observe:{'layer4' if observing else 'off'}",
                     f"error-limit:{int(pool.error_limit) if observing else ''}"])


def server_line(s: ServerSpec, passive: str = "") -> str:
    # weight 0 for drain: the config cannot say "drain", and weight 0 takes no new sessions either.
    weight = 0 if s.state == DRAIN else s.weight
    words = [f"server {s.name} {server_address(s.address, s.port)} weight {weight}"]
    if s.backup:
        words.append("backup")
    if s.state == MAINT:
        words.append("disabled")
    if passive:
        words.append(passive)
    return "    " + " ".join(words)


def retry_lines(pool: PoolSpec, mode: str) -> list[str]:
    """retries, redispatch and (HTTP) retry-on for a pool, from its settings."""
    retries = max(0, int(pool.retries))
    lines = [f"    retries {retries}"]
    if retries and pool.redispatch:
        lines.append("    option redispatch 1")  # every retry on another server than the one that failed
    elif retries:
        lines.append("    no option redispatch")
    words = pool.retry_on.split()
    if mode == "http" and retries and words:
        for word in words:
            if not word.replace("-", "").isalnum():
                raise ValueError(f"pool {pool.slug}: unusable retry-on keyword {word!r}")
        lines.append(f"    retry-on {' '.join(words)}")
        if any(w != "conn-failure" for w in words):
            # A request that reached its server is replayed only when replaying cannot do harm.
            lines.append(f"    http-request disable-l7-retry unless {{ method {' '.join(IDEMPOTENT_METHODS)} }}")
    return lines


def frontend_mode(service: ServiceSpec, pools: list[PoolSpec]) -> str:
    """http only when the service speaks HTTP and every pool of it here is L7."""
    return "http" if service.protocol == "http" and all(p.mode == "http" for p in pools) else "tcp"


def services_pools(spec: PopSpec) -> dict[str, list[PoolSpec]]:
    """Each service's pools, in the order its frontend tries their rules."""
    return {s.slug: sorted((p for p in spec.pools if p.service == s.slug), key=lambda p: (p.rule_priority, p.slug, p.id))
            for s in spec.services}


def pool_modes(spec: PopSpec) -> dict[int, str]:
    """The mode each pool's backend is rendered in: its frontend's, else (a pool of a service not
    listed) its own."""
    by_service = services_pools(spec)
    modes = {p.id: frontend_mode(s, by_service[s.slug]) for s in spec.services for p in by_service[s.slug]}
    return {p.id: modes.get(p.id, p.mode) for p in spec.pools}


def _rule_lines(pool: PoolSpec) -> tuple[list[str], str]:
    """ACL lines for a pool's match, and the condition that names them."""
    acls, names = [], []
    base = f"r{pool.id}"
    if pool.match_host:
        acls.append(f"    acl {base}_host hdr(host),field(1,:) -i {quote(pool.match_host)}")
        names.append(f"{base}_host")
    if pool.match_path_prefix:
        prefix = pool.match_path_prefix
        if prefix.endswith("/"):
            acls.append(f"    acl {base}_path path_beg {quote(prefix)}")
        else:
            # "/payments" matches /payments and /payments/..., not /paymentsfoo.
            acls.append(f"    acl {base}_path path {quote(prefix)}")
            acls.append(f"    acl {base}_path path_beg {quote(prefix + '/')}")
        names.append(f"{base}_path")
    return acls, " ".join(names)


Bind = tuple[str, int]


def bind_list(value: Bind | Sequence[Bind]) -> list[Bind]:
    """A service's binds: one (address, port), or several (its VIPs at the PoP: IPv4 and IPv6...)."""
    return [value] if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int) else list(value)  # type: ignore[list-item]


def render(spec: PopSpec, *, socket_path: str, binds: Mapping[str, Bind | Sequence[Bind]],
           timeouts: Mapping[str, str] | None = None, maxconn: int = 4096) -> Rendered:
    """haproxy.cfg for `spec`. `binds` maps service slug -> the (address, port) its frontend binds,
    or a list of them (each one a `bind` line)."""
    warnings: list[str] = list(spec.notes)
    if "'" in socket_path or any(c.isspace() for c in socket_path):
        raise ValueError(f"unusable socket path {socket_path!r}")
    pools_by_id = {p.id: p for p in spec.pools}
    by_service = services_pools(spec)
    modes = pool_modes(spec)
    out = [
        f"# Rendered by steering for PoP {spec.slug}. Do not edit: runtime changes go through the Runtime API.",
        "global",
        f"    maxconn {maxconn}",
        f"    stats socket {socket_path} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        *(f"    set-var {passive_var(p.id)} str({passive_settings(p, modes[p.id])})"
          for p in sorted(spec.pools, key=lambda p: p.id)),
        "",
        "defaults",
        "    mode tcp",
        *(f"    timeout {k} {v}" for k, v in {**DEFAULT_TIMEOUTS, **(timeouts or {})}.items()),
        # Hostname backends resolve at start; one that does not resolve starts disabled, not fatal.
        "    default-server init-addr last,libc,none",
        "",
    ]
    for service in spec.services:
        pools = by_service[service.slug]
        if not pools:
            continue
        if service.slug not in binds:
            raise ValueError(f"no bind address given for service {service.slug}")
        mode = modes[pools[0].id]
        for p in pools:
            if p.mode == "http" and mode == "tcp":
                warnings.append(f"pool {p.slug}: L7 pool behind a TCP frontend; served as TCP, match rules not applied")
        out += [f"frontend {service.frontend}", f"    mode {mode}",
                *(f"    bind {bind_address(service.slug, b)}" for b in bind_list(binds[service.slug]))]
        if mode == "http":
            out.append("    option http-keep-alive")
        default = next((p for p in pools if not p.has_rule), None) if mode == "http" else pools[0]
        if mode == "http":
            for p in pools:
                if not p.has_rule:
                    if p is not default:
                        warnings.append(f"pool {p.slug}: no match rule and not the default pool; unreachable")
                    continue
                acls, cond = _rule_lines(p)
                out += acls
                backup = _backup_for(p, pools_by_id, warnings, modes=modes)
                if backup is not None:
                    out.append(f"    use_backend {backup.proxy} if {cond} {{ nbsrv({p.proxy}) eq 0 }}")
                out.append(f"    use_backend {p.proxy} if {cond}")
        elif len(pools) > 1:
            warnings.append(f"service {service.slug}: TCP frontend uses {pools[0].slug} only")
        if default is not None:
            backup = _backup_for(default, pools_by_id, warnings, modes=modes)
            if backup is not None:
                out.append(f"    use_backend {backup.proxy} if {{ nbsrv({default.proxy}) eq 0 }}")
            out.append(f"    default_backend {default.proxy}")
        else:
            warnings.append(f"service {service.slug}: no pool without match rules; unmatched requests get 503")
        out.append("")
    for p in sorted(spec.pools, key=lambda p: p.id):
        mode = modes[p.id]
        out += [f"backend {p.proxy}", f"    mode {mode}", f"    balance {ALGORITHMS.get(p.algorithm, 'roundrobin')}"]
        if p.algorithm == "source":
            out.append("    hash-type consistent")  # static hashing would refuse runtime-added servers
        out += retry_lines(p, mode)
        passive = observe_words(p)
        out += [server_line(s, passive) for s in p.servers]
        out.append("")
    return Rendered("\n".join(out) + "\n", tuple(warnings))


def _backup_for(pool: PoolSpec, pools_by_id: Mapping[int, PoolSpec], warnings: list[str], *,
                modes: Mapping[int, str]) -> PoolSpec | None:
    if pool.backup_pool_id is None:
        return None
    backup = pools_by_id.get(pool.backup_pool_id)
    if backup is None:
        warnings.append(f"pool {pool.slug}: backup pool is not in this PoP; no last-resort route")
        return None
    if modes.get(backup.id) != modes.get(pool.id):
        # A frontend can only switch to a backend of its own mode.
        warnings.append(f"pool {pool.slug}: backup pool {backup.slug} is {modes.get(backup.id)}, not "
                        f"{modes.get(pool.id)}; no last-resort route")
        return None
    return backup


def write_config(rendered: Rendered, path: str, *, haproxy: str = "haproxy") -> None:
    """Validate with `haproxy -c`, then replace `path` atomically: a reload never reads a bad or
    half-written file. The caller then reloads the master (SIGUSR2 with -W); `expose-fd listeners`
    lets the new worker take over the listening sockets, and a reconcile pass follows."""
    import os
    import subprocess
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".haproxy-", suffix=".cfg", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(rendered.text)
        check = subprocess.run([haproxy, "-c", "-q", "-f", tmp], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise ValueError(f"haproxy -c refused the rendered config: {(check.stdout + check.stderr).strip()}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

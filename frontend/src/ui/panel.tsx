// The PoP panel: anycast and DNS at a glance, each pool with its backends in one dense, sortable
// table (health with a latency sparkline, admin state, configured → effective weight and why,
// share of the pool, live sessions), and the actions an operator may take.

import { useEffect, useRef, useState } from "preact/hooks";
import type { AnycastPop, Applied, Backend, BackendStats, Pool, PoP, StatsResponse } from "../api";
import { pollData, type PollState } from "../poll";
import { useReplay } from "../replay";
import { samples } from "../samples";
import { shallow, store, useStore } from "../store";
import type { ActionRequest } from "./actions";
import { PopApplied } from "./applied";
import { ago, Badge, fmt, symbolOf } from "./common";

type SortKey = "name" | "health" | "admin" | "weight" | "eff" | "share" | "sessions" | "rate";
const HEALTH_ORDER: Record<string, number> = { down: 0, stale: 1, unknown: 2, up: 3 };
const ADMIN_ORDER: Record<string, number> = { maint: 0, draining: 1, drained: 2, ready: 3 };

/** Seconds of ejection left, or null when live traffic has not taken the backend out. */
export function ejectedFor(b: Backend): number | null {
  if (!b.ejected_at || !b.ejected_until) return null;
  const left = (Date.parse(b.ejected_until) - store.now()) / 1000;
  return left > 0 ? left : null;
}

/** "ejected by live traffic: 14 × 5xx in 10 s · back in 25 s (ejection 2 in a row)". */
export function ejectionText(b: Backend): string {
  const left = ejectedFor(b);
  if (left === null) return "";
  const nth = b.ejection_count > 1 ? ` (ejection ${b.ejection_count} in a row)` : "";
  return `ejected by live traffic: ${b.ejection_reason || "failing requests"} · back in ${Math.ceil(left)} s unless the prober finds it down${nth}`;
}

export interface PanelProps {
  popId: number;
  canAct: boolean;
  selectedBackend: number | null;
  focusPool: number | null;
  onSelectBackend: (id: number | null) => void;
  onAction: (req: ActionRequest) => void;
  onClose: () => void;
  /** Filter the audit timeline to this text (an object's history). */
  onHistory: (q: string) => void;
  anycast: AnycastPop | undefined;
  anycastMissing: boolean;
  /** GET /api/v1/stats/backends/?pop=<id>, polled by the app (operations use it too). */
  stats: PollState<StatsResponse>;
  /** Desired vs applied per PoP and layer (GET /api/v1/dataplanes/ → applied). */
  applied: Applied | undefined;
}

/** Share of the pool's traffic: effective weight over the pool's total (backups only when no primary serves). */
export function shares(backends: Backend[]): Map<number, { share: number; total: number; backupOnly: boolean }> {
  const primaries = backends.filter((b) => !b.backup);
  const primaryTotal = primaries.reduce((s, b) => s + b.effective_weight, 0);
  const useBackups = primaryTotal === 0;
  const set = useBackups ? backends.filter((b) => b.backup) : primaries;
  const total = set.reduce((s, b) => s + b.effective_weight, 0);
  const out = new Map<number, { share: number; total: number; backupOnly: boolean }>();
  for (const b of backends) {
    const counts = b.backup === useBackups;
    out.set(b.id, { share: counts && total > 0 ? b.effective_weight / total : 0, total, backupOnly: useBackups });
  }
  return out;
}

export function PopPanel(p: PanelProps) {
  const pop = useStore((s) => s.t.pops.get(p.popId));
  const region = useStore((s) => (pop ? s.t.regions.get(pop.region_id) : undefined));
  const stats = p.stats;
  const statsData = pollData(stats);
  const [sort, setSort] = useState<{ key: SortKey; dir: 1 | -1 }>({ key: "name", dir: 1 });
  const pools = useStore((s) => s.poolsOf(p.popId), shallow);
  const summary = useStore((s) => s.summary(p.popId));
  const ejected = useStore(() => ejectedInPop(p.popId));
  const selected = useStore((s) => (p.selectedBackend === null ? undefined : s.t.backends.get(p.selectedBackend)));
  const ref = useRef<HTMLElement>(null);

  useEffect(() => {
    if (p.focusPool === null) return;
    ref.current?.querySelector(`[data-pool-id="${p.focusPool}"]`)?.scrollIntoView({ block: "start" });
  }, [p.focusPool]);
  useEffect(() => {
    if (p.selectedBackend === null) return;
    ref.current?.querySelector(`[data-backend="${p.selectedBackend}"]`)?.scrollIntoView({ block: "nearest" });
  }, [p.selectedBackend]);

  const statsNote = stats.kind === "missing" ? "session figures: not available on this server (HAProxy stats endpoint missing)"
    : stats.kind === "error" ? `session figures: ${stats.message}`
      : statsData && !statsData.connected ? "session figures: HAProxy not connected" : null;
  if (!pop) return null; // gone: the App shows the overview
  const act = (kind: ActionRequest["kind"]) => () => p.onAction({ kind, target: { type: "pop", id: pop.id, name: pop.slug } });
  return (
    <section class="pop-panel" data-testid="pop-panel" data-pop={pop.slug} aria-label={`PoP ${pop.name}`} ref={ref}>
      <header class="panel-head">
        <div class="title-row">
          <h2>{pop.name} <span class="muted">{pop.slug} · {pop.city} · {region?.name ?? "?"}</span></h2>
          <span>
            <button class="link" onClick={() => p.onHistory(pop.slug)}>History</button>{" "}
            <button class="icon" onClick={p.onClose} aria-label="Close PoP panel" title="Close (Esc)">✕</button>
          </span>
        </div>
        <div class="badges">
          <Badge state={summary.health} label={summary.health} />
          <Badge state={pop.admin_state} />
          <Badge state={pop.announce} />
          {summary.panic && <Badge state="panic" />}
          <span class="muted">{summary.total} backends · {summary.counts.up} up · {summary.counts.down} down{ejected > 0 ? ` · ${ejected} ejected by live traffic` : ""} · capacity {fmt.format(summary.capacity)} req/s</span>
        </div>
        {p.canAct && (
          <div class="actions">
            <button data-testid="pop-action-drain" onClick={act("drain")}>Drain PoP</button>
            <button data-testid="pop-action-undrain" onClick={act("undrain")}>Undrain</button>
            <button data-testid="pop-action-maintenance" onClick={act("maintenance")}>Maintenance</button>
            <button data-testid="action-withdraw" onClick={act("withdraw")}>Withdraw</button>
            <button data-testid="action-announce" onClick={act("announce")}>Announce</button>
          </div>
        )}
        <AnycastLine pop={pop} a={p.anycast} missing={p.anycastMissing} />
        <PopApplied applied={p.applied} slug={pop.slug} />
        {statsNote && <div class="note" role="status">{statsNote}</div>}
      </header>
      <div class="pools">
        {pools.length === 0 && <p class="muted">No pools in this PoP.</p>}
        {pools.map((pool) => <PoolBlock key={pool.id} {...p} pool={pool} sort={sort} setSort={setSort} stats={statsData?.connected ? statsData.backends : undefined} />)}
      </div>
      {selected && <BackendDetail backend={selected} onClose={() => p.onSelectBackend(null)} onHistory={p.onHistory} />}
    </section>
  );
}

function ejectedInPop(popId: number): number {
  let n = 0;
  for (const b of store.backendsOfPop(popId)) if (ejectedFor(b) !== null) n += 1;
  return n;
}

function AnycastLine({ pop, a, missing }: { pop: PoP; a: AnycastPop | undefined; missing: boolean }) {
  if (!a) {
    return <div class="anycast-line"><span class="label">anycast</span> desired: <Badge state={pop.announce} />
      <span class="muted"> · observed: {missing ? "not available (anycast endpoint missing)" : "no report"}</span></div>;
  }
  const same = [...a.desired].sort().join() === [...a.observed].sort().join();
  return (
    <div class="anycast-line">
      <span class="label">anycast</span> desired {a.desired.length ? a.desired.join(", ") : "none"} ·
      observed {a.agent === "absent" ? "no agent" : a.observed.length ? a.observed.join(", ") : "none"}{" "}
      {a.agent !== "absent" && (same ? <span class="ok">✓ in sync</span> : <span class="err">✕ differs</span>)}
      <span class="muted"> · agent {a.agent}{a.observed_at ? `, ${ago(a.observed_at)}` : ""}{a.reason ? ` · ${a.reason}` : ""}</span>
    </div>
  );
}

function PoolBlock(p: Omit<PanelProps, "stats"> & { pool: Pool; sort: { key: SortKey; dir: 1 | -1 }; setSort: (s: { key: SortKey; dir: 1 | -1 }) => void; stats: Record<string, BackendStats> | undefined }) {
  const { pool, sort } = p;
  const service = useStore((s) => s.t.services.get(pool.service_id));
  const popSlug = useStore((s) => s.t.pops.get(pool.pop_id)?.slug);
  const flash = useStore((s) => s.isFlashing(`pool:${pool.id}`));
  // A copy: sorted in place below, while the store's hook keeps the one it returned.
  const backends = [...useStore((s) => s.backendsOf(pool.id), shallow)];
  const share = shares(backends);
  const stat = (b: Backend) => p.stats?.[String(b.id)];
  const val = (b: Backend): number | string => {
    switch (sort.key) {
      case "name": return b.name;
      case "health": return HEALTH_ORDER[b.health] ?? 9;
      case "admin": return ADMIN_ORDER[b.admin_state] ?? 9;
      case "weight": return b.weight;
      case "eff": return b.effective_weight;
      case "share": return share.get(b.id)?.share ?? 0;
      case "sessions": return stat(b)?.sessions ?? -1;
      case "rate": return stat(b)?.session_rate ?? -1;
    }
  };
  backends.sort((a, b) => {
    const x = val(a), y = val(b);
    const c = typeof x === "string" ? x.localeCompare(String(y), undefined, { numeric: true }) : x - (y as number);
    return (c || a.name.localeCompare(b.name, undefined, { numeric: true })) * sort.dir;
  });
  const th = (key: SortKey, label: string, cls?: string, title?: string) => (
    <th scope="col" class={cls} aria-sort={sort.key === key ? (sort.dir === 1 ? "ascending" : "descending") : "none"} title={title}>
      <button class="sort" onClick={() => p.setSort({ key, dir: sort.key === key ? (-sort.dir as 1 | -1) : 1 })}>
        {label}{sort.key === key ? (sort.dir === 1 ? " ▴" : " ▾") : ""}
      </button>
    </th>
  );
  const act = (kind: ActionRequest["kind"]) => () => p.onAction({ kind, target: { type: "pool", id: pool.id, name: `${popSlug}/${pool.slug}` } });
  const totalEff = backends.filter((b) => !b.backup).reduce((s, b) => s + b.effective_weight, 0);
  const ejected = backends.filter((b) => ejectedFor(b) !== null).length;
  const policy = !pool.outlier_detection ? "outlier ejection off"
    : `ejects at most ${pool.outlier_max_ejected_percent}% at once`;
  return (
    <div class={`pool${flash ? " flash" : ""}`} data-pool-id={pool.id} data-testid="pool">
      <div class="pool-head">
        <strong>{pool.slug}</strong>
        <span class="muted">{service ? service.fqdn : `service #${pool.service_id}`} · {pool.mode} · {pool.algorithm} · Σ eff {totalEff}</span>
        {pool.admin_state !== "ready" && <Badge state={pool.admin_state} />}
        {pool.in_panic && <Badge state="panic" />}
        {pool.outlier_panic && <Badge state="panic" label="ejection limit" title={pool.outlier_panic_reason} />}
        {p.canAct && (
          <span class="pool-actions">
            <button class="small" onClick={act("drain")} title="Drain every backend of the pool">Drain pool</button>
            <button class="small" onClick={act("undrain")}>Undrain</button>
            <button class="small" onClick={act("maintenance")}>Maint</button>
          </span>
        )}
      </div>
      <div class="muted passive-line" data-testid="passive-line">
        live traffic: {pool.retries} retries{pool.redispatch ? " on another server" : ""}
        {pool.observe === "layer4" ? ` · HAProxy takes a server out after ${pool.error_limit} failed connections` : ""}
        {` · ${policy}`}{ejected > 0 ? ` · ${ejected} ejected now` : ""}
      </div>
      {pool.outlier_panic && <div class="note" role="status" data-testid="outlier-panic">{symbolOf("panic")} {pool.outlier_panic_reason}</div>}
      {backends.length === 0 ? <p class="muted">No backends in this pool.</p> : (
        <table class="backends">
          <thead>
            <tr>
              {th("name", "backend")}
              {th("health", "health · latency")}
              {th("admin", "admin")}
              {th("weight", "w", "num", "configured weight")}
              {th("eff", "eff", "num", "effective weight (hover a value for why)")}
              {th("share", "share", "num", "share of the pool's new traffic")}
              {th("sessions", "sess", "num", "current sessions (HAProxy)")}
              {th("rate", "/s", "num", "new sessions per second (HAProxy)")}
              {p.canAct && <th scope="col"><span class="sr-only">actions</span></th>}
            </tr>
          </thead>
          <tbody>
            {backends.map((b) => (
              <BackendRow key={b.id} b={b} share={share.get(b.id)!} stats={stat(b)} canAct={p.canAct}
                selected={p.selectedBackend === b.id} onSelect={p.onSelectBackend} onAction={p.onAction} path={`${popSlug}/${pool.slug}/${b.name}`} />
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

/** 33%, 8.3%, 0%: whole percent above 10 so the column stays narrow. */
function sharePct(x: number): string {
  const v = x * 100;
  return `${v >= 10 || v === 0 ? Math.round(v) : v.toFixed(1)}%`;
}

function BackendRow({ b, share, stats, canAct, selected, onSelect, onAction, path }: {
  b: Backend; share: { share: number; total: number; backupOnly: boolean }; stats: BackendStats | undefined; canAct: boolean;
  selected: boolean; onSelect: (id: number | null) => void; onAction: (r: ActionRequest) => void; path: string;
}) {
  const why = `${b.name} gets ${fmt.format(share.share * 100)} % of new connections: effective weight ${b.effective_weight} of ` +
    `${share.total} in the pool${share.backupOnly ? " (backups serve: no primary left)" : ""}${b.backup && !share.backupOnly ? " (backup: only used when no primary serves)" : ""}. ` +
    `Effective weight: ${b.effective_weight_reason}.`;
  // Probe latencies are of now, not of a replayed instant: not drawn over the past.
  const replaying = useReplay((s) => s.active);
  const act = (kind: ActionRequest["kind"]) => (e: Event) => {
    e.stopPropagation();
    onAction({ kind, target: { type: "backend", id: b.id, name: path }, weight: b.weight });
  };
  const ejection = ejectionText(b);
  const flash = useStore((s) => s.isFlashing(`backend:${b.id}`));
  return (
    <tr data-testid="backend-row" data-backend={b.id} data-health={b.health} data-admin-state={b.admin_state}
      data-ejected={ejection ? "true" : undefined}
      class={`${selected ? "selected" : ""}${flash ? " flash" : ""}`}
      onClick={() => onSelect(selected ? null : b.id)}>
      <td class="name">
        <button class="link" onClick={(e) => { e.stopPropagation(); onSelect(selected ? null : b.id); }} aria-expanded={selected}
          title={`${b.address}:${b.port}${b.version ? ` · version ${b.version}` : ""}`}>{b.name}</button>
        {b.backup && <span class="tag">backup</span>}
      </td>
      <td class="health"><span class="cell">{ejection ? <Badge state={b.health} title={`prober: ${b.health}`} /> : <Badge state={b.health} />}
        {ejection && <Badge state="ejected" title={ejection} />}{!replaying && <Sparkline id={b.id} width={48} />}</span></td>
      <td><Badge state={b.admin_state} /></td>
      <td class="num">{b.weight}</td>
      <td class={`num${b.effective_weight !== b.weight ? " differs" : ""}`} title={b.effective_weight_reason}>{b.effective_weight}</td>
      <td class="num" title={why} data-testid="share">{sharePct(share.share)}</td>
      <td class="num">{stats ? fmt.format(stats.sessions) : "—"}</td>
      <td class="num">{stats ? fmt.format(stats.session_rate) : "—"}</td>
      {canAct && (
        <td class="row-actions">
          <button class="small" data-testid="action-drain" onClick={act("drain")} title="Drain">Drain</button>
          <button class="small" data-testid="action-undrain" onClick={act("undrain")} title="Undrain">Undrain</button>
          <button class="small" data-testid="action-maintenance" onClick={act("maintenance")} title="Maintenance">Maint</button>
          <button class="small" data-testid="action-weight" onClick={act("weight")} title="Change weight">Wt</button>
        </td>
      )}
    </tr>
  );
}

/** Latency of the last probes, newest right; failed probes as red ticks. Fetches only while on screen. */
function Sparkline({ id, width = 56, height = 14 }: { id: number; width?: number; height?: number }) {
  const ref = useRef<SVGSVGElement>(null);
  const [, setN] = useState(0);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    let unwatch: (() => void) | null = null;
    const io = new IntersectionObserver((entries) => {
      const visible = entries.some((e) => e.isIntersecting);
      if (visible && !unwatch) unwatch = samples.watch(id, () => setN((n) => n + 1));
      if (!visible && unwatch) { unwatch(); unwatch = null; }
    });
    io.observe(el);
    return () => { io.disconnect(); unwatch?.(); };
  }, [id]);
  const s = samples.get(id);
  const list = s ? [...s.samples].reverse() : [];
  const max = Math.max(1, ...list.map((x) => x.latency_ms));
  const step = list.length > 1 ? width / (list.length - 1) : width;
  const pts = list.map((x, i) => `${(i * step).toFixed(1)},${(height - 1 - (x.latency_ms / max) * (height - 2)).toFixed(1)}`).join(" ");
  const last = list[list.length - 1];
  const label = last ? `last probe ${last.result} ${fmt.format(last.latency_ms)} ms, max ${fmt.format(max)} ms over ${list.length} probes` : "no probe results yet";
  return (
    <svg ref={ref} class="spark" width={width} height={height} role="img" aria-label={label} data-testid="sparkline">
      <title>{label}</title>
      {list.length > 1 && <polyline points={pts} fill="none" stroke="#8fb8ff" stroke-width="1.2" />}
      {list.map((x, i) => !x.ok && <line key={i} x1={i * step} x2={i * step} y1={0} y2={height} stroke="#d64545" stroke-width="1.5" />)}
    </svg>
  );
}

function BackendDetail({ backend: b, onClose, onHistory }: { backend: Backend; onClose: () => void; onHistory: (q: string) => void }) {
  const [, setN] = useState(0);
  useEffect(() => {
    samples.select(b.id);
    const un = samples.watch(b.id, () => setN((n) => n + 1));
    return () => { samples.select(null); un(); };
  }, [b.id]);
  const s = samples.get(b.id);
  const last = s?.samples[0];
  const siblings = useStore((st) => st.backendsOf(b.pool_id), shallow);
  const share = shares(siblings).get(b.id);
  return (
    <aside class="backend-detail" data-testid="backend-detail" aria-label={`Backend ${b.name}`}>
      <div class="title-row">
        <h3>{b.name} <span class="muted mono">{b.address}:{b.port}</span></h3>
        <button class="icon" onClick={onClose} aria-label="Close backend details">✕</button>
      </div>
      <div>Weight: configured {b.weight} → effective {b.effective_weight} <span class="muted">({b.effective_weight_reason})</span></div>
      {share && <div>Share: {sharePct(share.share)} of the pool's new connections: effective weight {b.effective_weight} of {share.total}
        {b.backup ? (share.backupOnly ? " (backups serve: no primary left)" : " (backup: used only when no primary serves)") : ""}</div>}
      <LiveTrafficLine b={b} />
      <div><button class="link" onClick={() => onHistory(b.name)}>History of {b.name} in the timeline</button></div>
      {s ? (
        <>
          <div>Health <Badge state={b.health} /> · prober: {s.counters.health}, {s.counters.ok_streak} ok / {s.counters.fail_streak} failed in a row
            {s.counters.rise !== null && ` (rise ${s.counters.rise}, fall ${s.counters.fall}, every ${s.counters.interval_seconds} s)`}
            {!s.probed && " · not probed (pool has no monitor)"}</div>
          {last && <div>Last probe: {last.result} {last.detail} in {fmt.format(last.latency_ms)} ms, {ago(last.time)}</div>}
          <Sparkline id={b.id} width={300} height={36} />
          {s.events.length > 0 && (
            <ul class="events">
              {s.events.slice(0, 5).map((e, i) => (
                <li key={i}>{new Date(e.time).toLocaleTimeString()} <Badge state={e.from_health} /> → <Badge state={e.to_health} />{" "}
                  <span class="muted mono">{Object.entries(e.evidence).map(([k, v]) => `${k}=${String(v)}`).join(" ")}</span></li>
              ))}
            </ul>
          )}
        </>
      ) : <div class="muted">Loading probe results…</div>}
    </aside>
  );
}

/** Passive health beside active health: what live traffic decided, and what happens next. */
function LiveTrafficLine({ b }: { b: Backend }) {
  const text = ejectionText(b);
  if (text) {
    return <div data-testid="live-traffic">Live traffic: <Badge state="ejected" /> {text.replace("ejected by live traffic: ", "")}
      <span class="muted"> · since {b.ejected_at ? new Date(b.ejected_at).toLocaleTimeString() : "?"} (audited as system:outlier)</span></div>;
  }
  const last = b.ejected_until ? ` · last ejected until ${new Date(b.ejected_until).toLocaleTimeString()}${b.ejection_reason ? ` (${b.ejection_reason})` : ""}` : "";
  return <div class="muted" data-testid="live-traffic">Live traffic: in rotation{last}</div>;
}

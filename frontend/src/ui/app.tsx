// The dashboard: header (search, layer toggles, live and data-plane status), the map with its
// layers, the PoP panel (or an overview), operations and the audit timeline.

import { useEffect, useRef, useState } from "preact/hooks";
import { LAYER_KEYS, type AnycastResponse, type Dataplanes, type DnsAnswers, type Observed, type PoP, type StatsResponse } from "../api";
import { pollData, usePoll, type PollState } from "../poll";
import { shallow, store, useStore, useTables } from "../store";
import { ActionDialog, type ActionRequest } from "./actions";
import { AppliedSummary } from "./applied";
import { Badge, colourOf, fmt } from "./common";
import { WorldMap, type Layer } from "./map";
import { FreezeBar, FreezeButton, useFreeze } from "./freeze";
import { Operations } from "./ops";
import { Windows } from "./windows";
import { Drift } from "./drift";
import { Notifications } from "./notifications";
import { PopPanel } from "./panel";
import { Search, type Hit } from "./search";
import { Timeline } from "./timeline";
import { ReplayBar, ReplayButton, ReplayTimeline } from "./replay";
import { useReplay } from "../replay";

const LAYERS: { key: Layer; label: string; title: string }[] = [
  { key: "dns", label: "DNS", title: "Which regions each service answers with, weights, TTL, live answer shares" },
  { key: "anycast", label: "Anycast", title: "Which PoPs announce each prefix (desired and observed) and their catchments" },
  { key: "local", label: "Local", title: "Per PoP, a donut of its backends' states" },
];

const first = (ids: Iterable<number>): number | null => { for (const id of ids) return id; return null; };

/** The page. It re-renders for its own state, its polls and the few store slices it reads here;
 * a delta re-renders only the components below that read what it changed. */
export function App() {
  const [layers, setLayers] = useState<Record<Layer, boolean>>({ dns: false, anycast: false, local: true });
  const [selPop, setSelPop] = useState<number | null>(null);
  const [selRegion, setSelRegion] = useState<number | null>(null);
  const [selBackend, setSelBackend] = useState<number | null>(null);
  const [focusPool, setFocusPool] = useState<number | null>(null);
  const [dialog, setDialog] = useState<ActionRequest | null>(null);
  const [toast, setToast] = useState<string | null>(null);
  const [dnsService, setDnsService] = useState<number | null>(null);
  const [prefix, setPrefix] = useState<number | null>(null);
  const searchRef = useRef<HTMLInputElement>(null);
  const [history, setHistory] = useState<{ q: string; n: number } | null>(null);
  const showHistory = (q: string) => setHistory({ q, n: (history?.n ?? 0) + 1 });

  // While a replay is on, the picture is of the past: what only the present knows (data planes'
  // figures, DNS answers, observed routes, sessions) is not shown over it, and nobody acts from it.
  const replaying = useReplay((s) => s.active);
  const dns = usePoll<DnsAnswers>(layers.dns && !replaying ? "/api/v1/dns/answers/" : null, 2000);
  const anycast = usePoll<AnycastResponse>((layers.anycast || selPop !== null) && !replaying ? "/api/v1/anycast/" : null, 2000);
  const planes = usePoll<Dataplanes>("/api/v1/dataplanes/", 5000);
  const stats = usePoll<StatsResponse>(selPop === null || replaying ? null : `/api/v1/stats/backends/?pop=${selPop}`, 2000);
  const observed = useStore((s) => s.shell.observed);
  const anycastData = replaying ? undefined : mergeObserved(pollData(anycast), observed);
  const dnsData = replaying ? undefined : pollData(dns);
  const past = { kind: "error", message: "not kept in history (replay)" } as const;
  const statsShown: PollState<StatsResponse> = replaying ? past : stats;
  const applied = replaying ? undefined : pollData(planes)?.applied;

  const liveRole = useStore((s) => s.shell.me?.role ?? null);
  const role = replaying ? null : liveRole;
  const [freeze, setFreeze] = useFreeze();
  const [freezeAsk, setFreezeAsk] = useState(false);
  const canAct = role === "operator" || role === "admin";
  const firstService = useStore((s) => first(s.t.services.keys()));
  const firstPrefix = useStore((s) => first(s.t.prefixes.keys()));

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const target = e.target as HTMLElement | null;
      const typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT");
      if (e.key === "/" && !typing && !dialog) { e.preventDefault(); searchRef.current?.focus(); }
      else if (e.key === "Escape" && !dialog && !typing) {
        if (selBackend !== null) setSelBackend(null);
        else if (selPop !== null || selRegion !== null) { setSelPop(null); setSelRegion(null); }
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [dialog, selPop, selRegion, selBackend]);

  useEffect(() => {
    if (!toast) return;
    const t = window.setTimeout(() => setToast(null), 6000);
    return () => window.clearTimeout(t);
  }, [toast]);

  const openPop = (id: number) => { setSelPop(id); setSelRegion(null); setSelBackend(null); setFocusPool(null); };
  const pick = (h: Hit) => {
    if (h.type === "region") { setSelRegion(h.id); setSelPop(null); setSelBackend(null); }
    else if (h.type === "pop") openPop(h.id);
    else if (h.type === "pool") { const p = store.t.pools.get(h.id); if (p) { openPop(p.pop_id); setFocusPool(p.id); } }
    else {
      const b = store.t.backends.get(h.id);
      const pop = b ? store.popOfBackend(b) : undefined;
      if (pop) { openPop(pop.id); setSelBackend(h.id); }
    }
  };
  // Whether the selected PoP exists (the panel reads the PoP itself).
  const panel = useStore((s) => (selPop !== null && s.t.pops.has(selPop) ? selPop : null));
  // For measurements (browser tests): when the first picture with data is on screen.
  const loaded = useStore((s) => s.loaded);
  useEffect(() => { if (loaded) performance.mark("steering:first-render"); }, [loaded]);

  return (
    <>
      <header class="bar">
        <span class="product">steering</span>
        <Search onPick={pick} inputRef={searchRef} />
        <div class="toggles" role="group" aria-label="Map layers">
          {LAYERS.map((l) => (
            <button key={l.key} data-testid="layer-toggle" data-layer={l.key} aria-pressed={layers[l.key]} title={l.title}
              onClick={() => setLayers({ ...layers, [l.key]: !layers[l.key] })}>
              <span aria-hidden="true">{layers[l.key] ? "☑" : "☐"}</span> {l.label}
            </button>
          ))}
        </div>
        <LiveStatus />
        <Version />
        <DataplaneStatus planes={planes} />
        <span class="spacer" />
        <FreezeButton state={freeze} role={role} onAsk={() => setFreezeAsk(true)} />
        <WhoAmI />
        <a href="/api/docs/">API</a>
        <form method="post" action="/accounts/logout/" class="signout">
          <input type="hidden" name="csrfmiddlewaretoken" value={csrf()} />
          <button type="submit">Sign out</button>
        </form>
      </header>
      <Banner />
      <ReplayBar />
      <FreezeBar state={freeze} setState={setFreeze} role={role} asking={freezeAsk} setAsking={setFreezeAsk} />
      <main class="layout">
        <div class="left">
          <div class={`map-wrap${replaying ? " replaying" : ""}`} data-testid="map-wrap" data-replay={String(replaying)}>
            <ReplayButton />
            {!loaded ? <p class="muted loading">Loading topology…</p> : (
              <WorldMap layers={layers} selectedPop={selPop} onSelectPop={openPop}
                dnsService={dnsService ?? firstService} dns={dnsData} anycastPrefix={prefix ?? firstPrefix} anycast={anycastData}
                applied={applied} />
            )}
            <Legend layers={layers} dns={replaying ? past : dns} anycast={replaying ? past : anycast} anycastData={anycastData}
              dnsService={dnsService ?? firstService} setDnsService={setDnsService} prefix={prefix ?? firstPrefix} setPrefix={setPrefix} />
          </div>
          <div class="bottom">
            <Operations canAct={canAct} onAction={setDialog} stats={pollData(statsShown)} />
            {replaying ? <ReplayTimeline /> : (
              <>
                <Windows canAct={canAct} onAction={setDialog} />
                <Drift />
            {canAct && <Notifications isAdmin={role === "admin"} />}
                <Timeline history={history} />
              </>
            )}
          </div>
        </div>
        <aside class="right">
          {panel !== null ? (
            <PopPanel key={panel} popId={panel} canAct={canAct} selectedBackend={selBackend} focusPool={focusPool}
              onSelectBackend={setSelBackend} onAction={setDialog} onClose={() => setSelPop(null)} onHistory={showHistory}
              anycast={anycastData?.pops[String(panel)]} anycastMissing={!replaying && anycast.kind === "missing"} stats={statsShown}
              applied={applied} />
          ) : (
            <Overview region={selRegion} onPop={openPop} canAct={canAct} onAction={setDialog} onRegion={setSelRegion}
              dns={dnsData} dnsOn={layers.dns} dnsService={dnsService ?? firstService} />
          )}
        </aside>
      </main>
      {dialog && !replaying && <ActionDialog req={dialog} onClose={() => setDialog(null)} onDone={setToast} />}
      <div class="toast" role="status" aria-live="polite" data-testid="toast" hidden={!toast}>{toast}</div>
    </>
  );
}

function csrf(): string {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]*)/);
  return m?.[1] ? decodeURIComponent(m[1]) : "";
}

/** Pushed observations (WebSocket) are newer than the last poll: lay them over it. */
function mergeObserved(base: AnycastResponse | undefined, pushed: ReadonlyMap<number, Observed>): AnycastResponse | undefined {
  if (!pushed.size) return base;
  const pops = { ...(base?.pops ?? {}) };
  for (const [id, m] of pushed) {
    const cur = pops[String(id)];
    if (cur && cur.observed_at !== null && (m.at ?? 0) < cur.observed_at) continue;
    pops[String(id)] = {
      slug: cur?.slug ?? store.t.pops.get(id)?.slug ?? "", session: cur?.session ?? null,
      desired: m.desired ?? cur?.desired ?? [], observed: m.observed ?? [], observed_at: m.at ?? null,
      agent: "connected", reason: cur?.reason ?? "",
    };
  }
  return { pops };
}

function LiveStatus() {
  const conn = useStore((s) => s.shell.conn);
  const replaying = useReplay((s) => s.active);
  if (replaying) {
    return <span class="conn" data-testid="live-status" data-state="replay" role="status"
      title="A replay of the past is on: live changes are not shown until you go back to live.">◷ replay</span>;
  }
  const text = { connecting: "◌ connecting…", live: "● live", offline: "○ offline: reconnecting" }[conn];
  return <span class="conn" data-testid="live-status" data-state={conn} role="status" aria-live="polite"
    title={conn === "offline" ? "The live feed is down: figures may be out of date; the view resyncs when it returns." : undefined}>{text}</span>;
}

/** The state version of the picture shown; its effect marks the latest picture drawn. */
function Version() {
  const version = useStore((s) => s.version);
  // Replaced (not accumulated) so a long session does not grow the buffer. Effects run after the
  // frame's whole render, so this marks the picture of this version on screen.
  useEffect(() => {
    if (version === null) return;
    performance.clearMarks("steering:render");
    performance.mark("steering:render", { detail: { version } });
  }, [version]);
  return <span class="version" title="state version of the picture shown">v{version ?? "—"}</span>;
}

function WhoAmI() {
  const me = useStore((s) => s.shell.me);
  return me && <span class="me">{me.username} <span class="role" data-testid="role">{me.role ?? "no role"}</span></span>;
}

function Banner() {
  const banner = useStore((s) => s.shell.banner);
  return banner && (
    <div class={`banner ${banner.kind}`} role="alert">
      {banner.text} {banner.link && <a href={banner.link.href}>{banner.link.text}</a>}
    </div>
  );
}

function DataplaneStatus({ planes }: { planes: PollState<Dataplanes> }) {
  const data = pollData(planes);
  let body;
  if (planes.kind === "missing") body = <span class="muted">data planes: status not available on this server</span>;
  else if (!data) body = <span class="muted">data planes: {planes.kind === "error" ? planes.message : "checking…"}</span>;
  else {
    // Short, so every layer fits the header at 1280 px: the symbol and the layer's name on screen,
    // the state's words in the tooltip and for screen readers.
    body = [...LAYER_KEYS.map((name) => {
      const l = data[name];
      const state = l.connected ? "connected" : "not connected";
      return (
        <span key={name} class={`layer ${l.connected ? "ok" : "err"}`} title={`${name} ${state}: ${l.detail}`}
          data-layer={name} data-connected={String(l.connected)}>
          <span aria-hidden="true">{l.connected ? "✓" : "✕"}</span> {name}<span class="sr-only"> {state}</span>
        </span>
      );
    }), <AppliedSummary key="applied" applied={data.applied} />];
  }
  const down = data ? LAYER_KEYS.filter((name) => !data[name].connected).length : 0;
  return <span class={`dataplanes${down ? " some-down" : ""}`} data-testid="dataplane-status" role="status">{body}</span>;
}

function Legend(p: {
  layers: Record<Layer, boolean>; dns: PollState<DnsAnswers>; anycast: PollState<AnycastResponse>; anycastData: AnycastResponse | undefined;
  dnsService: number | null; setDnsService: (id: number) => void; prefix: number | null; setPrefix: (id: number) => void;
}) {
  useTables("services", "prefixes");
  const svc = p.dnsService === null ? undefined : store.t.services.get(p.dnsService);
  const dnsData = pollData(p.dns);
  const live = svc && dnsData?.connected ? dnsData.services[String(svc.id)] : undefined;
  const pfx = p.prefix === null ? undefined : store.t.prefixes.get(p.prefix);
  return (
    <div class="legend">
      {p.layers.dns && (
        <div class="legend-row" data-testid="legend-dns">
          <b>DNS</b>
          <select aria-label="Service shown on the DNS layer" value={p.dnsService ?? ""} onChange={(e) => p.setDnsService(Number(e.currentTarget.value))}>
            {[...store.t.services.values()].map((s) => <option key={s.id} value={s.id}>{s.fqdn}</option>)}
          </select>
          {svc && <span>{svc.dns_policy} · TTL {svc.ttl} s</span>}
          <span>{p.dns.kind === "missing" ? <span class="err">✕ answer figures not available (endpoint missing)</span>
            : !dnsData ? <span class="muted">…</span>
              : !dnsData.connected ? <span class="err" data-testid="dns-disconnected">✕ PowerDNS not connected: live shares unknown</span>
                : <span class="ok">✓ live: {live ? `${fmt.format(live.qps)} q/s, ${live.total} answers in ${dnsData.window_seconds} s` : "no answers"}</span>}</span>
        </div>
      )}
      {p.layers.anycast && (
        <div class="legend-row" data-testid="legend-anycast">
          <b>Anycast</b>
          <select aria-label="Prefix shown on the anycast layer" value={p.prefix ?? ""} onChange={(e) => p.setPrefix(Number(e.currentTarget.value))}>
            {[...store.t.prefixes.values()].map((x) => <option key={x.id} value={x.id}>{x.prefix}</option>)}
          </select>
          <AnycastSummary prefix={pfx?.prefix} state={p.anycast} data={p.anycastData} />
        </div>
      )}
      {p.layers.local && (
        <div class="legend-row">
          <b>Local</b>
          {["up", "down", "stale", "unknown", "draining", "drained", "maint"].map((k) => <Badge key={k} state={k} />)}
        </div>
      )}
    </div>
  );
}

function AnycastSummary({ prefix, state, data }: { prefix: string | undefined; state: PollState<AnycastResponse>; data: AnycastResponse | undefined }) {
  useTables("pops");
  const pops = [...store.t.pops.values()];
  const desired = pops.filter((p) => { const a = data?.pops[String(p.id)]; return a && prefix ? a.desired.includes(prefix) : p.announce === "announce"; });
  if (state.kind === "missing" && !data) return <span>{desired.length} PoPs announce (desired) · <span class="err">✕ observed routes not available (endpoint missing)</span></span>;
  if (!data) return <span>{desired.length} PoPs announce (desired) · <span class="muted">observed: …</span></span>;
  const observed = pops.filter((p) => prefix && data.pops[String(p.id)]?.observed.includes(prefix));
  const absent = pops.filter((p) => (data.pops[String(p.id)]?.agent ?? "absent") !== "connected");
  return <span>{desired.length} desired · {observed.length} observed{absent.length ? <span class="err"> · ✕ {absent.length} agents not connected</span> : <span class="ok"> · ✓ all agents connected</span>}
    <span class="muted"> · cells: catchment of each announcing PoP; squares: client networks → nearest</span></span>;
}

function Overview(p: {
  region: number | null; onPop: (id: number) => void; canAct: boolean; onAction: (r: ActionRequest) => void; onRegion: (id: number | null) => void;
  dns: DnsAnswers | undefined; dnsOn: boolean; dnsService: number | null;
}) {
  useTables("regions", "pops", "services");
  const regions = [...store.t.regions.values()].filter((r) => p.region === null || r.id === p.region).sort((a, b) => a.slug.localeCompare(b.slug));
  const svc = p.dnsService === null ? undefined : store.t.services.get(p.dnsService);
  return (
    <section class="overview" aria-label="Regions and PoPs">
      {p.region !== null && <button class="link back" onClick={() => p.onRegion(null)}>← all regions</button>}
      {p.dnsOn && svc && <DnsTable service={svc.id} dns={p.dns} />}
      {regions.map((r) => {
        const pops = [...(store.popsByRegion.get(r.id) ?? [])].map((id) => store.t.pops.get(id)!).filter(Boolean).sort((a, b) => a.slug.localeCompare(b.slug));
        const act = (kind: ActionRequest["kind"]) => () => p.onAction({ kind, target: { type: "region", id: r.id, name: r.slug } });
        return (
          <div key={r.id} class="region" data-testid="region" data-region={r.slug}>
            <h3><button class="link region-name" onClick={() => p.onRegion(r.id)} title="Show this region (and its actions)">{r.name}</button> <span class="muted">{r.slug}</span> {r.admin_state !== "ready" && <Badge state={r.admin_state} />}
              {p.canAct && p.region === r.id && (
                <span class="pool-actions">
                  <button class="small" onClick={act("drain")}>Drain region</button>
                  <button class="small" onClick={act("undrain")}>Undrain</button>
                  <button class="small" onClick={act("maintenance")}>Maint</button>
                </span>
              )}
            </h3>
            <table class="pop-list">
              <tbody>
                {pops.map((pop) => <PopRow key={pop.id} pop={pop} onPop={p.onPop} />)}
              </tbody>
            </table>
          </div>
        );
      })}
    </section>
  );
}

/** A PoP's line in the overview: re-rendered when its tallies or its highlight change. */
function PopRow({ pop, onPop }: { pop: PoP; onPop: (id: number) => void }) {
  const { s, flash } = useStore((st) => ({ s: st.summary(pop.id), flash: st.isFlashing(`pop:${pop.id}`) }), shallow);
  return (
    <tr class={flash ? "flash" : undefined}>
      <td><button class="link" onClick={() => onPop(pop.id)}>{pop.slug}</button> <span class="muted">{pop.city}</span></td>
      <td><Badge state={s.health} label={s.health} /></td>
      <td>{pop.admin_state !== "ready" ? <Badge state={pop.admin_state} /> : null} {pop.announce === "withdraw" ? <Badge state="withdraw" /> : null}</td>
      <td class="num" title="backends up / total">{s.counts.up}/{s.total} up</td>
      {s.counts.down > 0 ? <td class="num" style={{ color: colourOf("down") }}>▼ {s.counts.down}</td> : <td />}
    </tr>
  );
}

function DnsTable({ service, dns }: { service: number; dns: DnsAnswers | undefined }) {
  useTables("services", "vips", "regions");
  const svc = store.t.services.get(service)!;
  const vips = [...store.t.vips.values()].filter((v) => v.service_id === service);
  const total = vips.filter((v) => v.enabled).reduce((s, v) => s + v.weight, 0);
  const live = dns?.connected ? dns.services[String(service)] : undefined;
  return (
    <div class="dns-table">
      <h3>DNS answers for {svc.fqdn} <span class="muted">{svc.dns_policy} · TTL {svc.ttl} s</span></h3>
      <table>
        <thead><tr><th scope="col">region</th><th scope="col">VIP</th><th class="num" scope="col">weight</th><th class="num" scope="col">prio</th><th class="num" scope="col">configured</th><th class="num" scope="col">answered (60 s)</th></tr></thead>
        <tbody>
          {vips.map((v) => {
            const r = store.t.regions.get(v.region_id);
            const l = live?.regions[String(v.region_id)];
            return (
              <tr key={v.id}>
                <td>{r?.slug}</td><td class="mono">{v.address}{v.enabled ? "" : " (disabled)"}</td><td class="num">{v.weight}</td><td class="num">{v.priority}</td>
                <td class="num">{v.enabled && total ? `${fmt.format((100 * v.weight) / total)} %` : "—"}</td>
                <td class="num">{l ? `${fmt.format(l.share * 100)} % (${l.answers})` : dns && !dns.connected ? "not connected" : "—"}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

// Plain-DOM rendering of the topology: summary, running operations, one PoP table per region.

import type { Backend, Operation, Pool, PoP, StateStyle, Topology } from "./api";

export interface View {
  /** PoP ids whose pools and backends are shown. */
  expanded: Set<number>;
  /** "type:id" -> performance.now() when it last changed, for the highlight. */
  changed: Map<string, number>;
}

export const FLASH_MS = 1500;
const HEALTH = ["up", "down", "unknown", "stale"] as const;
const ADMIN = ["ready", "draining", "drained", "maint"] as const;
const POP_COLUMNS = 5 + HEALTH.length + ADMIN.length;

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === false) continue;
    el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

const fmt = new Intl.NumberFormat();

/** Symbol + word, coloured from topology.states; unknown keys still show their word. */
function badge(states: Map<string, StateStyle>, key: string): HTMLElement {
  const s = states.get(key);
  const el = h("span", { class: "state", title: s?.meaning }, h("span", { class: "sym", "aria-hidden": "true" }, s?.symbol ?? "•"), " ", s?.label ?? key);
  if (s) el.style.setProperty("--c", s.colour);
  return el;
}

function countCell(states: Map<string, StateStyle>, key: string, n: number): HTMLTableCellElement {
  if (n === 0) return h("td", { class: "num zero" }, "0");
  const s = states.get(key);
  const el = h("td", { class: "num count", title: `${n} ${s?.label ?? key}` }, h("span", { class: "sym", "aria-hidden": "true" }, s?.symbol ?? ""), " ", fmt.format(n));
  if (s) el.style.setProperty("--c", s.colour);
  return el;
}

function tally<T>(items: T[], pick: (item: T) => string): Map<string, number> {
  const out = new Map<string, number>();
  for (const item of items) out.set(pick(item), (out.get(pick(item)) ?? 0) + 1);
  return out;
}

function group<T>(items: T[], key: (item: T) => number): Map<number, T[]> {
  const out = new Map<number, T[]>();
  for (const item of items) {
    const list = out.get(key(item));
    if (list) list.push(item); else out.set(key(item), [item]);
  }
  return out;
}

const bySlug = (a: { slug: string }, b: { slug: string }): number => a.slug.localeCompare(b.slug);

function flash(el: HTMLElement, view: View, key: string, now: number): void {
  const at = view.changed.get(key);
  if (at === undefined || now - at >= FLASH_MS) return;
  el.classList.add("flash");
  el.style.animationDelay = `-${Math.round(now - at)}ms`; // keep the animation's place across re-renders
}

function stateCounts(states: Map<string, StateStyle>, backends: Backend[]): HTMLElement {
  const health = tally(backends, (b) => b.health);
  const admin = tally(backends, (b) => b.admin_state);
  const part = (keys: readonly string[], counts: Map<string, number>) =>
    keys.map((k) => h("span", { class: "pair" }, badge(states, k), " ", h("b", null, fmt.format(counts.get(k) ?? 0))));
  return h("span", { class: "counts" }, h("span", { class: "label" }, "health"), ...part(HEALTH, health), h("span", { class: "label" }, "admin"), ...part(ADMIN, admin));
}

function operationsSection(t: Topology, view: View, now: number): HTMLElement {
  const running = t.operations.filter((o) => o.status === "running").sort((a, b) => a.id - b.id);
  const section = h("section", { class: "ops", "aria-label": "Running operations" }, h("h2", null, "Running operations ", h("span", { class: "muted" }, String(running.length))));
  if (running.length === 0) {
    section.append(h("p", { class: "muted" }, "No operations running."));
    return section;
  }
  const list = h("ul", null);
  for (const op of running) list.append(operationItem(op, view, now));
  section.append(list);
  return section;
}

function operationItem(op: Operation, view: View, now: number): HTMLElement {
  const p = op.progress ?? {};
  const pct = Math.max(0, Math.min(100, p.percent ?? 0));
  const detail = [
    p.percent !== undefined ? `${pct}%` : "progress not reported",
    p.backends_left !== undefined ? `${p.backends_left} backends left` : null,
    p.seconds_left !== undefined && p.seconds_left !== null ? `${p.seconds_left} s to deadline` : null,
  ].filter(Boolean).join(" · ");
  const bar = h("span", { class: "bar-track", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct, "aria-label": `${op.kind} ${op.target_repr}` }, h("span", { class: "bar-fill" }));
  (bar.firstChild as HTMLElement).style.width = `${pct}%`;
  const li = h("li", null,
    h("span", { class: "op-kind" }, op.kind), h("span", { class: "op-target" }, op.target_repr), bar, h("span", { class: "num muted" }, detail),
    h("span", { class: "op-who" }, `by ${op.actor_name || "—"}`), h("span", { class: "op-reason", title: op.reason }, op.reason));
  flash(li, view, `operation:${op.id}`, now);
  return li;
}

function popTable(pops: PoP[], idx: Indexes, states: Map<string, StateStyle>, view: View, now: number): HTMLTableElement {
  const head = h("thead", null,
    h("tr", { class: "group" }, h("th", { colspan: 4 }), h("th", { colspan: HEALTH.length, scope: "colgroup" }, "backends by health"), h("th", { colspan: ADMIN.length, scope: "colgroup" }, "backends by admin state"), h("th", null)),
    h("tr", null, h("th", { scope: "col" }, "PoP"), h("th", { scope: "col" }, "city"), h("th", { scope: "col" }, "admin"), h("th", { scope: "col" }, "anycast"),
      ...[...HEALTH, ...ADMIN].map((k) => h("th", { scope: "col", class: "num" }, badge(states, k))),
      h("th", { scope: "col", class: "num", title: "sum of the backends' capacity_rps" }, "capacity rps")));
  const body = h("tbody", null);
  for (const pop of pops) {
    const pools = (idx.poolsByPop.get(pop.id) ?? []).sort(bySlug);
    const backends = pools.flatMap((p) => idx.backendsByPool.get(p.id) ?? []);
    const health = tally(backends, (b) => b.health);
    const admin = tally(backends, (b) => b.admin_state);
    const open = view.expanded.has(pop.id);
    const row = h("tr", { class: "pop", tabindex: 0, "data-pop": pop.id, "data-key": `pop:${pop.id}`, "aria-expanded": String(open), title: pop.name },
      h("td", null, h("span", { class: "caret", "aria-hidden": "true" }, open ? "▾" : "▸"), " ", h("strong", null, pop.slug)),
      h("td", null, pop.city), h("td", null, badge(states, pop.admin_state)), h("td", null, badge(states, pop.announce)),
      ...HEALTH.map((k) => countCell(states, k, health.get(k) ?? 0)),
      ...ADMIN.map((k) => countCell(states, k, admin.get(k) ?? 0)),
      h("td", { class: "num" }, fmt.format(backends.reduce((sum, b) => sum + b.capacity_rps, 0))));
    flash(row, view, `pop:${pop.id}`, now);
    body.append(row);
    if (open) body.append(h("tr", { class: "detail" }, h("td", { colspan: POP_COLUMNS }, ...poolBlocks(pools, idx, states, view, now))));
  }
  return h("table", { class: "pops" }, head, body);
}

function poolBlocks(pools: Pool[], idx: Indexes, states: Map<string, StateStyle>, view: View, now: number): HTMLElement[] {
  if (pools.length === 0) return [h("p", { class: "muted" }, "No pools in this PoP.")];
  return pools.map((pool) => {
    const backends = (idx.backendsByPool.get(pool.id) ?? []).sort((a, b) => a.name.localeCompare(b.name));
    const total = backends.reduce((sum, b) => sum + b.effective_weight, 0);
    const service = idx.services.get(pool.service_id);
    const title = h("div", { class: "pool-head" }, h("strong", null, pool.slug), h("span", { class: "muted" }, `${service ? `${service.slug} (${service.fqdn})` : `service #${pool.service_id}`} · ${pool.mode} · ${pool.algorithm} · Σ effective weight ${total}`),
      pool.in_panic && badge(states, "panic"));
    const rows = backends.map((b) => {
      const row = h("tr", { "data-key": `backend:${b.id}` },
        h("td", null, b.name, b.backup && h("span", { class: "tag" }, "backup")), h("td", { class: "mono" }, `${b.address}:${b.port}`),
        h("td", null, badge(states, b.health)), h("td", null, badge(states, b.admin_state)),
        h("td", { class: "num" }, b.weight), h("td", { class: "num", title: b.effective_weight_reason }, b.effective_weight),
        h("td", { class: "num" }, total > 0 ? `${((100 * b.effective_weight) / total).toFixed(1)} %` : "—"),
        h("td", { class: "num" }, fmt.format(b.capacity_rps)), h("td", { class: "muted reason" }, b.effective_weight_reason));
      flash(row, view, `backend:${b.id}`, now);
      return row;
    });
    const table = h("table", { class: "backends" },
      h("thead", null, h("tr", null, ...["backend", "address", "health", "admin", "weight", "eff. weight", "share", "capacity rps", "why this weight"].map((c, i) => h("th", { scope: "col", class: i >= 4 && i <= 7 ? "num" : undefined }, c)))),
      h("tbody", null, ...rows));
    const block = h("div", { class: "pool", "data-key": `pool:${pool.id}` }, title, backends.length ? table : h("p", { class: "muted" }, "No backends in this pool."));
    flash(block, view, `pool:${pool.id}`, now);
    return block;
  });
}

interface Indexes {
  poolsByPop: Map<number, Pool[]>;
  backendsByPool: Map<number, Backend[]>;
  services: Map<number, Topology["services"][number]>;
}

export function renderDashboard(root: HTMLElement, t: Topology, view: View): void {
  const now = performance.now();
  const states = new Map(t.states.map((s) => [s.key, s]));
  const idx: Indexes = {
    poolsByPop: group(t.pools, (p) => p.pop_id),
    backendsByPool: group(t.backends, (b) => b.pool_id),
    services: new Map(t.services.map((s) => [s.id, s])),
  };
  const popsByRegion = group(t.pops, (p) => p.region_id);
  const summary = h("p", { class: "summary" },
    h("span", null, `${t.regions.length} regions · ${t.pops.length} PoPs · ${t.pools.length} pools · ${t.backends.length} backends`),
    stateCounts(states, t.backends));
  const regions = [...t.regions].sort(bySlug).map((r) => {
    const pops = (popsByRegion.get(r.id) ?? []).sort(bySlug);
    return h("section", { class: "region", "aria-label": `Region ${r.name}` },
      h("h2", null, r.name, " ", h("span", { class: "muted" }, r.slug), " ", badge(states, r.admin_state)),
      pops.length ? popTable(pops, idx, states, view, now) : h("p", { class: "muted" }, "No PoPs in this region."));
  });
  root.replaceChildren(summary, operationsSection(t, view, now),
    ...(regions.length ? regions : [h("p", { class: "muted" }, "No regions defined yet.")]));
}

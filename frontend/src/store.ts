// The one state of the page: the picture (every object indexed by id in Maps, plus per-PoP tallies
// recomputed only for the PoPs a delta touched) and the shell around it (who is signed in, the live
// feed's state, the banner, pushed observations). Listeners are called at most once per animation
// frame, however many changes arrive; each component reads the slice it shows with
// `useStore(selector)` and re-renders only when that slice changed.

import { useSyncExternalStore } from "preact/compat";
import { useRef } from "preact/hooks";
import {
  DELTA_KEYS, type AdminState, type Backend, type ClientNetwork, type Delta, type DeltaType, type Me, type Monitor,
  type Observed, type Operation, type PastTopology, type Pool, type PoP, type Prefix, type Region, type Service,
  type StateStyle, type Topology, type VIP,
} from "./api";
import type { ConnState } from "./live";

export const FLASH_MS = 1500;

/** Worst meaningful state of a PoP, for its marker. */
export type PopHealth = "up" | "degraded" | "down" | "stale" | "unknown";

/** One slice of a PoP's donut: admin state when not ready, else health. */
export const SLICES = ["up", "down", "stale", "unknown", "draining", "drained", "maint"] as const;
export type Slice = (typeof SLICES)[number];

/** A new object whenever the PoP or anything under it changed (so selectors compare it by identity). */
export interface PopSummary {
  health: PopHealth;
  counts: Record<Slice, number>;
  total: number;
  panic: boolean;
  capacity: number;
}

type Lists = {
  regions: Region; pops: PoP; services: Service; vips: VIP; prefixes: Prefix; client_networks: ClientNetwork;
  monitors: Monitor; pools: Pool; backends: Backend; operations: Operation;
};
type Tables = { [K in keyof Lists]: Map<number, Lists[K]> };
export type TableKey = keyof Tables;

/** What surrounds the picture: replaced (never mutated) on each change, so selectors see it. */
export interface Shell {
  me: Me | null;
  conn: ConnState;
  banner: { kind: string; text: string; link?: { href: string; text: string } } | null;
  /** The latest anycast observation each PoP's agent pushed over the live feed, by PoP id. */
  observed: ReadonlyMap<number, Observed>;
}

export function sliceOf(b: Backend): Slice {
  return b.admin_state === "ready" ? b.health : b.admin_state;
}

function emptyCounts(): Record<Slice, number> {
  return { up: 0, down: 0, stale: 0, unknown: 0, draining: 0, drained: 0, maint: 0 };
}

function addTo<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  const s = m.get(k);
  if (s) s.add(v); else m.set(k, new Set([v]));
}

export class Store {
  /** The state version of the live picture held (null: none yet, or a picture of the past). */
  version: number | null = null;
  /** A picture, live or past, has been loaded. */
  loaded = false;
  /** The instant a picture of the past shows (ms), null for the live one: see `now()`. */
  pictureAt: number | null = null;
  t: Tables = this.emptyTables();
  states = new Map<string, StateStyle>();
  poolsByPop = new Map<number, Set<number>>();
  backendsByPool = new Map<number, Set<number>>();
  popsByRegion = new Map<number, Set<number>>();
  summaries = new Map<number, PopSummary>();
  /** "type:id" -> performance.now() of its last change, for the brief highlight. */
  changed = new Map<string, number>();
  /** Per table, bumped whenever one of its objects is added, replaced or deleted (or on a load). */
  rev: Record<TableKey, number> = this.emptyRevs();
  shell: Shell = { me: null, conn: "connecting", banner: null, observed: new Map() };

  private dirtyPops = new Set<number>();
  private listeners = new Set<() => void>();
  private frame = 0;

  private emptyRevs(): Record<TableKey, number> {
    return {
      regions: 0, pops: 0, services: 0, vips: 0, prefixes: 0, client_networks: 0, monitors: 0, pools: 0, backends: 0, operations: 0,
    };
  }

  private emptyTables(): Tables {
    return {
      regions: new Map(), pops: new Map(), services: new Map(), vips: new Map(), prefixes: new Map(),
      client_networks: new Map(), monitors: new Map(), pools: new Map(), backends: new Map(), operations: new Map(),
    };
  }

  /** Replace the whole picture: the live one (with its version), or one of the past (a replay:
   * no version, so nothing continues it). `flash` marks what differs from the picture before, as
   * deltas do, so a replay's step is seen on the map. */
  load(topo: Topology | PastTopology, { flash = false }: { flash?: boolean } = {}): void {
    const old = this.t;
    const t = this.emptyTables();
    for (const key of Object.values(DELTA_KEYS)) {
      const table = t[key] as Map<number, { id: number }>;
      for (const obj of topo[key] as { id: number }[]) table.set(obj.id, obj);
    }
    this.t = t;
    for (const key of Object.values(DELTA_KEYS)) this.rev[key] += 1;
    this.states = new Map(topo.states.map((s) => [s.key, s]));
    this.version = topo.version ?? null;
    this.loaded = true;
    this.pictureAt = topo.at ? Date.parse(topo.at) : null;
    this.poolsByPop.clear();
    this.backendsByPool.clear();
    this.popsByRegion.clear();
    for (const p of t.pops.values()) addTo(this.popsByRegion, p.region_id, p.id);
    for (const p of t.pools.values()) addTo(this.poolsByPop, p.pop_id, p.id);
    for (const b of t.backends.values()) addTo(this.backendsByPool, b.pool_id, b.id);
    this.summaries.clear();
    for (const id of t.pops.keys()) this.dirtyPops.add(id);
    if (flash) this.flashDifferences(old);
    this.notify();
  }

  /** Highlight every object that is new, gone or different from `old`, and its PoP. */
  private flashDifferences(old: Tables): void {
    const now = performance.now();
    for (const [type, key] of Object.entries(DELTA_KEYS)) {
      const before = old[key] as Map<number, { id: number }>;
      const after = this.t[key] as Map<number, { id: number }>;
      for (const [id, obj] of after) {
        const prev = before.get(id);
        if (prev && sameRow(prev, obj)) continue;
        this.changed.set(`${type}:${id}`, now);
        this.markPop(type, obj);
      }
      for (const [id, prev] of before) if (!after.has(id)) this.markPop(type, prev);
    }
    window.setTimeout(() => this.expire(), FLASH_MS + 50);
  }

  /** Apply a delta the live feed has already checked for continuity. */
  apply(delta: Delta): void {
    performance.clearMarks("steering:delta");
    performance.mark("steering:delta", { detail: { version: delta.version } });
    const now = performance.now();
    for (const change of delta.changes) {
      const key = DELTA_KEYS[change.type as DeltaType];
      if (!key) continue; // a type this page does not know yet
      const table = this.t[key] as Map<number, { id: number }>;
      this.rev[key] += 1;
      const old = table.get(change.id);
      this.unindex(change.type, old);
      if (change.op === "delete") table.delete(change.id);
      else {
        table.set(change.id, change.data as { id: number });
        this.index(change.type, change.data as { id: number });
      }
      this.changed.set(`${change.type}:${change.id}`, now);
      this.markPop(change.type, old);
      if (change.op === "upsert") this.markPop(change.type, change.data as { id: number });
    }
    this.version = delta.version;
    this.notify();
    window.setTimeout(() => this.expire(), FLASH_MS + 50);
  }

  private index(type: string, obj: { id: number }): void {
    if (type === "pool") addTo(this.poolsByPop, (obj as Pool).pop_id, obj.id);
    else if (type === "backend") addTo(this.backendsByPool, (obj as Backend).pool_id, obj.id);
    else if (type === "pop") addTo(this.popsByRegion, (obj as PoP).region_id, obj.id);
  }

  private unindex(type: string, obj: { id: number } | undefined): void {
    if (!obj) return;
    if (type === "pool") this.poolsByPop.get((obj as Pool).pop_id)?.delete(obj.id);
    else if (type === "backend") this.backendsByPool.get((obj as Backend).pool_id)?.delete(obj.id);
    else if (type === "pop") this.popsByRegion.get((obj as PoP).region_id)?.delete(obj.id);
  }

  /** The PoP an object belongs to gets its tallies recomputed and its row highlighted. */
  private markPop(type: string, obj: { id: number } | undefined): void {
    if (!obj) return;
    let popId: number | undefined;
    if (type === "pop") popId = obj.id;
    else if (type === "pool") popId = (obj as Pool).pop_id;
    else if (type === "backend") popId = this.t.pools.get((obj as Backend).pool_id)?.pop_id;
    if (popId === undefined) return;
    this.dirtyPops.add(popId);
    if (type !== "pop") this.changed.set(`pop:${popId}`, performance.now());
  }

  private expire(): void {
    const now = performance.now();
    let any = false;
    for (const [key, at] of this.changed) if (now - at >= FLASH_MS) { this.changed.delete(key); any = true; }
    if (any) this.notify();
  }

  isFlashing(key: string): boolean {
    const at = this.changed.get(key);
    return at !== undefined && performance.now() - at < FLASH_MS;
  }

  summary(popId: number): PopSummary {
    let s = this.summaries.get(popId);
    if (!s || this.dirtyPops.has(popId)) {
      s = this.computeSummary(popId);
      this.summaries.set(popId, s);
      this.dirtyPops.delete(popId);
    }
    return s;
  }

  private computeSummary(popId: number): PopSummary {
    const counts = emptyCounts();
    let total = 0;
    let panic = false;
    let capacity = 0;
    const health = { up: 0, down: 0, stale: 0, unknown: 0 };
    let serving = 0;
    for (const b of this.backendsOfPop(popId)) {
      counts[sliceOf(b)] += 1;
      total += 1;
      capacity += b.capacity_rps;
      if (b.admin_state === "ready" || b.admin_state === "draining") {
        serving += 1;
        health[b.health] += 1;
      }
    }
    for (const pid of this.poolsByPop.get(popId) ?? []) if (this.t.pools.get(pid)?.in_panic) panic = true;
    let h: PopHealth;
    if (serving === 0) h = "unknown";
    else if (health.down === serving) h = "down";
    else if (health.down > 0 || panic) h = "degraded";
    else if (health.stale > 0) h = "stale";
    else if (health.up > 0) h = "up";
    else h = "unknown";
    return { health: h, counts, total, panic, capacity };
  }

  *backendsOfPop(popId: number): Generator<Backend> {
    for (const pid of this.poolsByPop.get(popId) ?? []) {
      for (const bid of this.backendsByPool.get(pid) ?? []) {
        const b = this.t.backends.get(bid);
        if (b) yield b;
      }
    }
  }

  poolsOf(popId: number): Pool[] {
    return [...(this.poolsByPop.get(popId) ?? [])].map((id) => this.t.pools.get(id)).filter((p): p is Pool => !!p)
      .sort((a, b) => a.slug.localeCompare(b.slug));
  }

  backendsOf(poolId: number): Backend[] {
    return [...(this.backendsByPool.get(poolId) ?? [])].map((id) => this.t.backends.get(id)).filter((b): b is Backend => !!b);
  }

  popOfBackend(b: Backend): PoP | undefined {
    const pool = this.t.pools.get(b.pool_id);
    return pool ? this.t.pops.get(pool.pop_id) : undefined;
  }

  /** "Now" for what the picture shows (time left of an ejection or a deadline): the replayed
   * instant for a picture of the past, else the clock. */
  now(): number { return this.pictureAt ?? Date.now(); }

  adminOf(popId: number): AdminState { return this.t.pops.get(popId)?.admin_state ?? "ready"; }

  /** Change the shell (who is signed in, the feed's state, the banner, observations). */
  setShell(patch: Partial<Shell>): void {
    this.shell = { ...this.shell, ...patch };
    this.notify();
  }

  /** An anycast agent's observed routes, pushed over the live feed. */
  observe(m: Observed): void {
    if (m.layer !== "anycast" || typeof m.pop !== "number") return;
    this.setShell({ observed: new Map(this.shell.observed).set(m.pop, m) });
  }

  /** `fn` is called after changes, at most once per animation frame. A bound field, so it is stable. */
  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => { this.listeners.delete(fn); };
  };

  /** Coalesce: many deltas within a frame cause one round of listeners, so one render. */
  notify(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      for (const fn of this.listeners) fn();
    });
  }
}

export const store = new Store();

/** Two rows of the picture hold the same values (nested ones, e.g. an operation's progress, by content). */
function sameRow(a: object, b: object): boolean {
  const ra = a as Record<string, unknown>, rb = b as Record<string, unknown>;
  const keys = Object.keys(ra);
  if (keys.length !== Object.keys(rb).length) return false;
  return keys.every((k) => Object.is(ra[k], rb[k]) ||
    (typeof ra[k] === "object" && JSON.stringify(ra[k]) === JSON.stringify(rb[k])));
}

/** Values equal when they are the same, or arrays / plain objects whose items are the same. */
export function shallow<T>(a: T, b: T): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => Object.is(x, b[i]));
  }
  const ka = Object.keys(a), kb = Object.keys(b);
  return ka.length === kb.length &&
    ka.every((k) => Object.is((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** The slice of the store `select` picks; the component re-renders when it changes (`equal`:
 * `Object.is` by default, `shallow` for a selector that builds an array or object each call).
 * Preact's useSyncExternalStore (preact/compat), with the last value kept while equal, as React's
 * useSyncExternalStoreWithSelector does. */
export function useStore<T>(select: (s: Store) => T, equal: (a: T, b: T) => boolean = Object.is): T {
  const last = useRef<{ value: T } | null>(null);
  const snapshot = (): T => {
    const next = select(store);
    if (last.current && equal(last.current.value, next)) return last.current.value;
    last.current = { value: next };
    return next;
  };
  return useSyncExternalStore(store.subscribe, snapshot);
}

/** Re-render when any object of these tables changes; read them from `store.t`. */
export function useTables(...keys: TableKey[]): void {
  useStore((s) => keys.map((k) => s.rev[k]), shallow);
}

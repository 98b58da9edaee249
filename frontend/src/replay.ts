// Replay, for postmortems: a window of the past played on the map at 1x-60x, the timeline's
// events in step. The pictures come from GET /api/v1/topology/?at= (the fleet as it was, rebuilt
// by the server from the audit log); the events from GET /api/v1/changes/?since=&until=. Between
// two events nothing changed, so a picture is fetched only when the clock passes an event (or is
// moved), at that event's own time: one request in flight at a time, the newest wanted wins.
// While a replay is on, the live feed's deltas are not applied (main.tsx); "Back to live"
// refetches the live picture.

import { useSyncExternalStore } from "preact/compat";
import { useRef } from "preact/hooks";
import { ApiError, getJSON, getTopologyAt, type ChangeEntry, type ChangePage, type PastTopology } from "./api";
import { store } from "./store";

export const SPEEDS = [1, 2, 5, 10, 30, 60] as const;
const TICK_MS = 100;
const PAGE = 1000;
const MAX_EVENTS = 5000;
const CACHE = 40;

export interface ReplayState {
  active: boolean;
  /** The window, in ms since the epoch. */
  start: number;
  end: number;
  /** The replay clock (ms since the epoch). */
  clock: number;
  playing: boolean;
  speed: number;
  /** The window's changes, oldest first. */
  events: ChangeEntry[];
  /** How many events the clock has passed (their time is at or before it). */
  passed: number;
  /** The picture on the map: the instant asked for, and what the server says it is. */
  picture: { at: string; asOf: PastTopology["as_of"]; undone: number } | null;
  historyStarts: number | null;
  loading: boolean;
  note: string | null;
  error: string | null;
}

const IDLE: ReplayState = {
  active: false, start: 0, end: 0, clock: 0, playing: false, speed: 10, events: [], passed: 0, picture: null,
  historyStarts: null, loading: false, note: null, error: null,
};

/** The number of events at or before `t` (events sorted by time). */
function countPassed(events: ChangeEntry[], t: number): number {
  let lo = 0, hi = events.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (Date.parse(events[mid]!.time) <= t) lo = mid + 1; else hi = mid;
  }
  return lo;
}

export class Replay {
  state: ReplayState = IDLE;
  /** Called when the replay ends: the page goes back to the live picture. */
  onExit: () => void = () => {};
  /** Server time minus this browser's (ms), so "now" is the server's: the past ends there. */
  private skew = 0;
  private listeners = new Set<() => void>();
  private timer = 0;
  private lastTick = 0;
  private generation = 0;
  private wanted: string | null = null;
  private inFlight = false;
  private cache = new Map<string, PastTopology>();

  /** A live picture's `generated_at`: the server's clock, to keep the window in the past. */
  noteServerTime(generatedAt: string): void {
    const t = Date.parse(generatedAt);
    if (!Number.isNaN(t)) this.skew = t - Date.now();
  }

  serverNow(): number { return Date.now() + this.skew; }

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => { this.listeners.delete(fn); };
  };

  private set(patch: Partial<ReplayState>): void {
    this.state = { ...this.state, ...patch };
    for (const fn of this.listeners) fn();
  }

  /** Start a replay of [start, end] (default: the last hour), paused at its start. */
  open(start?: number, end?: number): void {
    const to = Math.min(end ?? this.serverNow(), this.serverNow());
    const from = Math.min(start ?? to - 3600_000, to - 1000);
    this.generation += 1;
    this.cache.clear();
    this.set({ ...IDLE, active: true, speed: this.state.speed, start: from, end: to, clock: from, loading: true });
    void this.loadWindow(this.generation);
  }

  /** A new window: the events are fetched again and the clock goes to its start. */
  setWindow(start: number, end: number): void {
    if (!this.state.active || !(start < end)) return;
    this.open(start, end);
  }

  close(): void {
    window.clearInterval(this.timer);
    this.timer = 0;
    this.generation += 1;
    this.wanted = null;
    this.cache.clear();
    this.set({ ...IDLE, speed: this.state.speed });
    this.onExit();
  }

  play(): void {
    const s = this.state;
    if (!s.active || s.playing) return;
    if (s.clock >= s.end) this.seek(s.start); // played to the end: from the start again
    this.lastTick = performance.now();
    this.timer = window.setInterval(() => this.tick(), TICK_MS);
    this.set({ playing: true });
  }

  pause(): void {
    window.clearInterval(this.timer);
    this.timer = 0;
    if (this.state.playing) this.set({ playing: false });
  }

  setSpeed(speed: number): void { this.set({ speed }); }

  /** Move the clock (the scrubber, or an event picked in the timeline). */
  seek(t: number): void {
    const s = this.state;
    if (!s.active) return;
    const clock = Math.max(s.start, Math.min(s.end, t));
    const passed = countPassed(s.events, clock);
    this.set({ clock, passed });
    this.want(passed);
  }

  private tick(): void {
    const now = performance.now();
    const s = this.state;
    const clock = Math.min(s.end, s.clock + (now - this.lastTick) * s.speed);
    this.lastTick = now;
    const passed = countPassed(s.events, clock);
    this.set({ clock });
    if (passed !== s.passed) { this.set({ passed }); this.want(passed); }
    if (clock >= s.end) this.pause();
  }

  /** The instant whose picture shows the map after `passed` events: the last one's own time (to the
   * microsecond, as the server has it), or the window's start. */
  private want(passed: number): void {
    const s = this.state;
    const at = passed > 0 ? s.events[passed - 1]!.time : new Date(s.start).toISOString();
    this.wanted = at;
    void this.fetchPicture(this.generation);
  }

  private async fetchPicture(generation: number): Promise<void> {
    if (this.inFlight) return; // the request in flight fetches the newest wanted when it is done
    this.inFlight = true;
    try {
      while (this.wanted !== null && generation === this.generation) {
        const at = this.wanted;
        if (this.state.picture?.at === at) break;
        let topo = this.cache.get(at);
        if (!topo) {
          this.set({ loading: true });
          topo = await getTopologyAt(at);
          if (this.cache.size >= CACHE) this.cache.delete(this.cache.keys().next().value!);
          this.cache.set(at, topo);
        }
        if (generation !== this.generation) return;
        store.load(topo, { flash: this.state.picture !== null });
        this.set({
          picture: { at, asOf: topo.as_of, undone: topo.undone }, historyStarts: Date.parse(topo.history_starts),
          loading: false, error: null,
        });
      }
    } catch (err) {
      if (generation === this.generation) this.failed(err);
    } finally {
      this.inFlight = false;
      if (generation === this.generation) this.set({ loading: false });
    }
  }

  private failed(err: unknown): void {
    const body = err instanceof ApiError ? err.body : {};
    const starts = typeof body["history_starts"] === "string" ? Date.parse(body["history_starts"]) : NaN;
    const s = this.state;
    if (!Number.isNaN(starts) && s.start < starts && starts < s.end) {
      // The window starts before history does: begin where it begins, and say so.
      const note = `History begins at ${new Date(starts).toLocaleString()}: the window starts there.`;
      this.open(starts + 1, s.end); // + 1 ms: the server's microseconds round down in a Date
      this.set({ note });
      return;
    }
    const errors = (body["errors"] ?? {}) as Record<string, string[]>;
    this.pause();
    this.set({ loading: false, error: errors["at"]?.join(" ") ?? (err instanceof Error ? err.message : String(err)) });
  }

  private async loadWindow(generation: number): Promise<void> {
    const s = this.state;
    const q = new URLSearchParams({
      since: new Date(s.start).toISOString(), until: new Date(s.end).toISOString(), ordering: "time",
      page_size: String(PAGE),
    });
    const events: ChangeEntry[] = [];
    let url: string | null = `/api/v1/changes/?${q.toString()}`;
    let more = false;
    try {
      while (url) {
        const page: ChangePage = await getJSON<ChangePage>(url);
        if (generation !== this.generation) return;
        events.push(...page.results);
        url = page.next ?? null;
        if (events.length >= MAX_EVENTS && url) { more = true; break; }
      }
    } catch (err) {
      if (generation === this.generation) this.failed(err);
      return;
    }
    // Too many to step through: the window ends at the last one fetched, and says so.
    const end = more ? Date.parse(events[events.length - 1]!.time) : s.end;
    const note = more ? `The window holds more than ${MAX_EVENTS} changes: it ends at the last of those. Pick a shorter one to see further.` : null;
    this.set({ events, end, passed: 0, ...(note ? { note } : {}) });
    this.want(0);
  }
}

export const replay = new Replay();

/** The slice of the replay's state `select` picks (re-rendered when it changes, `Object.is`). */
export function useReplay<T>(select: (s: ReplayState) => T): T {
  const last = useRef<{ value: T } | null>(null);
  const snapshot = (): T => {
    const next = select(replay.state);
    if (last.current && Object.is(last.current.value, next)) return last.current.value;
    last.current = { value: next };
    return next;
  };
  return useSyncExternalStore(replay.subscribe, snapshot);
}

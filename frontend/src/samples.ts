// Probe samples for sparklines, fetched for the rows on screen only, a few requests a second at most:
// a PoP with 60 backends never means 60 requests at once.

import { getJSON, type Samples } from "./api";

const TICK_MS = 300;          // one request per tick at most
const FRESH_MS = 6000;        // a visible row's samples are refreshed this often
const SELECTED_FRESH_MS = 2000;

type Listener = () => void;

class SampleCache {
  private data = new Map<number, { at: number; samples: Samples }>();
  private watched = new Map<number, number>(); // backend id -> watchers
  private selected: number | null = null;
  private listeners = new Map<number, Set<Listener>>();
  private timer = 0;
  private inflight = false;

  get(id: number): Samples | undefined { return this.data.get(id)?.samples; }

  watch(id: number, fn: Listener): () => void {
    this.watched.set(id, (this.watched.get(id) ?? 0) + 1);
    let set = this.listeners.get(id);
    if (!set) { set = new Set(); this.listeners.set(id, set); }
    set.add(fn);
    this.start();
    return () => {
      const n = (this.watched.get(id) ?? 1) - 1;
      if (n <= 0) this.watched.delete(id); else this.watched.set(id, n);
      set.delete(fn);
    };
  }

  select(id: number | null): void {
    this.selected = id;
    this.start();
  }

  private start(): void {
    if (!this.timer) this.timer = window.setInterval(() => void this.step(), TICK_MS);
  }

  /** Fetch the stalest due backend: the selected one first. */
  private async step(): Promise<void> {
    if (this.inflight) return;
    if (this.watched.size === 0 && this.selected === null) { window.clearInterval(this.timer); this.timer = 0; return; }
    const now = performance.now();
    let due: number | null = null;
    let oldest = Infinity;
    if (this.selected !== null && now - (this.data.get(this.selected)?.at ?? 0) >= SELECTED_FRESH_MS) due = this.selected;
    else {
      for (const id of this.watched.keys()) {
        const at = this.data.get(id)?.at ?? 0;
        if (now - at >= FRESH_MS && at < oldest) { oldest = at; due = id; }
      }
    }
    if (due === null) return;
    this.inflight = true;
    try {
      const samples = await getJSON<Samples>(`/api/v1/backends/${due}/samples/`);
      this.data.set(due, { at: performance.now(), samples });
      for (const fn of this.listeners.get(due) ?? []) fn();
    } catch {
      this.data.set(due, { at: performance.now(), samples: this.data.get(due)?.samples ?? emptySamples(due) });
    } finally {
      this.inflight = false;
    }
  }
}

function emptySamples(id: number): Samples {
  return { backend: id, probed: false, health: "unknown", counters: { health: "unknown", ok_streak: 0, fail_streak: 0, rise: null, fall: null, interval_seconds: null, last_result_time: null }, samples: [], events: [] };
}

export const samples = new SampleCache();

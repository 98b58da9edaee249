// The live feed: one WebSocket, version bookkeeping, reconnect with backoff.
// Delivery is at-most-once: a gap is first filled from the server's recent deltas (a small
// catch-up); only when that cannot be done, or on any other doubt, is the topology refetched.

import { ApiError, AuthError, getJSON, type Delta, type Hello, type Observed } from "./api";

export type ConnState = "connecting" | "live" | "offline";

export interface LiveHooks {
  /** Version of the picture held now, or null before the first load. */
  version(): number | null;
  /** Refetch the whole topology; resolves once it is in place. */
  load(): Promise<void>;
  /** Apply a delta that continues the picture (its first version is at most version() + 1). */
  apply(delta: Delta): void;
  /** A measurement pushed by the server (e.g. an anycast agent's observed routes). */
  observed(msg: Observed): void;
  status(state: ConnState): void;
  /** The socket closed before saying hello: maybe the session is gone. */
  rejected(): void;
}

const MIN_DELAY = 1000;
const MAX_DELAY = 10000;
const RETRY_LOAD = 5000;

export interface Live { resync(): Promise<void> }

/** What the feed published after `after`, merged into one delta; null when the server no longer
 * keeps all of it (410): then only a refetch of the topology will do. */
async function deltasAfter(after: number): Promise<Delta | null> {
  try {
    return await getJSON<Delta>(`/api/v1/live/deltas/?after=${after}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 410) return null;
    throw err;
  }
}

export function startLive(hooks: LiveHooks): Live {
  let attempt = 0;
  let helloVersion: number | null = null;
  let pending: Delta[] | null = null; // deltas that arrive while a refetch is in flight
  let retry = 0; // one retry timer at most after a failed refetch

  async function resync(): Promise<void> {
    if (pending || retry) return;
    pending = [];
    let loaded = false;
    try {
      await hooks.load();
      loaded = true;
    } catch (err) {
      // load() shows the error; try again later unless the session is the problem.
      if (!(err instanceof AuthError)) retry = window.setTimeout(() => { retry = 0; void resync(); }, RETRY_LOAD);
    } finally {
      const held = pending ?? [];
      pending = null;
      held.sort((a, b) => a.version - b.version).forEach(onDelta);
    }
    // The snapshot may predate the hello (fetch started before we joined the feed): fetch again.
    const current = hooks.version();
    if (loaded && helloVersion !== null && current !== null && current < helloVersion) void resync();
  }

  /** A gap before `delta`: fetch what was missed (a few objects), not the whole topology. */
  async function catchUp(delta: Delta, current: number): Promise<void> {
    if (pending || retry) return;
    pending = [delta];
    let caught = false;
    try {
      const missed = await deltasAfter(current);
      if (missed && (missed.from_version ?? missed.version) <= current + 1 && hooks.version() === current) {
        if (missed.version > current) hooks.apply(missed);
        caught = true;
      }
    } catch {
      // the refetch below says what is wrong, if anything still is
    }
    const held = pending;
    pending = null;
    if (!caught) await resync();
    held.sort((a, b) => a.version - b.version).forEach(onDelta);
  }

  function onDelta(delta: Delta): void {
    if (pending) { pending.push(delta); return; }
    const current = hooks.version();
    if (current === null) { void resync(); return; }
    if (delta.version <= current) return; // already in the picture
    // A coalesced delta covers from_version..version; deltas carry whole objects, so an overlap is harmless.
    const first = delta.from_version ?? delta.version;
    if (first > current + 1) { void catchUp(delta, current); return; } // a gap: something was missed
    hooks.apply(delta);
  }

  function connect(): void {
    hooks.status("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let ws: WebSocket;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/ws/live/`);
    } catch {
      hooks.status("offline");
      window.setTimeout(connect, MAX_DELAY);
      return;
    }
    let greeted = false;

    ws.onmessage = (ev: MessageEvent<string>) => {
      let msg: Hello | Delta | Observed;
      try { msg = JSON.parse(ev.data) as Hello | Delta | Observed; } catch { return; }
      if (msg.type === "hello") {
        greeted = true;
        attempt = 0;
        helloVersion = msg.version;
        hooks.status("live");
        // A (re)connect may have missed deltas: resync unless the picture is exactly current.
        if (msg.version !== hooks.version()) void resync();
      } else if (msg.type === "delta") {
        onDelta(msg);
      } else if (msg.type === "observed") {
        hooks.observed(msg);
      }
    };
    ws.onclose = (ev: CloseEvent) => {
      hooks.status("offline");
      // 4401: signed out or deactivated; 4403: no role any more. Reconnecting cannot help: ask who
      // we are (its 401/403 shows "sign in") and stop. 4429 (too many sockets) retries with backoff.
      if (ev.code === 4401 || ev.code === 4403) { hooks.rejected(); return; }
      if (!greeted) hooks.rejected();
      const delay = Math.min(MAX_DELAY, MIN_DELAY * 2 ** attempt);
      attempt += 1;
      window.setTimeout(connect, delay);
    };
  }

  connect();
  return { resync };
}

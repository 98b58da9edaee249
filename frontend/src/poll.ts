// Polling of the measurement endpoints (Redis-backed figures the data planes report).
// A 404 means "not built / not deployed here": shown plainly, never as an error loop.

import { useEffect, useState } from "preact/hooks";
import { ApiError, AuthError, getJSON } from "./api";

export type PollState<T> =
  | { kind: "loading" }
  | { kind: "ok"; data: T; at: number }
  | { kind: "missing" } // the endpoint does not exist on this server (yet)
  | { kind: "error"; message: string; data?: T };

/** GET `url` now and every `everyMs` while mounted; `url` null pauses. Keeps the last good data on errors. */
export function usePoll<T>(url: string | null, everyMs: number): PollState<T> {
  const [state, setState] = useState<PollState<T>>({ kind: "loading" });
  useEffect(() => {
    if (!url) return;
    setState({ kind: "loading" });
    let stopped = false;
    let timer = 0;
    let last: T | undefined;
    const ctl = new AbortController();
    const tick = async (): Promise<void> => {
      try {
        const data = await getJSON<T>(url, ctl.signal);
        last = data;
        if (!stopped) setState({ kind: "ok", data, at: Date.now() });
      } catch (err) {
        if (stopped) return;
        if (err instanceof ApiError && err.status === 404) setState({ kind: "missing" });
        else {
          const message = err instanceof AuthError ? "not signed in" : err instanceof Error ? err.message : String(err);
          setState(last === undefined ? { kind: "error", message } : { kind: "error", message, data: last });
        }
      }
      if (!stopped) timer = window.setTimeout(() => void tick(), everyMs);
    };
    void tick();
    return () => { stopped = true; ctl.abort(); window.clearTimeout(timer); };
  }, [url, everyMs]);
  return state;
}

/** The data of a poll, whether fresh or the last good one before an error. */
export function pollData<T>(s: PollState<T>): T | undefined {
  return s.kind === "ok" ? s.data : s.kind === "error" ? s.data : undefined;
}

// The audit timeline: GET /api/v1/changes/ with filters; each entry opens to a small before/after diff.

import { useEffect, useRef, useState } from "preact/hooks";
import { getJSON, type ChangeEntry, type ChangePage } from "../api";
import { useStore } from "../store";
import { clock } from "./common";

const PAGE = 100;
const KEEP = 300;

function merge(old: ChangePage, fresh: ChangePage): ChangePage {
  const byId = new Map(old.results.map((c) => [c.id, c]));
  for (const c of fresh.results) byId.set(c.id, c);
  const results = [...byId.values()].sort((a, b) => b.time.localeCompare(a.time) || b.id - a.id).slice(0, KEEP);
  return { ...fresh, results };
}

const SINCE: Record<string, number | null> = { "15m": 15 * 60, "1h": 3600, "24h": 86400, "7d": 7 * 86400, any: null };

export function Timeline({ history }: { history: { q: string; n: number } | null }) {
  const version = useStore((s) => s.version);
  const [object, setObject] = useState("");
  // "History" buttons elsewhere put an object's name into the object filter.
  useEffect(() => { if (history) setObject(history.q); }, [history]);
  const [actor, setActor] = useState("");
  const [action, setAction] = useState("");
  const [since, setSince] = useState("24h");
  const [page, setPage] = useState<ChangePage | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [open, setOpen] = useState<Set<number>>(new Set());
  const filterKey = useRef("");

  // Refetch on a filter change (debounced) and when the state version moves (at most every 2 s).
  useEffect(() => {
    const q = new URLSearchParams({ page_size: String(PAGE), ordering: "-time" });
    if (object.trim()) q.set("search", object.trim());
    if (actor.trim()) q.set("actor", actor.trim());
    if (action.trim()) q.set("action_prefix", action.trim());
    const secs = SINCE[since];
    if (secs) q.set("since", new Date(Date.now() - secs * 1000).toISOString());
    let stale = false;
    const t = window.setTimeout(() => {
      getJSON<ChangePage>(`/api/v1/changes/?${q.toString()}`).then(
        (p) => {
          if (stale) return;
          // Same filters: merge, so an entry seen once stays even when a burst of newer ones
          // (e.g. health transitions) follows; new filters: start over.
          const key = [object, actor, action, since].join("\u0000");
          setPage((old) => (old && filterKey.current === key ? merge(old, p) : p));
          filterKey.current = key;
          setError(null);
        },
        (e) => { if (!stale) setError(e instanceof Error ? e.message : String(e)); });
    }, 300);
    return () => { stale = true; window.clearTimeout(t); };
  }, [object, actor, action, since, useThrottled(version, 2000)]);

  const toggle = (id: number) => {
    const next = new Set(open);
    if (!next.delete(id)) next.add(id);
    setOpen(next);
  };
  return (
    <section class="timeline" data-testid="timeline" aria-label="Audit timeline">
      <div class="timeline-head">
        <h2>Timeline <span class="muted">{page ? `${page.count} changes` : ""}</span></h2>
        <input data-testid="timeline-filter-object" placeholder="object / reason" value={object} onInput={(e) => setObject(e.currentTarget.value)} aria-label="Filter by object" />
        <input data-testid="timeline-filter-actor" placeholder="actor" value={actor} onInput={(e) => setActor(e.currentTarget.value)} aria-label="Filter by actor" list="tl-actors" />
        <input data-testid="timeline-filter-action" placeholder="action, e.g. backend.drain" value={action} onInput={(e) => setAction(e.currentTarget.value)} aria-label="Filter by action (prefix)" list="tl-actions" />
        <select data-testid="timeline-filter-since" value={since} onChange={(e) => setSince(e.currentTarget.value)} aria-label="Since">
          <option value="15m">last 15 min</option><option value="1h">last hour</option><option value="24h">last 24 h</option>
          <option value="7d">last 7 days</option><option value="any">any time</option>
        </select>
        <datalist id="tl-actors">{[...new Set(page?.results.map((c) => c.actor_name))].map((a) => <option key={a} value={a} />)}</datalist>
        <datalist id="tl-actions">{[...new Set(page?.results.map((c) => c.action))].map((a) => <option key={a} value={a} />)}</datalist>
      </div>
      {error && <p class="err" role="alert">Could not load the timeline: {error}</p>}
      <ol class="entries">
        {page?.results.length === 0 && <li class="muted">No changes match.</li>}
        {page?.results.map((c) => (
          <li key={c.id} data-testid="timeline-entry" data-change={c.id} class={open.has(c.id) ? "open" : undefined}>
            <button class="entry-line" aria-expanded={open.has(c.id)} onClick={() => toggle(c.id)}>
              <ChangeLine c={c} />
            </button>
            {open.has(c.id) && <Diff before={c.before} after={c.after} />}
          </li>
        ))}
      </ol>
    </section>
  );
}

/** One change on one line: when, who, what, on what, why (the timeline's and the replay's). */
export function ChangeLine({ c }: { c: ChangeEntry }) {
  return (
    <>
      <span class="t">{clock(c.time)}</span>
      <span class="actor">{c.actor_name}</span>
      <span class="act">{c.action}</span>
      <span class="obj">{c.object_repr}{c.related_repr ? <span class="muted"> ({c.related_repr})</span> : null}</span>
      <span class="why">“{c.reason}”{c.forced ? <b class="err"> forced: {c.force_reason}</b> : null}</span>
    </>
  );
}

/** The value follows `value` at most once per `ms`, so a burst of deltas causes one refetch. */
function useThrottled<T>(value: T, ms: number): T {
  const [v, setV] = useState(value);
  const last = useRef(0);
  useEffect(() => {
    if (value === v) return;
    const t = window.setTimeout(() => { last.current = Date.now(); setV(value); }, Math.max(0, last.current + ms - Date.now()));
    return () => window.clearTimeout(t);
  }, [value, v]);
  return v;
}

function show(v: unknown): string {
  return v === undefined ? "—" : JSON.stringify(v);
}

function Diff({ before, after }: { before: Record<string, unknown> | null; after: Record<string, unknown> | null }) {
  const keys = [...new Set([...Object.keys(before ?? {}), ...Object.keys(after ?? {})])];
  const changed = keys.filter((k) => show(before?.[k]) !== show(after?.[k]) && k !== "revision");
  if (!before && !after) return <p class="muted diff">No before/after recorded.</p>;
  return (
    <table class="diff" data-testid="timeline-diff">
      <thead><tr><th scope="col">field</th><th scope="col">before</th><th scope="col">after</th></tr></thead>
      <tbody>
        {(changed.length ? changed : keys).map((k) => (
          <tr key={k}><th scope="row">{k}</th><td class="before">{before ? show(before[k]) : "(created)"}</td><td class="after">{after ? show(after[k]) : "(deleted)"}</td></tr>
        ))}
      </tbody>
    </table>
  );
}

// Maintenance windows: the drains and maintenance scheduled ahead or set to end by themselves,
// on a week's strip (GET /api/v1/operations/?window=true), each with its end and, for operators,
// a way to move that end (POST /api/v1/operations/{id}/extend/, with a reason).

import { useState } from "preact/hooks";
import { ApiError, postJSON, type Operation } from "../api";
import { usePoll, pollData } from "../poll";
import { localInput, type ActionRequest } from "./actions";

const DAY = 86_400_000;
const SPAN_DAYS = 7;

interface Page { results: Operation[] }

function when(iso: string | null): string {
  return iso ? new Date(iso).toLocaleString([], { weekday: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }) : "—";
}

export function Windows({ canAct, onAction }: { canAct: boolean; onAction: (r: ActionRequest) => void }) {
  const poll = usePoll<Page>("/api/v1/operations/?window=true&page_size=100&ordering=id", 10_000);
  const rows = pollData(poll)?.results ?? [];
  const from = Date.now() - DAY / 2;
  const to = from + SPAN_DAYS * DAY;
  const pct = (t: number) => `${Math.max(0, Math.min(100, (100 * (t - from)) / (to - from)))}%`;
  const days = Array.from({ length: SPAN_DAYS }, (_, i) => new Date(new Date(from + (i + 1) * DAY).setHours(0, 0, 0, 0)));
  return (
    <section class="windows" aria-label="Maintenance windows" data-testid="windows">
      <h2>Maintenance windows <span class="muted">{rows.length} open</span></h2>
      {rows.length === 0 ? <p class="muted">No drain or maintenance is scheduled or set to end by itself.</p> : (
        <div class="cal">
          <div class="cal-days" aria-hidden="true">
            {days.map((d) => <span key={d.getTime()} class="cal-day" style={{ left: pct(d.getTime()) }}>{d.toLocaleDateString([], { weekday: "short", day: "numeric" })}</span>)}
            <span class="cal-now" style={{ left: pct(Date.now()) }} title="now" />
          </div>
          {rows.map((op) => <WindowRow key={op.id} op={op} pct={pct} canAct={canAct} onAction={onAction} />)}
        </div>
      )}
    </section>
  );
}

function WindowRow({ op, pct, canAct, onAction }: {
  op: Operation; pct: (t: number) => string; canAct: boolean; onAction: (r: ActionRequest) => void;
}) {
  // An active window started before the strip does, or at its not_before.
  const start = op.not_before ? new Date(op.not_before).getTime() : Number.NEGATIVE_INFINITY;
  const end = op.expires_at ? new Date(op.expires_at).getTime() : Number.POSITIVE_INFINITY;
  const [editing, setEditing] = useState(false);
  const left = pct(start);
  const width = `calc(${pct(end)} - ${left})`;
  const label = `${op.kind.replace("_", " ")} ${op.target_repr}`;
  return (
    <div class="cal-row" data-testid="window" data-operation={op.id} data-status={op.status}>
      <div class="cal-label" title={`${op.actor_name}: “${op.reason}”`}>
        <b>{label}</b> <span class="muted">{op.status === "scheduled" ? `starts ${when(op.not_before)}` : "active"} · ends {op.expires_at ? when(op.expires_at) : "when undrained"}</span>
        {canAct && op.expires_at && !editing && <button class="small" data-testid="window-extend" onClick={() => setEditing(true)}>Change end</button>}
        {canAct && op.status === "scheduled" && (
          <button class="small" data-testid="window-cancel" onClick={() => onAction({ kind: "abort", target: { type: "operation", id: op.id, name: `#${op.id} ${label}` } })}>Cancel</button>
        )}
      </div>
      <div class="cal-track">
        <span class={`cal-bar ${op.status === "scheduled" ? "scheduled" : "active"}`} style={{ left, width }} title={`${label}: ${op.not_before ? when(op.not_before) : "now"} → ${when(op.expires_at)}`} />
      </div>
      {editing && <ExtendForm op={op} onDone={() => setEditing(false)} />}
    </div>
  );
}

function ExtendForm({ op, onDone }: { op: Operation; onDone: () => void }) {
  const [end, setEnd] = useState(localInput(new Date(op.expires_at ?? Date.now())));
  const [reason, setReason] = useState("");
  const [error, setError] = useState<string | null>(null);
  async function submit(e: Event): Promise<void> {
    e.preventDefault();
    if (!reason.trim()) { setError("A reason is required: it goes into the audit log."); return; }
    try {
      await postJSON(`/api/v1/operations/${op.id}/extend/`, { expires_at: new Date(end).toISOString(), reason: reason.trim() });
      onDone();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  }
  return (
    <form class="cal-extend" onSubmit={(e) => void submit(e)}>
      <input type="datetime-local" data-testid="window-extend-end" value={end} onInput={(e) => setEnd(e.currentTarget.value)} aria-label="New end" />
      <input data-testid="window-extend-reason" value={reason} onInput={(e) => setReason(e.currentTarget.value)} placeholder="why (audit log)" maxLength={1000} aria-label="Reason" />
      <button type="submit" class="small primary" data-testid="window-extend-submit">Save</button>
      <button type="button" class="small" onClick={onDone}>Cancel</button>
      {error && <span class="err" role="alert">{error}</span>}
    </form>
  );
}

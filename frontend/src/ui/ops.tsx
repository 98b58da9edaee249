// Operations: a progress bar per running operation (backends left, sessions left, time to the
// deadline, the current step), updating live, with abort; the latest finished ones below.

import { useEffect, useState } from "preact/hooks";
import type { Operation, OperationConfirmation, StatsResponse } from "../api";
import { shallow, store, useStore, useTables } from "../store";
import type { ActionRequest } from "./actions";

const ACTIVE = new Set(["running", "paused"]);

export function Operations({ canAct, onAction, stats }: { canAct: boolean; onAction: (r: ActionRequest) => void; stats: StatsResponse | undefined }) {
  useTables("operations");
  const ops = [...store.t.operations.values()];
  const running = ops.filter((o) => ACTIVE.has(o.status)).sort((a, b) => b.id - a.id);
  const finished = ops.filter((o) => !ACTIVE.has(o.status)).sort((a, b) => b.id - a.id).slice(0, 3);
  // Time left counts down between deltas.
  const [, setNow] = useState(0);
  useEffect(() => {
    if (!running.length) return;
    const t = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(t);
  }, [running.length]);
  // Sessions left read backends too: re-render when those figures change, not on every backend delta.
  const sessions = useStore(() => running.map((op) => sessionsLeft(op, stats)), shallow);
  return (
    <section class="ops" aria-label="Operations">
      <h2>Operations <span class="muted">{running.length} running</span></h2>
      {running.length === 0 && finished.length === 0 && <p class="muted">No operations.</p>}
      <ul>
        {running.map((op, i) => <OpRow key={op.id} op={op} canAct={canAct} onAction={onAction} sessions={sessions[i]} />)}
        {finished.map((op) => <OpRow key={op.id} op={op} canAct={false} onAction={onAction} sessions={undefined} />)}
      </ul>
    </section>
  );
}

/** Sessions still open on the backends a drain is waiting for, when the open PoP's HAProxy figures cover them. */
function sessionsLeft(op: Operation, stats: StatsResponse | undefined): number | undefined {
  if (op.progress?.sessions_left !== undefined) return op.progress.sessions_left;
  if (!stats?.connected) return undefined;
  // Only the figures of the open PoP are at hand: show a count only when they cover every backend still draining.
  let sum = 0;
  let matched = 0;
  for (const [id, s] of Object.entries(stats.backends)) {
    const b = store.t.backends.get(Number(id));
    if (b?.operation_id === op.id && b.admin_state === "draining") { sum += s.sessions; matched += 1; }
  }
  return matched > 0 && matched === op.progress?.backends_left ? sum : undefined;
}

function secondsLeft(op: Operation): number | null {
  if (op.deadline && ACTIVE.has(op.status)) return Math.max(0, Math.round((Date.parse(op.deadline) - store.now()) / 1000));
  return op.progress?.seconds_left ?? null;
}

function OpRow({ op, canAct, onAction, sessions }: { op: Operation; canAct: boolean; onAction: (r: ActionRequest) => void; sessions: number | undefined }) {
  const p = op.progress ?? {};
  const confirmation = (op.result ?? {}) as OperationConfirmation;
  const unconfirmed = [...new Set([...(p.unconfirmed ?? []), ...(confirmation.unconfirmed ?? [])])];
  const pctDone = Math.max(0, Math.min(100, p.percent ?? (op.status === "succeeded" ? 100 : 0)));
  const left = secondsLeft(op);
  const flash = useStore((s) => s.isFlashing(`operation:${op.id}`));
  const parts = [
    `${pctDone}%`,
    p.backends_left !== undefined ? `${p.backends_left}${p.backends_total !== undefined ? ` of ${p.backends_total}` : ""} backends left` : null,
    sessions !== undefined ? `${sessions} sessions left` : null,
    left !== null && ACTIVE.has(op.status) ? `${left} s left` : null,
    p.step !== undefined ? `step ${p.step}${p.steps ? `/${p.steps}` : ""}` : null,
    p.weight !== undefined ? `weight ${p.weight}` : null,
    p.arriving_rps !== undefined ? `${p.arriving_rps} req/s still arriving` : null,
  ].filter(Boolean).join(" · ");
  const steps = op.steps?.length ? op.steps.map((s) => `${s.name}: ${s.status}`).join(" → ") : "";
  // The whole plan goes in the tooltip; the line shows where it is now.
  const current = ACTIVE.has(op.status) ? op.steps?.find((s) => s.status === "running" || s.status === "next") : undefined;
  return (
    <li data-testid="operation" data-operation={op.id} data-status={op.status} class={flash ? "flash" : undefined}>
      <div class="op-line">
        <span class="op-kind">{op.kind}</span>
        <span class="op-target" title={op.target_repr}>{op.target_repr}</span>
        <span class="bar-track" role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={pctDone}
          aria-label={`${op.kind} ${op.target_repr}: ${pctDone}%`}>
          <span class={`bar-fill s-${op.status}`} style={{ width: `${pctDone}%` }} />
        </span>
        <b class={`op-status st-${op.status}`}>{op.status}</b>
        {canAct && ACTIVE.has(op.status) ? (
          <button class="small" data-testid="abort" onClick={() => onAction({ kind: "abort", target: { type: "operation", id: op.id, name: `#${op.id} ${op.kind} ${op.target_repr}` } })}>Abort</button>
        ) : <span />}
      </div>
      <div class="op-detail" title={steps}>
        {parts}{current && <span class="muted"> · now: {current.name} ({current.status})</span>}
        {p.dns && ACTIVE.has(op.status) && <span class="muted"> · DNS: {p.dns}</span>}
        {p.awaiting?.length && ACTIVE.has(op.status) ? <div class="muted" data-testid="awaiting">⟳ waiting for {p.awaiting.join(", ")} to apply it</div> : null}
        {unconfirmed.length ? <div class="err" data-testid="unconfirmed">✗ not confirmed by the data plane: {unconfirmed.join("; ")}</div> : null}
        {confirmation.confirmed?.length ? <div class="muted" data-testid="confirmed">✓ applied by {confirmation.confirmed.join(", ")}</div> : null}
        <span class="muted"> · by {op.actor_name || "—"}{op.forced ? " (forced)" : ""} · “{op.reason}”</span>
      </div>
    </li>
  );
}

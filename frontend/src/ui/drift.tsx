// Drift: where the live fleet differs from the last fleet file applied (steerctl apply), and who
// changed each object by hand since (GET /api/v1/fleet/drift/). Read when opened, then every 30 s
// while open: it compares the whole fleet, so nobody pays for it who does not look.

import { useState } from "preact/hooks";
import type { FleetDifference, FleetDrift } from "../api";
import { pollData, usePoll } from "../poll";

function text(value: unknown): string {
  return value === null || value === undefined ? "—" : typeof value === "string" ? value : JSON.stringify(value);
}

export function Drift() {
  const [open, setOpen] = useState(false);
  const poll = usePoll<FleetDrift>(open ? "/api/v1/fleet/drift/" : null, 30_000);
  const drift = pollData(poll);
  const count = drift?.differences.length ?? 0;
  const summary = !drift ? "" : drift.state === "never_applied" ? "no fleet file applied yet"
    : drift.state === "in_sync" ? "✓ the live fleet is the file applied" : `✗ ${count} difference${count === 1 ? "" : "s"} from the file applied`;
  return (
    <details class="drift" data-testid="drift" data-state={drift?.state} onToggle={(e) => setOpen(e.currentTarget.open)}>
      <summary><h2>Drift from the fleet file</h2> <span class={drift?.state === "drifted" ? "err" : "muted"}>{summary}</span></summary>
      {open && !drift && <p class="muted">Comparing the live fleet with the file…</p>}
      {drift?.operation && (
        <p class="muted">Last applied: operation #{drift.operation.id} by {drift.operation.actor}, {new Date(drift.operation.created_at).toLocaleString()} · “{drift.operation.reason}”</p>
      )}
      {drift?.state === "never_applied" && <p class="muted">steerctl export, then steerctl apply, makes the file the fleet's record; drift is measured from it.</p>}
      {count > 0 && (
        <ul class="drift-list">
          {drift?.differences.map((d) => <DriftRow key={`${d.kind}:${d.key}`} d={d} />)}
        </ul>
      )}
    </details>
  );
}

function DriftRow({ d }: { d: FleetDifference }) {
  const who = d.changed_by[0];
  return (
    <li data-testid="drift-row" data-kind={d.kind} data-key={d.key} data-difference={d.difference}>
      <b>{d.kind} {d.key}</b> <span class="muted">{d.difference} since the file</span>
      {Object.entries(d.fields).map(([name, v]) => (
        <div key={name} class="drift-field"><span class="mono">{name}</span>: file {text(v.file)} → live {text(v.live)}</div>
      ))}
      {who
        ? <div class="drift-who">by {who.actor} ({who.source}) at {new Date(who.time).toLocaleString()}: {who.action} · “{who.reason}”</div>
        : <div class="drift-who muted">no change recorded since the apply</div>}
    </li>
  );
}

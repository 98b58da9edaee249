// The action dialog: reason, parameters, the capacity what-if first, then confirm. A capacity-guard
// refusal (409) is explained and unlocks "force", which needs its own reason.

import { useEffect, useRef, useState } from "preact/hooks";
import {
  ApiError, AuthError, fieldErrors, getJSON, postJSON, type ActionConflict, type Impact, type ImpactPlan, type Operation,
} from "../api";
import { useStore } from "../store";
import { fmt, Verdict } from "./common";

export type ActionKind = "drain" | "undrain" | "maintenance" | "weight" | "withdraw" | "announce" | "abort";
export type TargetType = "backend" | "pool" | "pop" | "region" | "operation";

export interface ActionRequest {
  kind: ActionKind;
  target: { type: TargetType; id: number; name: string };
  /** Current weight, for the weight dialog's default. */
  weight?: number;
}

const PLURAL: Record<TargetType, string> = { backend: "backends", pool: "pools", pop: "pops", region: "regions", operation: "operations" };
const TITLES: Record<ActionKind, string> = {
  drain: "Drain", undrain: "Undrain (return to service)", maintenance: "Maintenance (out of service now)",
  weight: "Change weight", withdraw: "Withdraw anycast announcement", announce: "Announce anycast prefix", abort: "Abort operation",
};
const DESCRIPTIONS: Record<ActionKind, string> = {
  drain: "No new traffic; existing sessions get the grace period to finish.",
  undrain: "Back to ready; traffic returns with slow start.",
  maintenance: "Out of service at once: existing sessions are cut.",
  weight: "New weight (0–256); optionally reached gradually.",
  withdraw: "The PoP stops announcing its anycast prefixes; clients move to the next nearest PoP.",
  announce: "The PoP announces its anycast prefixes again and attracts its catchment.",
  abort: "Stops the operation; what it did so far is rolled back where the operation says so.",
};
/** Actions whose POST accepts dry_run. */
const DRY_RUN: ActionKind[] = ["drain", "maintenance", "weight", "withdraw"];

export function actionUrl(req: ActionRequest): string {
  return `/api/v1/${PLURAL[req.target.type]}/${req.target.id}/${req.kind}/`;
}

type WhatIf = { kind: "none" } | { kind: "hint"; message: string } | { kind: "loading" } | { kind: "ok"; impact: Impact } | { kind: "error"; message: string };

export function ActionDialog({ req, onClose, onDone }: {
  req: ActionRequest; onClose: () => void; onDone: (message: string) => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const [reason, setReason] = useState("");
  const [grace, setGrace] = useState("");
  const [weight, setWeight] = useState(String(req.weight ?? 100));
  const [ramp, setRamp] = useState("");
  const [layered, setLayered] = useState(false);
  const [whatif, setWhatif] = useState<WhatIf>({ kind: "loading" });
  const [refusal, setRefusal] = useState<Impact | null>(null);
  const [force, setForce] = useState(false);
  const [forceReason, setForceReason] = useState("");
  const [error, setError] = useState<string[] | null>(null);
  const [busy, setBusy] = useState(false);
  // A maintenance window: start (empty: now) and end (proposed: STEERING_UI_DRAIN_EXPIRY_HOURS ahead).
  const expiryHours = useStore((st) => st.shell.me?.drain_expiry_hours ?? 0);
  const windowed = req.kind === "drain" || req.kind === "maintenance";
  const [start, setStart] = useState("");
  const [ends, setEnds] = useState(() => (windowed && expiryHours > 0 ? localInput(new Date(Date.now() + expiryHours * 3600_000)) : ""));

  useEffect(() => {
    const d = ref.current;
    // Focus goes back where it was (the row's button) when the dialog goes away.
    const before = document.activeElement as HTMLElement | null;
    if (d && !d.open) d.showModal();
    return () => { if (before?.isConnected) before.focus(); };
  }, []);

  const params = (): Record<string, unknown> => {
    const body: Record<string, unknown> = {};
    if (req.kind === "drain" && grace.trim() !== "") body["grace_seconds"] = Number(grace);
    if (req.kind === "drain" && layered) body["layered"] = true;
    if (windowed && start) body["not_before"] = new Date(start).toISOString();
    if (windowed && ends) body["expires_at"] = new Date(ends).toISOString();
    if (req.kind === "weight") {
      body["weight"] = Number(weight);
      if (ramp.trim() !== "") body["ramp_seconds"] = Number(ramp);
    }
    return body;
  };

  // The what-if: recomputed when a parameter that changes it changes (weight, layered).
  useEffect(() => {
    if (req.kind === "announce" || req.kind === "abort") { setWhatif({ kind: "none" }); return; }
    if (req.kind === "weight" && !/^\d+$/.test(weight.trim())) { setWhatif({ kind: "error", message: "Enter a whole number 0–256." }); return; }
    if (req.kind === "weight" && Number(weight) === req.weight) { setWhatif({ kind: "hint", message: `The weight is ${req.weight} now: enter the new weight to see where traffic goes.` }); return; }
    let stale = false;
    setWhatif({ kind: "loading" });
    const timer = window.setTimeout(() => {
      const p = DRY_RUN.includes(req.kind)
        ? postJSON<Impact>(actionUrl(req), { reason: reason.trim() || "what-if preview", dry_run: true, ...params(), ...(req.kind === "drain" ? { grace_seconds: undefined } : {}) })
        : getJSON<Impact>(`/api/v1/${PLURAL[req.target.type]}/${req.target.id}/impact/?action=${req.kind}`);
      p.then((impact) => { if (!stale) setWhatif({ kind: "ok", impact }); },
        (err) => { if (!stale) setWhatif({ kind: "error", message: describe(err).join(" ") }); });
    }, req.kind === "weight" ? 250 : 0);
    return () => { stale = true; window.clearTimeout(timer); };
  }, [req.kind, req.target.id, weight, layered]);

  async function confirm(): Promise<void> {
    setError(null);
    if (!reason.trim()) { setError(["A reason is required: it goes into the audit log."]); return; }
    if (force && !forceReason.trim()) { setError(["Forcing past the capacity guard needs its own reason."]); return; }
    const body: Record<string, unknown> = { reason: reason.trim(), ...params() };
    if (force) { body["force"] = true; body["force_reason"] = forceReason.trim(); }
    setBusy(true);
    try {
      const res = await postJSON<{ operation?: Operation } & Partial<Operation>>(actionUrl(req), body);
      const op = res.operation;
      const when = op?.status === "scheduled" && op.not_before ? ` for ${new Date(op.not_before).toLocaleString()}` : "";
      onDone(op ? `${TITLES[req.kind]} ${req.target.name}: operation #${op.id} ${op.status}${when}` : `${TITLES[req.kind]} ${req.target.name}: done`);
      onClose();
    } catch (err) {
      if (err instanceof ApiError && err.status === 409 && (err.code === "capacity_guard" || err.code === "safety_rule")) {
        const { impact, detail } = err.body as ActionConflict;
        setRefusal(impact ?? null);
        if (impact) setWhatif({ kind: "ok", impact });
        const by = err.code === "safety_rule" ? "a safety rule" : "the capacity guard";
        setError([`Refused by ${by}: ${detail ?? impact?.explain ?? ""}`]);
      } else {
        setError(describe(err));
      }
    } finally {
      setBusy(false);
    }
  }

  const unsafe = whatif.kind === "ok" && !whatif.impact.safe;
  return (
    <dialog ref={ref} class="action-dialog" data-testid="action-dialog" aria-labelledby="dlg-title"
      onCancel={(e) => { e.preventDefault(); onClose(); }}>
      <form method="dialog" onSubmit={(e) => { e.preventDefault(); void confirm(); }}>
        <h2 id="dlg-title">{TITLES[req.kind]}: <span class="mono">{req.target.name}</span></h2>
        <p class="muted">{DESCRIPTIONS[req.kind]}</p>
        <label class="field">Reason (audit log)
          <input data-testid="reason" value={reason} onInput={(e) => setReason(e.currentTarget.value)} required maxLength={1000}
            placeholder="e.g. deploy 1.4.2, ticket OPS-123" autoFocus />
        </label>
        {req.kind === "drain" && (
          <label class="field">Grace (seconds for sessions to finish)
            <input data-testid="grace" type="number" min={0} max={86400} value={grace} onInput={(e) => setGrace(e.currentTarget.value)}
              placeholder={whatif.kind === "ok" && whatif.impact.grace ? `${whatif.impact.grace.seconds} (${whatif.impact.grace.derivation})` : "pool default"} />
          </label>
        )}
        {req.kind === "drain" && (req.target.type === "pop" || req.target.type === "region") && (
          <label class="check"><input type="checkbox" data-testid="layered" checked={layered} onChange={(e) => setLayered(e.currentTarget.checked)} />
            Layered: leave DNS first, wait out the TTL, withdraw anycast, then drain locally</label>
        )}
        {windowed && (
          <div class="row" data-testid="window-fields">
            <label class="field">Starts (empty: now)
              <input data-testid="window-start" type="datetime-local" value={start} onInput={(e) => setStart(e.currentTarget.value)} />
            </label>
            <label class="field">Back in service by itself at (empty: when someone undrains)
              <input data-testid="window-end" type="datetime-local" value={ends} onInput={(e) => setEnds(e.currentTarget.value)} />
            </label>
          </div>
        )}
        {req.kind === "weight" && (
          <div class="row">
            <label class="field">Weight
              <input data-testid="weight-input" type="number" min={0} max={256} value={weight} onInput={(e) => setWeight(e.currentTarget.value)} />
            </label>
            <label class="field">Ramp over (seconds, optional)
              <input data-testid="ramp" type="number" min={0} max={86400} value={ramp} onInput={(e) => setRamp(e.currentTarget.value)} placeholder="0 = at once" />
            </label>
          </div>
        )}
        <WhatIfView state={whatif} />
        {refusal && (
          <div class="force-box">
            <label class="check"><input type="checkbox" data-testid="force" checked={force} onChange={(e) => setForce(e.currentTarget.checked)} />
              {refusal.safety_rules.length > 0 ? "Break the safety rule" : "Force past the capacity guard"} (I accept the consequence above)</label>
            <label class="field">Why force
              <input data-testid="force-reason" value={forceReason} onInput={(e) => setForceReason(e.currentTarget.value)} disabled={!force} maxLength={1000} />
            </label>
          </div>
        )}
        {error && <div class="dialog-error" data-testid="dialog-error" role="alert">{error.map((l, i) => <div key={i}>{l}</div>)}</div>}
        <div class="buttons">
          <button type="button" data-testid="cancel" onClick={onClose}>Cancel</button>
          <button type="submit" data-testid="confirm" class={unsafe || force ? "danger" : "primary"} disabled={busy}>
            {busy ? "Sending…" : force ? `Force ${req.kind}` : `Confirm ${req.kind}`}
          </button>
        </div>
      </form>
    </dialog>
  );
}

function describe(err: unknown): string[] {
  if (err instanceof AuthError) return ["Not signed in any more (or not allowed). Sign in again."];
  if (err instanceof ApiError) {
    if (err.status === 403) return [`Not allowed: ${err.message}`];
    if (err.status === 412) return ["Someone changed this object meanwhile; the picture refreshes, then try again."];
    const fields = fieldErrors(err);
    return [`${err.message}${err.code ? ` (${err.code}, HTTP ${err.status})` : ` (HTTP ${err.status})`}`, ...fields];
  }
  return [err instanceof Error ? err.message : String(err)];
}

export function WhatIfView({ state }: { state: WhatIf }) {
  if (state.kind === "none") return <div class="whatif" data-testid="whatif"><span class="muted">No capacity is taken away: no what-if needed.</span></div>;
  if (state.kind === "hint") return <div class="whatif" data-testid="whatif"><span class="muted">{state.message}</span></div>;
  if (state.kind === "loading") return <div class="whatif" data-testid="whatif" aria-busy="true"><span class="muted">Computing the what-if…</span></div>;
  if (state.kind === "error") return <div class="whatif" data-testid="whatif"><span class="err">What-if unavailable: {state.message}</span></div>;
  const i = state.impact;
  return (
    <div class={`whatif w-${i.verdict}${i.safety_rules.length > 0 ? " w-rule" : ""}`} data-testid="whatif" data-verdict={i.verdict}>
      <div class="whatif-head">
        <strong>What if:</strong> <span class="muted">capacity</span> <Verdict verdict={i.verdict} />
        {i.safety_rules.length > 0 && <> · <b class="err">✗ breaks {i.safety_rules.length === 1 ? "a safety rule" : `${i.safety_rules.length} safety rules`}</b></>}
        <span class="muted"> · {fmt.format(i.moved_rps)} req/s move · {i.backends_affected} backends affected
          {i.unplaced_rps > 0 && <> · <b class="err">{fmt.format(i.unplaced_rps)} req/s nowhere to go</b></>}
          {" "}· basis <span data-basis={i.basis}>{i.basis}</span></span>
      </div>
      {/* With rules broken the list below says it all; the explain repeats them for the CLI and the 409. */}
      {(i.safety_rules.length === 0 || i.verdict !== "safe") && <p class="explain">{i.explain}</p>}
      {i.safety_rules.length > 0 && (
        <ul class="rules-broken" data-testid="safety-rules">
          {i.safety_rules.map((b) => <li key={b.rule_id} data-rule={b.rule}><b class="err">✗ breaks {b.rule}</b>: {b.detail}</li>)}
        </ul>
      )}
      {i.receivers.length > 0 && (
        <table class="receivers">
          <thead><tr><th scope="col">receiver</th><th class="num" scope="col">load now → after</th><th class="num" scope="col">capacity</th><th class="num" scope="col">headroom after</th></tr></thead>
          <tbody>
            {i.receivers.map((r) => (
              <tr key={`${r.type}:${r.id}`} class={r.overloaded ? "over" : undefined}>
                <td>{r.overloaded && <span class="err" aria-label="overloaded">⚠ </span>}{r.name}</td>
                <td class="num">{fmt.format(r.load_before_rps)} → {fmt.format(r.load_after_rps)} req/s</td>
                <td class="num">{r.capacity_rps === null ? "undeclared" : `${fmt.format(r.capacity_rps)} req/s`}</td>
                <td class="num">{r.headroom_after_percent === null ? "—" : `${fmt.format(r.headroom_after_percent)} %`}
                  {r.overloaded && r.capacity_rps !== null && <span class="err"> ({fmt.format(r.load_after_rps - r.capacity_rps)} req/s over)</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {isRamp(i.plan) && <p class="muted">Ramp: {i.plan.steps.join(" → ")}, every {i.plan.step_seconds} s</p>}
      {i.notes.length > 0 && <ul class="notes">{i.notes.map((n, k) => <li key={k}>{n}</li>)}</ul>}
    </div>
  );
}

/** A weight change's plan with more than one step (a layered drain's plan has no steps). */
function isRamp(plan: ImpactPlan | undefined): plan is Extract<ImpactPlan, { steps: number[] }> {
  return plan !== undefined && "steps" in plan && plan.steps.length > 1;
}

/** A Date as the value of an <input type="datetime-local"> (local time, to the minute). */
export function localInput(d: Date): string {
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

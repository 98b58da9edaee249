// Desired vs applied, per PoP and layer: is the data plane running the version the control plane
// wants? (GET /api/v1/dataplanes/ → applied; the agents acknowledge the versions they apply.)

import type { Applied, LayerApplied } from "../api";
import { Badge, ago } from "./common";

const NAMES: Record<string, string> = { local: "HAProxy", anycast: "ExaBGP", dns: "GSLB server" };
const TROUBLE = new Set(["behind", "refused"]);

/** One layer's line: the state from the one table (symbol + word), the versions, and the words why. */
export function LayerLine({ status }: { status: LayerApplied }) {
  const versions = status.applied_version === null
    ? "no agent has reported"
    : status.state === "in_sync"
      ? `runs v${status.applied_version}`
      : `runs v${status.applied_version}, wants v${status.desired_version}${status.lag_seconds !== null ? ` (${Math.round(status.lag_seconds)} s behind)` : ""}`;
  const instances = status.instances.length > 1 ? ` · ${status.instances.length} instances` : "";
  return (
    <div class={`applied-line${TROUBLE.has(status.state) ? " trouble" : ""}`} data-testid="applied" data-layer={status.layer}
      data-state={status.state} title={status.detail}>
      <span class="applied-layer">{status.layer} ({NAMES[status.layer] ?? status.layer})</span>{" "}
      <Badge state={status.state} />{" "}
      <span class="applied-versions">{versions}{instances}</span>
      <span class="muted"> · agent last seen {ago(status.seen_at)}</span>
      {TROUBLE.has(status.state) && <div class="applied-why">{status.detail}</div>}
    </div>
  );
}

/** The PoP panel's data-plane section: its local and anycast layers, and the DNS layer that
 * answers for its region (one GSLB layer for the fleet, shown in every PoP's panel). */
export function PopApplied({ applied, slug }: { applied: Applied | undefined; slug: string }) {
  const layers = applied?.pops[slug];
  if (!applied || !layers) return <div class="muted" data-testid="applied-missing">data planes: applied versions not known yet</div>;
  return (
    <section class="applied" aria-label="Data planes: desired vs applied">
      <LayerLine status={layers.local} />
      <LayerLine status={layers.anycast} />
      <LayerLine status={applied.dns} />
    </section>
  );
}

/** Worst state of a PoP's layers, for its map marker (undefined: all in sync or never managed). */
export function popTrouble(applied: Applied | undefined, slug: string): LayerApplied | undefined {
  const layers = applied?.pops[slug];
  if (!layers) return undefined;
  return [layers.local, layers.anycast].find((l) => TROUBLE.has(l.state));
}

/** The header's summary: how many PoP layers (and the DNS layer) do not run the desired version. */
export function AppliedSummary({ applied }: { applied: Applied | undefined }) {
  if (!applied) return null;
  const all = [applied.dns, ...Object.values(applied.pops).flatMap((p) => [p.local, p.anycast])];
  const trouble = all.filter((l) => TROUBLE.has(l.state));
  const applying = all.filter((l) => l.state === "applying");
  const first = trouble[0];
  // No agent anywhere is not "applied": nothing has said it runs anything.
  if (all.every((l) => l.state === "absent")) {
    return <span class="muted" data-testid="applied-summary" data-state="absent" title="No data-plane agent has reported.">○ no agent reports v{applied.version}</span>;
  }
  if (first) {
    return <span class="err" data-testid="applied-summary" data-state="behind" title={trouble.map((l) => l.detail).join("\n")}>
      ✗ {trouble.length} not applied: {first.detail}</span>;
  }
  if (applying.length) return <span class="muted" data-testid="applied-summary" data-state="applying">⟳ {applying.length} applying v{applied.version}</span>;
  return <span class="ok" data-testid="applied-summary" data-state="in_sync">✓ v{applied.version} applied</span>;
}

// Small shared pieces: the state badge (symbol + word, coloured from the API's one table), number formats.

import type { ComponentChildren } from "preact";
import { store, useStore } from "../store";

export const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
export const pct = (x: number): string => `${fmt.format(x)} %`;

/** A state key from the API's table: its symbol and word, tinted with its colour. Unknown keys still show their word. */
export function Badge({ state, label, title }: { state: string; label?: string; title?: string }) {
  const s = useStore((st) => st.states.get(state)); // the table arrives with the topology
  return (
    <span class="state" style={s ? { "--c": s.colour } : undefined} title={title ?? s?.meaning} data-state={state}>
      <span class="sym" aria-hidden="true">{s?.symbol ?? "•"}</span> {label ?? s?.label ?? state}
    </span>
  );
}

export function colourOf(state: string, fallback = "#8a8f98"): string {
  return store.states.get(state)?.colour ?? fallback;
}
export function symbolOf(state: string): string {
  return store.states.get(state)?.symbol ?? "•";
}

/** Verdict of a what-if, never colour alone. */
export function Verdict({ verdict }: { verdict: string }) {
  const sym = verdict === "safe" ? "✓" : verdict === "overload" ? "⚠" : "✕";
  return <span class={`verdict v-${verdict}`}><span aria-hidden="true">{sym}</span> {verdict}</span>;
}

export function Muted({ children }: { children: ComponentChildren }) {
  return <span class="muted">{children}</span>;
}

export function ago(unixSeconds: number | null | undefined): string {
  if (!unixSeconds) return "never";
  const s = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

export function clock(iso: string): string {
  const d = new Date(iso);
  return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

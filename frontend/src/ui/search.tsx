// Search (/): jumps to any region, PoP, pool or backend. Scans the Maps on each keystroke and stops
// at a dozen hits, which stays well under a millisecond per thousand objects.

import { useRef, useState } from "preact/hooks";
import { store, useStore } from "../store";

export interface Hit { type: "region" | "pop" | "pool" | "backend"; id: number; label: string; detail: string }

const LIMIT = 12;
const NONE: Hit[] = [];

function sameHits(a: Hit[], b: Hit[]): boolean {
  return a.length === b.length && a.every((h, i) => {
    const o = b[i];
    return o !== undefined && h.type === o.type && h.id === o.id && h.label === o.label && h.detail === o.detail;
  });
}

function find(q: string): Hit[] {
  const s = q.trim().toLowerCase();
  if (!s) return [];
  const out: Hit[] = [];
  const t = store.t;
  for (const r of t.regions.values()) {
    if (r.slug.toLowerCase().includes(s) || r.name.toLowerCase().includes(s)) out.push({ type: "region", id: r.id, label: r.slug, detail: r.name });
  }
  for (const p of t.pops.values()) {
    if (out.length >= LIMIT) break;
    if (p.slug.toLowerCase().includes(s) || p.name.toLowerCase().includes(s) || p.city.toLowerCase().includes(s)) out.push({ type: "pop", id: p.id, label: p.slug, detail: `${p.name}, ${p.city}` });
  }
  for (const p of t.pools.values()) {
    if (out.length >= LIMIT) break;
    const pop = t.pops.get(p.pop_id);
    const path = `${pop?.slug}/${p.slug}`;
    if (path.toLowerCase().includes(s)) out.push({ type: "pool", id: p.id, label: path, detail: "pool" });
  }
  for (const b of t.backends.values()) {
    if (out.length >= LIMIT) break;
    if (b.name.toLowerCase().includes(s) || b.address.includes(s)) {
      const pool = t.pools.get(b.pool_id);
      const pop = pool ? t.pops.get(pool.pop_id) : undefined;
      out.push({ type: "backend", id: b.id, label: `${pop?.slug}/${pool?.slug}/${b.name}`, detail: `${b.address}:${b.port}` });
    }
  }
  return out.slice(0, LIMIT);
}

export function Search({ onPick, inputRef }: { onPick: (hit: Hit) => void; inputRef: { current: HTMLInputElement | null } }) {
  const [q, setQ] = useState("");
  const [active, setActive] = useState(0);
  const [open, setOpen] = useState(false);
  // While open, the hits follow the picture: a delta that changes them re-renders the list.
  const hits = useStore(() => (open ? find(q) : NONE), sameHits);
  const blurTimer = useRef(0);
  const pick = (h: Hit | undefined) => {
    if (!h) return;
    onPick(h);
    setOpen(false);
    setQ("");
    inputRef.current?.blur();
  };
  return (
    <div class="search" role="combobox" aria-expanded={hits.length > 0} aria-haspopup="listbox" aria-owns="search-hits">
      <input ref={inputRef} data-testid="search" type="search" placeholder="Search region, PoP, pool, backend  ( / )"
        aria-label="Search regions, PoPs, pools and backends" aria-controls="search-hits" aria-autocomplete="list"
        value={q} onInput={(e) => { setQ(e.currentTarget.value); setOpen(true); setActive(0); }}
        onFocus={() => { window.clearTimeout(blurTimer.current); setOpen(true); }}
        onBlur={() => { blurTimer.current = window.setTimeout(() => setOpen(false), 150); }}
        onKeyDown={(e) => {
          if (e.key === "ArrowDown") { e.preventDefault(); setActive((a) => Math.min(a + 1, hits.length - 1)); }
          else if (e.key === "ArrowUp") { e.preventDefault(); setActive((a) => Math.max(a - 1, 0)); }
          else if (e.key === "Enter") {
            // From the input's value now, not the last render's hits: Enter can beat the re-render.
            e.preventDefault();
            const now = find(e.currentTarget.value);
            pick(now[Math.min(active, now.length - 1)] ?? now[0]);
          }
          else if (e.key === "Escape") { setQ(""); setOpen(false); e.currentTarget.blur(); }
        }} />
      {hits.length > 0 && (
        <ul id="search-hits" role="listbox" class="hits" data-testid="search-results">
          {hits.map((h, i) => (
            <li key={`${h.type}:${h.id}`} role="option" aria-selected={i === active} class={i === active ? "active" : undefined}
              data-testid="search-hit" data-type={h.type} data-id={h.id}
              onMouseDown={(e) => { e.preventDefault(); pick(h); }}>
              <span class="kind">{h.type}</span> <b>{h.label}</b> <span class="muted">{h.detail}</span>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

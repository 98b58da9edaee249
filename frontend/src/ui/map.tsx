// The world map: land from world-atlas (bundled, no network), PoP markers at their lat/lon, and three
// toggleable layers (DNS answers per region, anycast catchments, per-PoP donut of backend states).

import { geoDistance, geoNaturalEarth1, geoPath, type GeoProjection } from "d3-geo";
import { geoVoronoi } from "d3-geo-voronoi";
import { memo } from "preact/compat";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { feature, mesh } from "topojson-client";
import type { GeometryCollection, Topology as TopoJSON } from "topojson-specification";
import world from "world-atlas/countries-110m.json";
import type { AnycastResponse, Applied, DnsAnswers, PoP } from "../api";
import { shallow, SLICES, store, useStore, useTables } from "../store";
import { popTrouble } from "./applied";
import { colourOf, symbolOf } from "./common";

export type Layer = "dns" | "anycast" | "local";

const topo = world as unknown as TopoJSON<{ countries: GeometryCollection }>;
const land = feature(topo, topo.objects.countries);
const borders = mesh(topo, topo.objects.countries, (a, b) => a !== b);

function useSize(ref: { current: Element | null }): { w: number; h: number } {
  const [size, setSize] = useState({ w: 800, h: 420 });
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const ro = new ResizeObserver((entries) => {
      const r = entries[0]?.contentRect;
      if (r && r.width > 0 && r.height > 0) setSize({ w: Math.round(r.width), h: Math.round(r.height) });
    });
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  return size;
}

// "degraded" is in the one state table (steering/choices.py), like every other state.
function markerColour(health: string): string {
  return colourOf(health);
}

function markerSymbol(health: string): string {
  return symbolOf(health);
}

interface MarkerProps {
  pop: PoP; x: number; y: number; selected: boolean;
  anycastMismatch: boolean; onSelect: (id: number) => void;
  /** A layer of this PoP whose data plane does not run the desired version (its words), if any. */
  notApplied: string | undefined;
}

/** Backends of a PoP that live traffic took out (outlier ejection), counted from the topology. */
function ejectedIn(popId: number): number {
  const now = store.now();
  let n = 0;
  for (const b of store.backendsOfPop(popId)) {
    if (b.ejected_at && b.ejected_until && Date.parse(b.ejected_until) > now) n += 1;
  }
  return n;
}

/** One PoP: a dot in its health colour with its symbol and, when not ready, its admin symbol.
 * Re-rendered when its PoP's tallies, highlight or ejections change (its own subscription), or
 * when the map moves it. */
const Marker = memo(function Marker(p: MarkerProps) {
  const { pop } = p;
  const { summary, flash, ejected } = useStore((s) => ({
    summary: s.summary(pop.id), flash: s.isFlashing(`pop:${pop.id}`), ejected: ejectedIn(pop.id),
  }), shallow);
  const admin = pop.admin_state;
  const title = `${pop.name} (${pop.slug}) · ${summary.health} · ${admin} · anycast ${pop.announce} · ` +
    `${summary.counts.up} up, ${summary.counts.down} down of ${summary.total} backends` +
    (ejected ? ` · ${ejected} ejected by live traffic` : "") + (p.notApplied ? ` · ✗ ${p.notApplied}` : "");
  return (
    <g class={`pop-marker${p.selected ? " selected" : ""}${flash ? " flash-svg" : ""}`} data-testid="pop-marker"
      data-pop={pop.slug} data-health={summary.health} data-admin-state={admin} data-ejected={ejected || undefined}
      data-not-applied={p.notApplied ? "true" : undefined}
      transform={`translate(${p.x},${p.y})`}
      // Lower-case on purpose: SVG keeps an attribute's case, and only "tabindex" makes a <g> focusable.
      tabindex={0} role="button" aria-label={title} aria-pressed={p.selected}
      onClick={() => p.onSelect(pop.id)}
      onKeyDown={(e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); p.onSelect(pop.id); } }}>
      <title>{title}</title>
      <circle r={p.selected ? 7 : 5.5} fill={markerColour(summary.health)}
        stroke={admin === "ready" ? "#0b0e13" : colourOf(admin)} stroke-width={admin === "ready" ? 1.5 : 2.5}
        stroke-dasharray={admin === "draining" ? "2 1.5" : undefined} />
      {p.anycastMismatch && <circle r={10} fill="none" stroke={colourOf("stale")} stroke-width={1.5} stroke-dasharray="3 2" />}
      {ejected > 0 && <circle r={p.selected ? 9.5 : 8} fill="none" stroke={colourOf("ejected")} stroke-width={1.8}
        stroke-dasharray="1.5 1.5" data-testid="ejected-ring" />}
      {p.notApplied && <text x={-3} y={-8} class="not-applied" fill={colourOf("behind")} data-testid="not-applied">✗</text>}
    </g>
  );
}, (a, b) => a.x === b.x && a.y === b.y && a.selected === b.selected && a.anycastMismatch === b.anycastMismatch &&
  a.pop === b.pop && a.notApplied === b.notApplied);

/** The PoP's slug with its health symbol and, when not ready / withdrawn, those symbols too. Drawn
 * under the markers and not clickable, so a label never hides another PoP's marker. */
const Label = memo(function Label({ pop, x, y, health }: { pop: PoP; x: number; y: number; health: string }) {
  const ejected = useStore(() => ejectedIn(pop.id));
  const admin = pop.admin_state;
  return (
    <text x={x + 9} y={y + 4} class="pop-label" data-pop={pop.slug}>
      {pop.slug} <tspan fill={markerColour(health)}>{markerSymbol(health)}</tspan>
      {admin !== "ready" && <tspan fill={colourOf(admin)}> {symbolOf(admin)}</tspan>}
      {pop.announce === "withdraw" && <tspan fill={colourOf("withdraw")}> {symbolOf("withdraw")}</tspan>}
      {ejected > 0 && <tspan fill={colourOf("ejected")}> {symbolOf("ejected")}{ejected}</tspan>}
    </text>
  );
}, (a, b) => a.pop === b.pop && a.x === b.x && a.y === b.y && a.health === b.health);

/** The labels that fit, placed again when a PoP's health (so the order) changes. */
function Labels({ pops, pt, selected }: { pops: PoP[]; pt: (lon: number, lat: number) => [number, number]; selected: number | null }) {
  const healths = useStore((s) => pops.map((pop) => s.summary(pop.id).health), shallow);
  const labelled = placeLabels(pops, pt, selected);
  return (
    <g class="labels" aria-hidden="true">
      {pops.map((pop, i) => {
        if (!labelled.has(pop.id)) return null;
        const [x, y] = pt(pop.longitude, pop.latitude);
        return <Label key={pop.id} pop={pop} x={x} y={y} health={healths[i] ?? "unknown"} />;
      })}
    </g>
  );
}

const Donut = memo(function Donut({ popId, x, y }: { popId: number; x: number; y: number }) {
  const summary = useStore((s) => s.summary(popId));
  if (!summary.total) return null;
  const r = 11;
  const c = 2 * Math.PI * r;
  let offset = 0;
  return (
    <g class="donut" data-testid="donut" data-pop-id={popId} transform={`translate(${x},${y})`}
      data-slices={SLICES.filter((k) => summary.counts[k]).map((k) => `${k}:${summary.counts[k]}`).join(" ")}>
      {SLICES.map((k) => {
        const n = summary.counts[k];
        if (!n) return null;
        const len = (n / summary.total) * c;
        const seg = <circle key={k} r={r} fill="none" stroke={colourOf(k)} stroke-width={4}
          stroke-dasharray={`${len} ${c - len}`} stroke-dashoffset={-offset} transform="rotate(-90)" />;
        offset += len;
        return seg;
      })}
    </g>
  );
});

const SEVERITY: Record<string, number> = { down: 0, degraded: 1, stale: 2, unknown: 3, up: 4 };

/** Greedy label placement: the selected PoP first, then the least healthy; a label that would
 * overlap one already placed is left out (its marker still has a tooltip and an aria-label). */
function placeLabels(pops: PoP[], pt: (lon: number, lat: number) => [number, number], selected: number | null): Set<number> {
  const order = [...pops].sort((a, b) => (a.id === selected ? -1 : b.id === selected ? 1 : 0) ||
    (SEVERITY[store.summary(a.id).health] ?? 5) - (SEVERITY[store.summary(b.id).health] ?? 5) || a.slug.localeCompare(b.slug));
  const boxes: [number, number, number, number][] = [];
  const out = new Set<number>();
  for (const p of order) {
    const [x, y] = pt(p.longitude, p.latitude);
    const box: [number, number, number, number] = [x + 7, y - 9, x + 12 + 7 * (p.slug.length + 3), y + 6];
    if (boxes.some((b) => box[0] < b[2] && box[2] > b[0] && box[1] < b[3] && box[3] > b[1])) continue;
    boxes.push(box);
    out.add(p.id);
    if (out.size >= 120) break;
  }
  return out;
}

function fitFleet(w: number, h: number, bottom: number): GeoProjection {
  const proj = geoNaturalEarth1();
  const pts = [...store.t.pops.values(), ...store.t.regions.values()].map((p) => [p.longitude, p.latitude] as [number, number]);
  if (pts.length === 0) return proj.fitExtent([[6, 6], [w - 6, h - bottom]], { type: "Sphere" });
  const lons = pts.map((p) => p[0]), lats = pts.map((p) => p[1]);
  // At least 60° of longitude and 35° of latitude, centred on the fleet.
  const cx = (Math.min(...lons) + Math.max(...lons)) / 2, cy = (Math.min(...lats) + Math.max(...lats)) / 2;
  const dx = Math.max(60, Math.max(...lons) - Math.min(...lons) + 36) / 2, dy = Math.max(35, Math.max(...lats) - Math.min(...lats) + 16) / 2;
  const [x0, x1, y0, y1] = [Math.max(-180, cx - dx), Math.min(180, cx + dx), Math.max(-85, cy - dy), Math.min(85, cy + dy)];
  // The box's edges as points: meridians curve in this projection, so the corners alone do not bound it.
  const coordinates: [number, number][] = [];
  for (let i = 0; i <= 12; i++) {
    const lon = x0 + ((x1 - x0) * i) / 12, lat = y0 + ((y1 - y0) * i) / 12;
    coordinates.push([lon, y0], [lon, y1], [x0, lat], [x1, lat]);
  }
  return proj.fitExtent([[10, 16], [w - 10, h - bottom]], { type: "MultiPoint", coordinates });
}

export interface MapProps {
  layers: Record<Layer, boolean>;
  selectedPop: number | null;
  onSelectPop: (id: number) => void;
  dnsService: number | null;
  dns: DnsAnswers | undefined;
  anycastPrefix: number | null;
  anycast: AnycastResponse | undefined;
  /** Desired vs applied per PoP and layer (GET /api/v1/dataplanes/ → applied). */
  applied: Applied | undefined;
}

/** Re-rendered when a PoP or region itself changes (position, admin state, announce) or the view
 * does; a backend's change re-renders only its PoP's marker, donut and label. */
export function WorldMap(props: MapProps) {
  useTables("pops", "regions");
  const box = useRef<HTMLDivElement>(null);
  const { w, h } = useSize(box);
  // Fit the fleet (PoPs and regions) with a margin, never closer than a continent: a fleet on one
  // continent is not drawn as dots on a whole world.
  const extentKey = [...store.t.pops.values()].map((p) => `${p.longitude},${p.latitude}`).join(";");
  // Room at the bottom for the legend rows of the layers that are on.
  const bottom = 12 + 26 * (Number(props.layers.dns) + Number(props.layers.anycast) * 1.6 + Number(props.layers.local));
  // Zoom and pan: k·p + d over the fitted projection (wheel at the cursor, drag the background, buttons).
  const [zoom, setZoom] = useState({ k: 1, dx: 0, dy: 0 });
  const projection: GeoProjection = useMemo(() => {
    const proj = fitFleet(w, h, bottom);
    const [tx, ty] = proj.translate();
    return proj.scale(proj.scale() * zoom.k).translate([tx * zoom.k + zoom.dx, ty * zoom.k + zoom.dy]);
  }, [w, h, extentKey, bottom, zoom]);
  const zoomAt = (mx: number, my: number, factor: number) => setZoom((z) => {
    const k = Math.min(40, Math.max(1, z.k * factor));
    if (k === 1) return { k: 1, dx: 0, dy: 0 };
    return { k, dx: mx - (k * (mx - z.dx)) / z.k, dy: my - (k * (my - z.dy)) / z.k };
  });
  const drag = useRef<{ x: number; y: number; moved: boolean } | null>(null);
  const path = useMemo(() => geoPath(projection), [projection]);
  const landPath = useMemo(() => path(land) ?? "", [path]);
  const borderPath = useMemo(() => path(borders) ?? "", [path]);
  const spherePath = useMemo(() => path({ type: "Sphere" }) ?? "", [path]);

  const pops = [...store.t.pops.values()];
  const pt = (lon: number, lat: number): [number, number] => projection([lon, lat]) ?? [-100, -100];
  return (
    <div class="map-box" ref={box}>
      <svg data-testid="map" width={w} height={h} viewBox={`0 0 ${w} ${h}`} role="img" aria-label="World map of regions and PoPs"
        class={drag.current ? "dragging" : undefined}
        onWheel={(e) => {
          e.preventDefault();
          const r = e.currentTarget.getBoundingClientRect();
          zoomAt(e.clientX - r.left, e.clientY - r.top, e.deltaY < 0 ? 1.25 : 0.8);
        }}
        onPointerDown={(e) => {
          if ((e.target as Element).closest(".pop-marker") || e.button !== 0) return;
          drag.current = { x: e.clientX, y: e.clientY, moved: false };
          e.currentTarget.setPointerCapture(e.pointerId);
        }}
        onPointerMove={(e) => {
          const d = drag.current;
          if (!d) return;
          const mx = e.clientX - d.x, my = e.clientY - d.y;
          if (Math.abs(mx) + Math.abs(my) < 2) return;
          drag.current = { x: e.clientX, y: e.clientY, moved: true };
          setZoom((z) => ({ ...z, dx: z.dx + mx, dy: z.dy + my }));
        }}
        onPointerUp={() => { drag.current = null; }}
        onPointerCancel={() => { drag.current = null; }}>
        <path d={spherePath} class="sphere" />
        <path d={landPath} class="land" />
        <path d={borderPath} class="borders" />
        {props.layers.anycast && <AnycastLayer path={path} pt={pt} prefixId={props.anycastPrefix} anycast={props.anycast} />}
        {props.layers.dns && <DnsLayer pt={pt} serviceId={props.dnsService} dns={props.dns} />}
        {props.layers.local && (
          <g data-testid="layer" data-layer="local" class="layer-local" aria-hidden="true">
            {pops.map((pop) => {
              const [x, y] = pt(pop.longitude, pop.latitude);
              return <Donut key={pop.id} popId={pop.id} x={x} y={y} />;
            })}
          </g>
        )}
        <Labels pops={pops} pt={pt} selected={props.selectedPop} />
        <g class="pops">
          {pops.map((pop) => {
            const [x, y] = pt(pop.longitude, pop.latitude);
            const sel = props.selectedPop === pop.id;
            return <Marker key={pop.id} pop={pop} x={x} y={y} selected={sel}
              anycastMismatch={props.layers.anycast && mismatch(pop, props.anycast)} onSelect={props.onSelectPop}
              notApplied={popTrouble(props.applied, pop.slug)?.detail} />;
          })}
        </g>
      </svg>
      <div class="zoom" role="group" aria-label="Map zoom">
        <button type="button" onClick={() => zoomAt(w / 2, h / 2, 1.5)} aria-label="Zoom in" title="Zoom in (or scroll on the map)">+</button>
        <button type="button" onClick={() => zoomAt(w / 2, h / 2, 1 / 1.5)} aria-label="Zoom out" title="Zoom out">−</button>
        <button type="button" onClick={() => setZoom({ k: 1, dx: 0, dy: 0 })} aria-label="Fit the fleet" title="Fit the fleet"
          disabled={zoom.k === 1 && zoom.dx === 0 && zoom.dy === 0}>⤢</button>
      </div>
    </div>
  );
}

/** The agent reports routes that differ from what the control plane wants. */
function mismatch(pop: PoP, anycast: AnycastResponse | undefined): boolean {
  const a = anycast?.pops[String(pop.id)];
  if (!a || a.agent === "absent") return false;
  const d = [...a.desired].sort().join(",");
  const o = [...a.observed].sort().join(",");
  return d !== o;
}

function DnsLayer({ pt, serviceId, dns }: { pt: (lon: number, lat: number) => [number, number]; serviceId: number | null; dns: DnsAnswers | undefined }) {
  useTables("services", "vips", "regions", "pops");
  const service = serviceId === null ? undefined : store.t.services.get(serviceId);
  if (!service) return <g data-testid="layer" data-layer="dns" />;
  const vips = [...store.t.vips.values()].filter((v) => v.service_id === service.id && v.enabled);
  const byRegion = new Map<number, number>();
  for (const v of vips) byRegion.set(v.region_id, (byRegion.get(v.region_id) ?? 0) + v.weight);
  const total = [...byRegion.values()].reduce((a, b) => a + b, 0);
  const live = dns?.connected ? dns.services[String(service.id)] : undefined;
  return (
    <g data-testid="layer" data-layer="dns" class="layer-dns">
      {[...byRegion.entries()].map(([regionId, weight]) => {
        const region = store.t.regions.get(regionId);
        if (!region) return null;
        const [x, y] = pt(region.longitude, region.latitude);
        const share = total > 0 ? weight / total : 0;
        const liveShare = live?.regions[String(regionId)]?.share;
        const r = 10 + 26 * Math.sqrt(share);
        // Lines to the region's PoPs: where the region's answers send clients.
        const popIds = [...(store.popsByRegion.get(regionId) ?? [])];
        return (
          <g key={regionId} data-region={region.slug}>
            {popIds.map((pid) => {
              const p = store.t.pops.get(pid);
              if (!p) return null;
              const [px, py] = pt(p.longitude, p.latitude);
              return <line key={pid} x1={x} y1={y} x2={px} y2={py} class="dns-link" />;
            })}
            <circle cx={x} cy={y} r={r} class="dns-bubble" />
            {liveShare !== undefined && <circle cx={x} cy={y} r={10 + 26 * Math.sqrt(liveShare)} class="dns-live" />}
            <text x={x} y={y - r - 4} class="dns-label" text-anchor="middle">
              {region.slug}: w{weight} · {Math.round(share * 100)}% cfg{liveShare !== undefined ? ` · ${Math.round(liveShare * 100)}% live` : ""}
            </text>
          </g>
        );
      })}
    </g>
  );
}

const CELL_HUES = [210, 150, 40, 280, 0, 100, 320, 180, 60, 240];

function AnycastLayer({ path, pt, prefixId, anycast }: {
  path: ReturnType<typeof geoPath>; pt: (lon: number, lat: number) => [number, number]; prefixId: number | null; anycast: AnycastResponse | undefined;
}) {
  useTables("prefixes", "pops", "client_networks", "regions");
  const prefix = prefixId === null ? undefined : store.t.prefixes.get(prefixId);
  // Desired: the control plane's choice (PoP.announce, refined by the anycast API when present).
  const announcing = [...store.t.pops.values()].filter((p) => {
    const a = anycast?.pops[String(p.id)];
    if (a && prefix) return a.desired.includes(prefix.prefix);
    return p.announce === "announce";
  });
  const cells = useMemo(() => {
    if (announcing.length < 2) return null;
    try {
      return geoVoronoi(announcing.map((p) => [p.longitude, p.latitude])).polygons();
    } catch {
      return null; // degenerate (e.g. identical positions): draw no cells
    }
  }, [announcing.map((p) => p.id).join(",")]);
  const nets = [...store.t.client_networks.values()];
  return (
    <g data-testid="layer" data-layer="anycast" class="layer-anycast">
      {cells?.features.map((f, i) => (
        <path key={i} d={path(f) ?? ""} class="catchment" style={{ fill: `hsla(${CELL_HUES[i % CELL_HUES.length]}, 55%, 55%, .07)` }} />
      ))}
      {nets.map((n) => {
        const region = store.t.regions.get(n.region_id);
        if (!region || announcing.length === 0) return null;
        let best = announcing[0]!;
        let bestD = Infinity;
        for (const p of announcing) {
          const d = geoDistance([region.longitude, region.latitude], [p.longitude, p.latitude]);
          if (d < bestD) { bestD = d; best = p; }
        }
        const [x1, y1] = pt(region.longitude, region.latitude);
        const [x2, y2] = pt(best.longitude, best.latitude);
        return (
          <g key={n.id}>
            <line x1={x1} y1={y1} x2={x2} y2={y2} class="catch-link"><title>{`${n.cidr} (${n.description}) → ${best.slug}`}</title></line>
            <rect x={x1 - 3} y={y1 - 3} width={6} height={6} class="client-net" />
          </g>
        );
      })}
    </g>
  );
}

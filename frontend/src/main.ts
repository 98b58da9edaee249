// Wiring: who am I, the topology snapshot, the live feed, and re-rendering once per frame.

import "./style.css";
import { AuthError, DELTA_KEYS, csrfToken, getMe, getTopology, type Delta, type Topology } from "./api";
import { startLive, type ConnState } from "./live";
import { FLASH_MS, h, renderDashboard, type View } from "./render";

const $ = (id: string): HTMLElement => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from index.html`);
  return el;
};
const app = $("app");
const banner = $("banner");

let topology: Topology | null = null;
const view: View = { expanded: new Set(), changed: new Map() };

// --- banner ---------------------------------------------------------------------------
type BannerKind = "auth" | "conn" | "error";
let bannerKind: BannerKind | null = null;

function showBanner(kind: BannerKind, ...content: (Node | string)[]): void {
  if (bannerKind === "auth" && kind !== "auth") return; // the sign-in message wins
  bannerKind = kind;
  banner.className = `banner ${kind}`;
  banner.replaceChildren(...content);
  banner.hidden = false;
}
function clearBanner(kind: BannerKind): void {
  if (bannerKind !== kind) return;
  bannerKind = null;
  banner.hidden = true;
}
function showAuth(status: number): void {
  const why = status === 401 ? "You are not signed in, or your session has expired." : "Your account may not view this (HTTP 403).";
  showBanner("auth", `${why} `, h("a", { href: `/accounts/login/?next=${encodeURIComponent(location.pathname)}` }, "Sign in"));
}
function showError(err: unknown): void {
  if (err instanceof AuthError) showAuth(err.status);
  else showBanner("error", `Could not load data: ${err instanceof Error ? err.message : String(err)}. Retrying.`);
}

// --- rendering, coalesced to one per frame -------------------------------------------
let frame = 0;
function scheduleRender(): void {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    if (!topology) return;
    const focused = (document.activeElement as HTMLElement | null)?.dataset["key"];
    renderDashboard(app, topology, view);
    if (focused) app.querySelector<HTMLElement>(`[data-key="${CSS.escape(focused)}"]`)?.focus({ preventScroll: true });
    $("version").textContent = `v${topology.version}`;
  });
}
// Re-render once the highlights have run out, so finished rows drop their class.
function expireFlashes(): void {
  const now = performance.now();
  for (const [key, at] of view.changed) if (now - at >= FLASH_MS) view.changed.delete(key);
}

// --- data -----------------------------------------------------------------------------
async function load(): Promise<void> {
  try {
    topology = await getTopology();
    clearBanner("error");
    clearBanner("auth");
    scheduleRender();
  } catch (err) {
    showError(err);
    throw err;
  }
}

function markChanged(type: string, id: number, now: number): void {
  view.changed.set(`${type}:${id}`, now);
  if (!topology) return;
  // A backend or pool change alters its PoP's counts: highlight the PoP row too.
  const poolId = type === "backend" ? topology.backends.find((b) => b.id === id)?.pool_id : type === "pool" ? id : undefined;
  const pool = poolId === undefined ? undefined : topology.pools.find((p) => p.id === poolId);
  if (pool) view.changed.set(`pop:${pool.pop_id}`, now);
}

function apply(delta: Delta): void {
  if (!topology) return;
  const now = performance.now();
  for (const change of delta.changes) {
    const key = DELTA_KEYS[change.type];
    if (!key) continue; // a type this page does not know yet
    const list = topology[key] as { id: number }[];
    const at = list.findIndex((o) => o.id === change.id);
    if (change.op === "delete") {
      markChanged(change.type, change.id, now); // before removal, to find its PoP
      if (at >= 0) list.splice(at, 1);
    } else {
      if (at >= 0) list[at] = change.data; else list.push(change.data);
      markChanged(change.type, change.id, now);
    }
  }
  topology.version = delta.version;
  scheduleRender();
  window.setTimeout(() => { expireFlashes(); scheduleRender(); }, FLASH_MS + 50);
}

function setStatus(state: ConnState): void {
  const text = { connecting: "◌ connecting…", live: "● live", disconnected: "○ disconnected" }[state];
  const conn = $("conn");
  conn.textContent = text;
  conn.dataset["state"] = state;
  if (state === "disconnected") showBanner("conn", "Live feed disconnected — reconnecting. The figures below may be out of date.");
  if (state === "live") clearBanner("conn");
}

// --- interaction ------------------------------------------------------------------------
function toggle(target: EventTarget | null): void {
  const row = (target as HTMLElement | null)?.closest<HTMLElement>("tr.pop");
  const id = Number(row?.dataset["pop"]);
  if (!row || !Number.isFinite(id)) return;
  if (!view.expanded.delete(id)) view.expanded.add(id);
  scheduleRender();
}
app.addEventListener("click", (ev) => toggle(ev.target));
app.addEventListener("keydown", (ev) => {
  if ((ev.key === "Enter" || ev.key === " ") && (ev.target as HTMLElement).matches("tr.pop")) {
    ev.preventDefault();
    toggle(ev.target);
  }
});

// --- start ------------------------------------------------------------------------------
($("csrf") as HTMLInputElement).value = csrfToken();
getMe().then(
  (me) => $("me").replaceChildren(h("span", null, me.username), " ", h("span", { class: "role" }, me.role ?? "no role")),
  showError,
);
const live = startLive({
  version: () => topology?.version ?? null,
  load,
  apply,
  status: setStatus,
  rejected: () => void getMe().catch(showError),
});
void live.resync();

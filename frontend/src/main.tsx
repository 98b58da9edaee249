// Wiring: who am I, the topology snapshot into the store, the live feed, and the Preact tree.
// Preact (not plain DOM) because the PoP panel, dialogs and timeline are stateful views that are
// re-rendered many times a second; its keyed diff touches only the rows that changed.

import { render } from "preact";
import "./style.css";
import { AuthError, getMe, getTopology, type Observed } from "./api";
import { startLive } from "./live";
import { store } from "./store";
import { App, type Shell } from "./ui/app";

const root = document.getElementById("app");
if (!root) throw new Error("#app missing from index.html");

const shell: Shell = { me: null, conn: "connecting", banner: null, observed: new Map() };
const draw = (): void => render(<App shell={{ ...shell }} />, root);

function showError(err: unknown): void {
  if (err instanceof AuthError) {
    shell.banner = {
      kind: "auth",
      text: err.status === 401 ? "You are not signed in, or your session has expired." : "Your account may not view this (HTTP 403).",
      link: { href: `/accounts/login/?next=${encodeURIComponent(location.pathname)}`, text: "Sign in" },
    };
  } else {
    shell.banner = { kind: "error", text: `Could not load data: ${err instanceof Error ? err.message : String(err)}. Retrying.` };
  }
  draw();
}

async function load(): Promise<void> {
  try {
    performance.mark("steering:topology-request");
    const topo = await getTopology();
    performance.mark("steering:topology-received");
    store.load(topo);
    performance.mark("steering:topology-indexed");
    if (shell.banner && shell.banner.kind !== "conn") { shell.banner = null; draw(); }
  } catch (err) {
    showError(err);
    throw err;
  }
}

getMe().then((me) => { shell.me = me; draw(); }, showError);
const live = startLive({
  version: () => store.version,
  load,
  apply: (d) => store.apply(d),
  observed: (m: Observed) => {
    if (m.layer === "anycast" && typeof m.pop === "number") { shell.observed.set(m.pop, m); draw(); }
  },
  status: (state) => {
    shell.conn = state;
    if (state === "offline" && (!shell.banner || shell.banner.kind === "conn")) {
      shell.banner = { kind: "conn", text: "Live feed lost: reconnecting. The figures shown may be out of date." };
    }
    if (state === "live" && shell.banner?.kind === "conn") shell.banner = null;
    draw();
  },
  rejected: () => void getMe().then((me) => { shell.me = me; }, showError),
});
// Fetch the snapshot at once, in parallel with the socket's handshake (the hello then only
// triggers a refetch if the snapshot turns out older than the feed).
void live.resync();
draw();

// Wiring: who am I, the topology snapshot into the store, the live feed, and the Preact tree.
// Preact (not plain DOM) because the PoP panel, dialogs and timeline are stateful views that are
// re-rendered many times a second; its keyed diff touches only the rows that changed.
// Everything that changes goes into the one store (store.ts); the tree is rendered once, and each
// component re-renders when the slice of the store it reads changes.

import { render } from "preact";
import "./style.css";
import { AuthError, getMe, getTopology } from "./api";
import { startLive } from "./live";
import { replay } from "./replay";
import { store } from "./store";
import { App } from "./ui/app";

const root = document.getElementById("app");
if (!root) throw new Error("#app missing from index.html");

function showError(err: unknown): void {
  if (err instanceof AuthError) {
    store.setShell({ banner: {
      kind: "auth",
      text: err.status === 401 ? "You are not signed in, or your session has expired." : "Your account may not view this (HTTP 403).",
      link: { href: `/accounts/login/?next=${encodeURIComponent(location.pathname)}`, text: "Sign in" },
    } });
  } else {
    store.setShell({ banner: { kind: "error", text: `Could not load data: ${err instanceof Error ? err.message : String(err)}. Retrying.` } });
  }
}

async function load(): Promise<void> {
  try {
    performance.mark("steering:topology-request");
    const topo = await getTopology();
    performance.mark("steering:topology-received");
    replay.noteServerTime(topo.generated_at);
    if (replay.state.active) return; // a replay began meanwhile: its picture stays
    store.load(topo);
    performance.mark("steering:topology-indexed");
    const { banner } = store.shell;
    if (banner && banner.kind !== "conn") store.setShell({ banner: null });
  } catch (err) {
    showError(err);
    throw err;
  }
}

getMe().then((me) => store.setShell({ me }), showError);
const live = startLive({
  // While a replay is on, the picture is of the past: no delta applies to it and no resync
  // replaces it (version null makes the feed ask for a load, which does nothing then).
  version: () => (replay.state.active ? null : store.version),
  load: () => (replay.state.active ? Promise.resolve() : load()),
  apply: (d) => store.apply(d),
  observed: (m) => store.observe(m),
  status: (conn) => {
    let { banner } = store.shell;
    if (conn === "offline" && (!banner || banner.kind === "conn")) {
      banner = { kind: "conn", text: "Live feed lost: reconnecting. The figures shown may be out of date." };
    }
    if (conn === "live" && banner?.kind === "conn") banner = null;
    store.setShell({ conn, banner });
  },
  rejected: () => void getMe().then((me) => store.setShell({ me }), showError),
});
// Fetch the snapshot at once, in parallel with the socket's handshake (the hello then only
// triggers a refetch if the snapshot turns out older than the feed).
void live.resync();
replay.onExit = () => { store.version = null; void live.resync(); };
render(<App />, root);

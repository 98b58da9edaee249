// Replay on screen: the header's button, the banner with its controls (window, play/pause, speed,
// a scrubber with a tick per change), and the window's changes in step with the clock. The
// controller is replay.ts; the map and the panels read the replayed picture from the store.

import { memo } from "preact/compat";
import { useEffect, useRef, useState } from "preact/hooks";
import type { ChangeEntry } from "../api";
import { replay, SPEEDS, useReplay } from "../replay";
import { ChangeLine } from "./timeline";

const pad = (n: number) => String(n).padStart(2, "0");

/** hh:mm:ss of `t` in the browser's time zone, as the timeline shows times. */
export function hms(t: number): string {
  const d = new Date(t);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A datetime-local input's value (to the second) for `t`. */
function localSeconds(t: number): string {
  const d = new Date(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${hms(t)}`;
}

export function ReplayButton() {
  const active = useReplay((s) => s.active);
  if (active) return null;
  return (
    <button class="replay-open" data-testid="replay-open" title="Play a past window on the map, with its changes in step (postmortems)"
      onClick={() => replay.open()}>◷ Replay</button>
  );
}

/** The banner: never mistaken for live (its own colour, REPLAY and the clock), with the controls. */
export function ReplayBar() {
  const s = useReplay((st) => st);
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  // The pickers follow the window (the history's start may move it); edits apply on "Show".
  useEffect(() => { if (s.active) { setFrom(localSeconds(s.start)); setTo(localSeconds(s.end)); } }, [s.active, s.start, s.end]);
  useEffect(() => {
    if (!s.active) return;
    const title = document.title;
    document.title = `REPLAY ${hms(s.clock)} · ${title}`;
    return () => { document.title = title; };
  }, [s.active, Math.floor(s.clock / 1000)]);
  if (!s.active) return null;
  const span = Math.max(1, s.end - s.start);
  const apply = (e: Event) => {
    e.preventDefault();
    const a = Date.parse(from), b = Math.min(Date.parse(to), replay.serverNow());
    if (a < b) replay.setWindow(a, b);
  };
  return (
    <section class="replay-bar" data-testid="replay-banner" data-playing={String(s.playing)}
      data-picture={s.picture?.at ?? ""} aria-label="Replay of the past">
      <div class="replay-row">
        <strong class="replay-clock" role="timer" aria-live="off">
          REPLAY <span data-testid="replay-clock">{hms(s.clock)}</span>
        </strong>
        <span class="muted">{new Date(s.clock).toLocaleDateString()}</span>
        <button data-testid="replay-play" onClick={() => (s.playing ? replay.pause() : replay.play())}
          aria-label={s.playing ? "Pause" : "Play"}>{s.playing ? "❚❚ Pause" : "▶ Play"}</button>
        <label>speed{" "}
          <select data-testid="replay-speed" value={s.speed} onChange={(e) => replay.setSpeed(Number(e.currentTarget.value))}>
            {SPEEDS.map((x) => <option key={x} value={x}>{x}×</option>)}
          </select>
        </label>
        <form class="replay-window" onSubmit={apply}>
          <input type="datetime-local" step={1} data-testid="replay-start" aria-label="Window start" value={from}
            onInput={(e) => setFrom(e.currentTarget.value)} />
          <span aria-hidden="true">→</span>
          <input type="datetime-local" step={1} data-testid="replay-end" aria-label="Window end" value={to}
            onInput={(e) => setTo(e.currentTarget.value)} />
          <button type="submit" data-testid="replay-window" disabled={!(Date.parse(from) < Date.parse(to))}
            title="Replay this window (its start before its end)">Show</button>
        </form>
        <span class="spacer" />
        <span class="muted" data-testid="replay-position">
          {s.loading ? "⟳ loading… · " : ""}{s.passed} of {s.events.length} changes
          {s.picture?.asOf ? ` · as of change #${s.picture.asOf.change_id} (v${s.picture.asOf.version})` : ""}
        </span>
        <button class="primary" data-testid="replay-exit" onClick={() => replay.close()}>Back to live</button>
      </div>
      <div class="replay-scrub">
        <span class="muted">{hms(s.start)}</span>
        <div class="replay-track">
          <Ticks events={s.events} start={s.start} span={span} passed={s.passed} />
          <input type="range" data-testid="replay-scrubber" aria-label="Replay time" min={s.start} max={s.end} step={1000}
            value={s.clock} aria-valuetext={hms(s.clock)}
            onInput={(e) => { replay.pause(); replay.seek(Number(e.currentTarget.value)); }} />
        </div>
        <span class="muted">{hms(s.end)}</span>
      </div>
      {s.note && <div class="replay-note" role="status">{s.note}</div>}
      {s.error && <div class="err" role="alert" data-testid="replay-error">Replay: {s.error}</div>}
    </section>
  );
}

/** A tick on the scrubber per change (drawn again when the clock passes one, not at every tick). */
const Ticks = memo(function Ticks({ events, start, span, passed }: {
  events: ChangeEntry[]; start: number; span: number; passed: number;
}) {
  return (
    <div class="replay-ticks" aria-hidden="true">
      {events.map((c, i) => (
        <span key={c.id} class={i < passed ? "tick passed" : "tick"}
          style={{ left: `${(100 * (Date.parse(c.time) - start)) / span}%` }} />
      ))}
    </div>
  );
});

type Step = "passed" | "current" | "ahead";

/** One change of the window; re-rendered only when the clock moves it from ahead to passed. */
const ReplayEntry = memo(function ReplayEntry({ c, step }: { c: ChangeEntry; step: Step }) {
  return (
    <li data-testid="replay-event" data-change={c.id} data-passed={String(step !== "ahead")}
      data-current={String(step === "current")} class={step === "ahead" ? undefined : step}>
      <button class="entry-line" title="Replay from just after this change"
        onClick={() => { replay.pause(); replay.seek(Date.parse(c.time) + 1); }}>
        <ChangeLine c={c} />
      </button>
    </li>
  );
});

/** The window's changes, oldest first: those the clock has passed are marked, the latest of them
 * is kept in view; picking one moves the clock to it. */
export function ReplayTimeline() {
  const events = useReplay((s) => s.events);
  const passed = useReplay((s) => s.passed);
  const list = useRef<HTMLOListElement>(null);
  useEffect(() => {
    list.current?.querySelector("[data-current=true]")?.scrollIntoView({ block: "nearest" });
  }, [passed]);
  return (
    <section class="timeline replay-timeline" data-testid="replay-timeline" aria-label="Changes in the replayed window">
      <div class="timeline-head">
        <h2>Timeline <span class="muted">replay: {passed} of {events.length} changes passed</span></h2>
      </div>
      <ol class="entries" ref={list}>
        {events.length === 0 && <li class="muted">No changes in this window.</li>}
        {events.map((c, i) => (
          <ReplayEntry key={c.id} c={c} step={i === passed - 1 ? "current" : i < passed ? "passed" : "ahead"} />
        ))}
      </ol>
    </section>
  );
}

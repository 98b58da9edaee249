// Notifications: the webhooks that tell other systems what happens here (admins configure them
// through /api/v1/webhooks/), the latest deliveries with their status, and the dead letters (every
// try failed) with a way to send them again. Operators and admins see it (deliveries are theirs to
// read; the subscriptions, whose URLs can be credentials, are the admins'). The dead letters are
// counted every 30 s so the heading says when something is stuck; the lists load when opened.

import { useState } from "preact/hooks";
import { ApiError, postJSON, type Delivery, type DeliveryPage, type Webhook } from "../api";
import { pollData, usePoll } from "../poll";
import { Badge, clock } from "./common";

interface WebhookPage { results: Webhook[] }

function when(iso: string | null | undefined): string {
  return iso ? new Date(iso).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "—";
}

function host(url: string): string {
  try { return new URL(url).host; } catch { return url; }
}

export function Notifications({ isAdmin }: { isAdmin: boolean }) {
  const [open, setOpen] = useState(false);
  const [tick, setTick] = useState(0); // bumped after an action: the lists reload at once
  const deadCount = usePoll<DeliveryPage>(`/api/v1/webhook-deliveries/?status=dead&page_size=1&r=${tick}`, 30_000);
  const dead = usePoll<DeliveryPage>(open ? `/api/v1/webhook-deliveries/?status=dead&page_size=50&r=${tick}` : null, 10_000);
  const recent = usePoll<DeliveryPage>(open ? `/api/v1/webhook-deliveries/?page_size=20&r=${tick}` : null, 10_000);
  const hooks = usePoll<WebhookPage>(open && isAdmin ? `/api/v1/webhooks/?page_size=100&r=${tick}` : null, 30_000);
  const deadN = pollData(deadCount)?.count ?? 0;
  const [note, setNote] = useState<string | null>(null);
  const act = async (path: string, done: string): Promise<void> => {
    try {
      await postJSON(path, {});
      setNote(done);
    } catch (err) {
      setNote(err instanceof ApiError ? err.message : String(err));
    }
    setTick(tick + 1);
  };
  return (
    <details class="notifications" data-testid="notifications" onToggle={(e) => setOpen(e.currentTarget.open)}>
      <summary><h2>Notifications</h2> <span class={deadN ? "err" : "muted"} data-testid="dead-count">
        {deadCount.kind === "missing" ? "not available" : deadN ? `✗ ${deadN} dead letter${deadN === 1 ? "" : "s"}` : "✓ no dead letters"}</span></summary>
      {note && <p class="muted" role="status" data-testid="notifications-note">{note}</p>}
      {open && isAdmin && <Subscriptions rows={pollData(hooks)?.results} onTest={(h) => void act(`/api/v1/webhooks/${h.id}/test/`, `Test delivery to ${h.name} queued.`)} />}
      {open && (
        <>
          <h3>Dead letters <span class="muted">every try failed; send again once the receiver is fixed</span></h3>
          <DeliveryTable rows={pollData(dead)?.results} testid="dead-letters" empty="No dead letters."
            onRedeliver={(d) => void act(`/api/v1/webhook-deliveries/${d.id}/redeliver/`, `Delivery #${d.id} queued again.`)} />
          <h3>Recent deliveries</h3>
          <DeliveryTable rows={pollData(recent)?.results} testid="deliveries" empty="Nothing sent yet." />
        </>
      )}
    </details>
  );
}

function Subscriptions({ rows, onTest }: { rows: Webhook[] | undefined; onTest: (h: Webhook) => void }) {
  return (
    <>
      <h3>Webhooks <span class="muted">signed with HMAC-SHA256; configured through /api/v1/webhooks/</span></h3>
      {!rows ? <p class="muted">Loading…</p> : rows.length === 0 ? <p class="muted">No webhooks configured.</p> : (
        <table class="webhooks" data-testid="webhooks">
          <thead><tr><th scope="col">name</th><th scope="col">receiver</th><th scope="col">format</th><th scope="col">events</th><th scope="col">regions · services</th><th scope="col" /></tr></thead>
          <tbody>
            {rows.map((h) => (
              <tr key={h.id} data-testid="webhook" data-name={h.name}>
                <td><b>{h.name}</b>{!h.enabled && <span class="muted"> (disabled)</span>}</td>
                <td class="mono" title={h.url}>{host(h.url)}</td>
                <td>{h.format}</td>
                <td>{h.events?.length ? h.events.join(", ") : "all"}</td>
                <td>{[...(h.regions ?? []), ...(h.services ?? [])].join(", ") || "all"}</td>
                <td><button class="small" data-testid="webhook-test" onClick={() => onTest(h)}>Send test</button></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

function DeliveryTable({ rows, testid, empty, onRedeliver }: {
  rows: Delivery[] | undefined; testid: string; empty: string; onRedeliver?: (d: Delivery) => void;
}) {
  if (!rows) return <p class="muted">Loading…</p>;
  if (rows.length === 0) return <p class="muted" data-testid={`${testid}-empty`}>{empty}</p>;
  return (
    <table class="deliveries" data-testid={testid}>
      <thead><tr><th scope="col">created</th><th scope="col">webhook</th><th scope="col">event</th><th scope="col">status</th>
        <th class="num" scope="col">tries</th><th scope="col">last answer</th>{onRedeliver && <th scope="col" />}</tr></thead>
      <tbody>
        {rows.map((d) => (
          <tr key={d.id} data-testid="delivery" data-delivery={d.id} data-status={d.status}>
            <td title={when(d.created_at)}>{clock(d.created_at)}</td>
            <td>{d.subscription_name}</td>
            <td title={d.summary}><span class="mono">{d.event_type}</span> <span class="muted">{d.summary}</span></td>
            <td title={d.status === "failed" && d.next_attempt_at ? `next try ${when(d.next_attempt_at)}` : undefined}><Badge state={d.status} /></td>
            <td class="num">{d.attempts}</td>
            <td class={d.last_error ? "err" : undefined} title={d.last_error}>{d.last_error || (d.last_status_code ? `HTTP ${d.last_status_code}` : "")}</td>
            {onRedeliver && <td><button class="small" data-testid="redeliver" onClick={() => onRedeliver(d)}>Redeliver</button></td>}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

// The freeze switch: while changes are frozen, everyone sees who froze them and why; an admin can
// freeze or lift it here, with a reason (POST /api/v1/freeze/, audited).

import { useState } from "preact/hooks";
import { ApiError, fieldErrors, postJSON, type Freeze, type Role } from "../api";
import { pollData, usePoll } from "../poll";

/** The switch as the page knows it: polled, or our own switch's answer until the next poll. */
export function useFreeze(): [Freeze | undefined, (f: Freeze) => void] {
  const poll = usePoll<Freeze>("/api/v1/freeze/", 5000);
  const [shown, setShown] = useState<Freeze | null>(null);
  const polled = pollData(poll);
  return [shown && (!polled || shown.revision >= polled.revision) ? shown : polled, setShown];
}

/** The header's button for admins while changes are allowed. */
export function FreezeButton({ state, role, onAsk }: { state: Freeze | undefined; role: Role | null; onAsk: () => void }) {
  if (role !== "admin" || !state || state.frozen) return null;
  return (
    <button class="freeze-open" data-testid="freeze-open" title="Refuse every change but an admin's with a reason"
      onClick={onAsk}>❄ Freeze…</button>
  );
}

export function FreezeBar({ state, setState, role, asking, setAsking }: {
  state: Freeze | undefined; setState: (f: Freeze) => void; role: Role | null; asking: boolean; setAsking: (a: boolean) => void;
}) {
  const [reason, setReason] = useState("");
  const [error, setError] = useState<string | null>(null);
  if (!state) return null;
  const admin = role === "admin";

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      setState(await postJSON<Freeze>("/api/v1/freeze/", { frozen: !state.frozen, reason }));
      setAsking(false);
      setReason("");
    } catch (err) {
      setError(err instanceof ApiError ? (fieldErrors(err).join("; ") || String(err.body["detail"] ?? err.message))
        : err instanceof Error ? err.message : String(err));
    }
  };

  const form = asking && (
    <form class="freeze-form" onSubmit={(e) => void submit(e)}>
      <input data-testid="freeze-reason" value={reason} required maxLength={1000} autoFocus
        placeholder={state.frozen ? "why the freeze can end" : "why nothing may change (shown to everyone refused)"}
        onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
      <button type="submit" data-testid="freeze-submit">{state.frozen ? "Lift the freeze" : "Freeze changes"}</button>
      <button type="button" onClick={() => { setAsking(false); setError(null); }}>Cancel</button>
      {error && <span class="err" role="alert">{error}</span>}
    </form>
  );

  if (!state.frozen) return admin && asking ? <div class="banner freeze-off">{form}</div> : null;
  const since = state.since ? new Date(state.since).toLocaleString() : "?";
  return (
    <div class="banner frozen" role="alert" data-testid="freeze-banner">
      <strong>❄ Changes are frozen</strong> since {since} by {state.by}: {state.reason}.{" "}
      {admin ? "As an admin you can still act, with a reason." : "Only an admin, with a reason, can change anything."}
      {admin && !asking && <button class="freeze-open" data-testid="freeze-open" onClick={() => setAsking(true)}>Lift…</button>}
      {form}
    </div>
  );
}

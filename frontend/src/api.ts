// Fetch helpers and the shapes of the public API objects this page reads (same origin, session cookie).

export interface Me { username: string; role: Role | null; auth: "session" | "token" }
export type Role = "viewer" | "operator" | "admin";

export interface StateStyle { key: string; label: string; symbol: string; colour: string; meaning: string }

export type AdminState = "ready" | "draining" | "drained" | "maint";
export type Health = "unknown" | "up" | "down" | "stale";

interface Row { id: number; revision?: number | null }

export interface Region extends Row { slug: string; name: string; latitude: number; longitude: number; admin_state: AdminState }
export interface PoP extends Row {
  region_id: number; slug: string; name: string; city: string;
  latitude: number; longitude: number; admin_state: AdminState; announce: "announce" | "withdraw"; capacity_rps?: number;
}
export interface Service extends Row {
  slug: string; fqdn: string; port: number; protocol: string; dns_policy: string; ttl: number; anycast_prefix_id: number | null;
}
export interface VIP extends Row {
  service_id: number; region_id: number; address: string; weight: number; priority: number; enabled: boolean;
}
export interface Prefix extends Row { prefix: string; description: string }
export interface ClientNetwork extends Row { cidr: string; region_id: number; description: string }
export interface Pool extends Row {
  pop_id: number; service_id: number; slug: string; mode: string; algorithm: string; in_panic: boolean;
  admin_state: AdminState; backup_pool_id: number | null; default_grace_seconds: number; expected_rps: number;
}
export interface Backend extends Row {
  pool_id: number; name: string; address: string; port: number;
  weight: number; effective_weight: number; effective_weight_reason: string;
  admin_state: AdminState; health: Health; capacity_rps: number; backup: boolean;
  version?: string; operation_id?: number | null; drain_deadline?: string | null; health_changed_at?: string | null;
}
export interface OperationProgress {
  percent?: number; backends_left?: number; backends_total?: number; backends_done?: number;
  seconds_left?: number | null; sessions_left?: number; step?: string | number; steps?: number; weight?: number;
  arriving_rps?: number; unconfirmed?: string[]; dns?: string; anycast?: string;
}
export interface Operation extends Row {
  kind: string; status: "running" | "paused" | "succeeded" | "aborted" | "failed" | "unconfirmed"; target_type: string; target_id: number;
  target_repr: string; progress: OperationProgress; actor_name: string; reason: string; forced?: boolean;
  steps?: { name: string; status: string }[]; deadline?: string | null; created_at?: string; finished_at?: string | null;
}
type Other = Row & Record<string, unknown>;

export interface Topology {
  version: number;
  generated_at: string;
  regions: Region[];
  pops: PoP[];
  services: Service[];
  vips: VIP[];
  prefixes: Prefix[];
  client_networks: ClientNetwork[];
  monitors: Other[];
  pools: Pool[];
  backends: Backend[];
  operations: Operation[];
  states: StateStyle[];
}

/** The topology lists that deltas update, keyed by the delta's `type`. */
export const DELTA_KEYS = {
  region: "regions", pop: "pops", service: "services", vip: "vips", anycastprefix: "prefixes",
  clientnetwork: "client_networks", monitor: "monitors", pool: "pools", backend: "backends", operation: "operations",
} as const;
export type DeltaType = keyof typeof DELTA_KEYS;

export type Change =
  | { op: "upsert"; type: DeltaType; id: number; data: Row & Record<string, unknown> }
  | { op: "delete"; type: DeltaType; id: number };
export interface Hello { type: "hello"; version: number; role: string }
export interface Delta { type: "delta"; version: number; from_version?: number; changes: Change[] }
export interface Observed { type: "observed"; layer: string; pop?: number; desired?: string[]; observed?: string[]; at?: number }

// --- measurements (Redis-backed, polled) -------------------------------------------------
export interface BackendStats { sessions: number; session_rate: number; completion_rate: number; rate_5xx: number; updated_at: number }
export interface StatsResponse { connected: boolean; backends: Record<string, BackendStats> }
export interface DnsAnswers {
  connected: boolean; window_seconds: number;
  services: Record<string, { total: number; qps: number; regions: Record<string, { answers: number; share: number }> }>;
}
export interface AnycastPop {
  desired: string[]; observed: string[]; observed_at: number | null; agent: "connected" | "stale" | "absent"; reason: string;
}
export interface AnycastResponse { pops: Record<string, AnycastPop> }
export interface DataplaneLayer { connected: boolean; detail: string }
/** Desired vs applied for one layer at one PoP (or the DNS layer): GET /api/v1/dataplanes/ → applied. */
export interface LayerApplied {
  layer: "local" | "dns" | "anycast"; pop: string | null; desired_version: number; applied_version: number | null;
  state: "in_sync" | "applying" | "behind" | "refused" | "absent"; lag_seconds: number | null; error: string;
  error_version: number | null; seen_at: number | null; detail: string;
  instances: { instance: string; applied_version: number; seen_at: number | null; error: string }[];
}
export interface Applied { version: number; dns: LayerApplied; pops: Record<string, { local: LayerApplied; anycast: LayerApplied }> }
export interface Dataplanes { local: DataplaneLayer; dns: DataplaneLayer; anycast: DataplaneLayer; applied?: Applied }
export const LAYER_KEYS = ["local", "dns", "anycast"] as const;

export interface Sample { time: number; ok: boolean; latency_ms: number; result: string; detail: string }
export interface Samples {
  backend: number; probed: boolean; health: string;
  counters: { health: string; ok_streak: number; fail_streak: number; rise: number | null; fall: number | null; interval_seconds: number | null; last_result_time: number | null };
  samples: Sample[];
  events: { time: string; from_health: string; to_health: string; evidence: Record<string, unknown> }[];
}

export interface Receiver {
  type: string; id: number; name: string; load_before_rps: number; load_after_rps: number;
  capacity_rps: number | null; headroom_after_percent: number | null; overloaded: boolean;
}
export interface Impact {
  action: string; verdict: "safe" | "overload" | "outage"; safe: boolean; basis: string;
  target: { type: string; id: number; name: string }; backends_affected: number; moved_rps: number; unplaced_rps: number;
  receivers: Receiver[]; notes: string[]; explain: string;
  grace?: { seconds: number; basis: string; derivation: string };
  plan?: { steps: number[]; step_seconds: number };
}

export interface ChangeEntry {
  id: number; time: string; actor_name: string; source: string; action: string; object_type: string; object_id: number;
  object_repr: string; related_repr: string; operation_id: number | null; reason: string; forced: boolean; force_reason: string;
  version: number; before: Record<string, unknown> | null; after: Record<string, unknown> | null;
}
export interface Page<T> { count: number; next: string | null; previous: string | null; results: T[] }

/** 401/403 from the API: the session is gone or the user may not look. */
export class AuthError extends Error {
  constructor(readonly status: number) { super(`HTTP ${status}`); }
}

/** A non-2xx answer with the API's error body ({"code", "detail", "errors"?, "impact"?}). */
export class ApiError extends Error {
  constructor(readonly status: number, readonly body: Record<string, unknown>) {
    super(typeof body["detail"] === "string" ? body["detail"] : `HTTP ${status}`);
  }
  get code(): string { return typeof this.body["code"] === "string" ? this.body["code"] : ""; }
}

async function parse(res: Response): Promise<Record<string, unknown>> {
  try { return (await res.json()) as Record<string, unknown>; } catch { return {}; }
}

export async function getJSON<T>(path: string, signal?: AbortSignal): Promise<T> {
  const init: RequestInit = { headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (signal) init.signal = signal;
  const res = await fetch(path, init);
  if (res.status === 401 || res.status === 403) throw new AuthError(res.status);
  if (!res.ok) throw new ApiError(res.status, await parse(res));
  return (await res.json()) as T;
}

export async function postJSON<T>(path: string, body: unknown): Promise<T> {
  const res = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify(body),
  });
  if (res.status === 401) throw new AuthError(res.status);
  if (!res.ok) throw new ApiError(res.status, await parse(res));
  return (await res.json()) as T;
}

export const getMe = (): Promise<Me> => getJSON<Me>("/api/v1/me/");
export const getTopology = (): Promise<Topology> => getJSON<Topology>("/api/v1/topology/");

export function csrfToken(): string {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]*)/);
  return m?.[1] ? decodeURIComponent(m[1]) : "";
}

/** Field errors of a 400 as "field: message" lines. */
export function fieldErrors(err: ApiError): string[] {
  const errors = err.body["errors"];
  if (!errors || typeof errors !== "object") return [];
  return Object.entries(errors as Record<string, unknown>).map(([k, v]) =>
    `${k === "non_field_errors" ? "" : `${k}: `}${Array.isArray(v) ? v.join(" ") : JSON.stringify(v)}`);
}

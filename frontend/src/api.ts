// Fetch helpers and the shapes of the public API objects this page reads (same origin, session cookie).

export interface Me { username: string; role: string | null; auth: "session" | "token" }

export interface StateStyle { key: string; label: string; symbol: string; colour: string; meaning: string }

export type AdminState = "ready" | "draining" | "drained" | "maint";
export type Health = "unknown" | "up" | "down" | "stale";

interface Row { id: number; revision?: number | null }

export interface Region extends Row { slug: string; name: string; admin_state: AdminState }
export interface PoP extends Row {
  region_id: number; slug: string; name: string; city: string;
  latitude: number; longitude: number; admin_state: AdminState; announce: "announce" | "withdraw";
}
export interface Service extends Row { slug: string; fqdn: string; port: number; protocol: string }
export interface Pool extends Row {
  pop_id: number; service_id: number; slug: string; mode: string; algorithm: string; in_panic: boolean;
}
export interface Backend extends Row {
  pool_id: number; name: string; address: string; port: number;
  weight: number; effective_weight: number; effective_weight_reason: string;
  admin_state: AdminState; health: Health; capacity_rps: number; backup: boolean;
}
export interface OperationProgress { percent?: number; backends_left?: number; seconds_left?: number | null }
export interface Operation extends Row {
  kind: string; status: "running" | "succeeded" | "aborted" | "failed"; target_type: string; target_id: number;
  target_repr: string; progress: OperationProgress; actor_name: string; reason: string;
}

/** Objects this page does not render yet; kept so deltas for them still land in the right list. */
type Other = Row & Record<string, unknown>;

export interface Topology {
  version: number;
  generated_at: string;
  regions: Region[];
  pops: PoP[];
  services: Service[];
  vips: Other[];
  prefixes: Other[];
  client_networks: Other[];
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
export interface Delta { type: "delta"; version: number; changes: Change[] }

/** 401/403 from the API: the session is gone or the user may not look. */
export class AuthError extends Error {
  constructor(readonly status: number) { super(`HTTP ${status}`); }
}

async function getJSON<T>(path: string): Promise<T> {
  const res = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (res.status === 401 || res.status === 403) throw new AuthError(res.status);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return (await res.json()) as T;
}

export const getMe = (): Promise<Me> => getJSON<Me>("/api/v1/me/");
export const getTopology = (): Promise<Topology> => getJSON<Topology>("/api/v1/topology/");

export function csrfToken(): string {
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]*)/);
  return m?.[1] ? decodeURIComponent(m[1]) : "";
}

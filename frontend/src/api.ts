// Fetch helpers and the shapes of the public API objects this page reads (same origin, session cookie).
// The shapes come from the API's OpenAPI schema (generated/openapi.ts: `npm run types`, never by
// hand); what is here only narrows them where the schema says less than the page relies on.

import type { components } from "./generated/openapi";

type Schemas = components["schemas"];
/** `T` with the fields of `N` replaced by `N`'s more precise types. */
type Narrow<T, N extends { [K in keyof T]?: unknown } & Record<string, unknown>> = Omit<T, keyof N> & N;

export type Role = Exclude<Schemas["RoleEnum"], "agent">;
/** GET /api/v1/me/: the role is null for a user without one; `auth` is how this request signed in. */
export type Me = Narrow<Schemas["Me"], { role: Role | null; auth: "session" | "token" }>;

/** One row of the state table (GET /api/v1/states/, and the topology's `states`). */
export type StateStyle = Schemas["State"] & { label: string; symbol: string; meaning: string };

/** GET /api/v1/freeze/: the freeze switch. */
export type Freeze = Schemas["Freeze"];

export type AdminState = Schemas["AdminStateEnum"];
export type Health = Schemas["HealthEnum"];

/** An object as the topology snapshot and live deltas carry it: the model's row, i.e. the API
 * resource's fields, each foreign key under its column's name (`pool` → `pool_id`), every field
 * present, without the timestamps (and without `Skip`, fields the resource computes). */
type TopologyRow<T, FK extends keyof T = never, Skip extends keyof T = never> =
  Required<Omit<T, FK | Skip | "created_at" | "updated_at">> & { readonly [K in FK as `${K & string}_id`]-?: T[K] };

export type Region = TopologyRow<Schemas["Region"]>;
export type PoP = TopologyRow<Schemas["PoP"], "region">;
export type Service = TopologyRow<Schemas["Service"], "anycast_prefix">;
export type VIP = TopologyRow<Schemas["VIP"], "service" | "region">;
export type Prefix = TopologyRow<Schemas["AnycastPrefix"]>;
export type ClientNetwork = TopologyRow<Schemas["ClientNetwork"], "region">;
export type Monitor = TopologyRow<Schemas["Monitor"]>;
export type Pool = TopologyRow<Schemas["Pool"], "pop" | "service" | "monitor" | "backup_pool", "pop_slug">;
export type Backend = TopologyRow<Schemas["Backend"], "pool" | "operation", "path">;
/** Operation.progress: free-form in the schema; the keys the operations list shows. */
export interface OperationProgress {
  percent?: number; backends_left?: number; backends_total?: number; backends_done?: number;
  seconds_left?: number | null; sessions_left?: number; step?: string | number; steps?: number; weight?: number;
  arriving_rps?: number; unconfirmed?: string[]; dns?: string; anycast?: string;
  awaiting?: string[];   // the data planes that have not acknowledged the operation's version yet
}
/** Operation.result: free-form in the schema; the keys that say which data planes confirmed it. */
export interface OperationConfirmation { confirmed?: string[]; unconfirmed?: string[] }
export type Operation = Narrow<TopologyRow<Schemas["Operation"], never, "impact">, {
  progress: OperationProgress; steps: { name: string; status: string }[];
}>;

/** GET /api/v1/fleet/drift/: the schema leaves these parts free-form; the keys the drift view shows. */
export interface FleetChangedBy { change_id: number; time: string; actor: string; source: string; action: string; reason: string }
export type FleetDifference = Narrow<Schemas["FleetDifference"], {
  fields: Record<string, { file: unknown; live: unknown }>; changed_by: FleetChangedBy[];
}>;
export type FleetDrift = Narrow<Schemas["FleetDrift"], {
  operation: { id: number; created_at: string; actor: string; reason: string; file_fingerprint?: string } | null;
  differences: FleetDifference[];
}>;

/** The lists of GET /api/v1/topology/ (the schema leaves them free-form): the rows above. */
interface TopologyLists {
  generated_at: string;
  regions: Region[];
  pops: PoP[];
  services: Service[];
  vips: VIP[];
  prefixes: Prefix[];
  client_networks: ClientNetwork[];
  monitors: Monitor[];
  pools: Pool[];
  backends: Backend[];
  operations: Operation[];
  states: StateStyle[];
}
/** GET /api/v1/topology/: the live picture, with the version the live feed's deltas continue from. */
export type Topology = Narrow<Schemas["Topology"], { version: number }> & TopologyLists;
/** GET /api/v1/topology/?at=: the fleet as it was then, rebuilt from the audit log. No version:
 * no delta continues it. `as_of` is the last change it includes (null: before any). */
export type PastTopology = Narrow<Schemas["Topology"], {
  version?: undefined; replayed: true; at: string; history_starts: string; as_of: Schemas["AsOf"] | null; undone: number;
}> & TopologyLists;

/** Webhooks (admins) and their deliveries (operators): GET /api/v1/webhooks/, /api/v1/webhook-deliveries/. */
export type Webhook = Schemas["Webhook"];
export type Delivery = Narrow<Schemas["Delivery"], { payload: Record<string, unknown> }>;
export type DeliveryPage = Narrow<Schemas["PaginatedDeliveryList"], { results: Delivery[] }>;

// --- the live feed (WebSocket /ws/live/: not part of the OpenAPI schema) ---------------------
/** The topology lists that deltas update, keyed by the delta's `type`. */
export const DELTA_KEYS = {
  region: "regions", pop: "pops", service: "services", vip: "vips", anycastprefix: "prefixes",
  clientnetwork: "client_networks", monitor: "monitors", pool: "pools", backend: "backends", operation: "operations",
} as const;
export type DeltaType = keyof typeof DELTA_KEYS;

export type Change =
  | { op: "upsert"; type: DeltaType; id: number; data: { id: number } & Record<string, unknown> }
  | { op: "delete"; type: DeltaType; id: number };
export interface Hello { type: "hello"; version: number; role: string }
export interface Delta { type: "delta"; version: number; from_version?: number; changes: Change[] }
export interface Observed { type: "observed"; layer: string; pop?: number; desired?: string[]; observed?: string[]; at?: number }

// --- measurements (Redis-backed, polled) -------------------------------------------------
/** One backend's HAProxy figures. */
export type BackendStats = Schemas["BackendFigures"];
/** GET /api/v1/stats/backends/ */
export type StatsResponse = Schemas["BackendStats"];
/** GET /api/v1/dns/answers/ */
export type DnsAnswers = Schemas["DnsAnswers"];
export type AnycastPop = Schemas["_PopAnycast"];
/** GET /api/v1/anycast/ */
export type AnycastResponse = Schemas["AnycastOverview"];
export interface DataplaneLayer { connected: boolean; detail: string }
/** Desired vs applied for one layer at one PoP (or the DNS layer): GET /api/v1/dataplanes/ → applied. */
export interface LayerApplied {
  layer: Schemas["LayerEnum"]; pop: string | null; desired_version: number; applied_version: number | null;
  state: "in_sync" | "applying" | "behind" | "refused" | "absent"; lag_seconds: number | null; error: string;
  error_version: number | null; seen_at: number | null; detail: string;
  instances: { instance: string; applied_version: number; seen_at: number | null; error: string }[];
}
export interface Applied { version: number; dns: LayerApplied; pops: Record<string, { local: LayerApplied; anycast: LayerApplied }> }
/** GET /api/v1/dataplanes/: free-form objects in the schema. */
export type Dataplanes = Narrow<Schemas["Dataplanes"], {
  local: DataplaneLayer; dns: DataplaneLayer; anycast: DataplaneLayer; applied: Applied;
}>;
export const LAYER_KEYS = ["local", "dns", "anycast"] as const;

export type Sample = Schemas["Sample"];
/** GET /api/v1/backends/<id>/samples/ */
export type Samples = Schemas["Samples"];

/** The capacity what-if (…/impact/, a dry run, an action's answer, a capacity-guard refusal's
 * `impact`): the schema describes it whole (it is generated from the guard's dataclasses). */
export type Impact = Schemas["Impact"];
/** A weight change's plan (steps) or a layered drain's (DNS, wait, withdrawals). */
export type ImpactPlan = Schemas["ImpactPlan"];
/** The answer of an action's POST. */
export type ActionResult = Schemas["ActionResult"];
/** The body of an action's 409: a capacity-guard refusal (with its impact) or a state conflict. */
export type ActionConflict = Schemas["ActionConflict"];

/** One audit entry (GET /api/v1/changes/). */
export type ChangeEntry = Narrow<Schemas["Change"], { before: Record<string, unknown> | null; after: Record<string, unknown> | null }>;
export type ChangePage = Narrow<Schemas["PaginatedChangeList"], { results: ChangeEntry[] }>;

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
export const getTopologyAt = (at: string, signal?: AbortSignal): Promise<PastTopology> =>
  getJSON<PastTopology>(`/api/v1/topology/?at=${encodeURIComponent(at)}`, signal);

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

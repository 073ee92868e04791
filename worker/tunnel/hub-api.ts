/**
 * What the Worker may ask of a hub over the Durable Object's RPC: the hub's public surface, typed apart from its
 * class so the bindings (env.ts) and the routes type against it without importing the hub.
 */
import type { DeviceInfo, ModelInfo } from '../../shared/protocol/frames.ts';
import type { EdgeVars } from '../config.ts';
import type { ApiError } from '../http/errors.ts';
import type { HubGauges } from '../observability/hub-gauges.ts';
import type { AgentStatus } from './agent-store.ts';
import type { Exchange } from './exchange.ts';
import type { Authorization } from './key-gate.ts';
import type { Admission, KeyRecord, Reservation, TokenNeed } from './ledger.ts';
import type { ManageOutcome, ManageRequest } from './management.ts';
import type { Remembered } from './response-memory.ts';
import type { RefusalCount, UsageRow } from './usage-row.ts';

export interface AgentSummary {
  agentId: string;
  engine: string;
  agentVersion: string;
  models: ModelInfo[];
  devices: DeviceInfo[];
  connectedAt: number;
  inFlight: number;
  status: AgentStatus | null;
  /** When the edge last heard from the agent (a frame or an automatic heartbeat answer). */
  lastSeen: number;
}

/** An ApiError as a value, to cross the Durable Object's RPC with its code (see `storedResponse`). */
export interface RpcFailure {
  error: { code: ApiError['code']; message: string };
}

/** In-flight requests with how far each client is behind. */
export interface StreamsReport {
  hubStartedAt: number;
  pool: string;
  dispatched: number;
  data: Array<ReturnType<Exchange['stats']>>;
}

export interface HubApi extends Rpc.DurableObjectBranded {
  /** `/connect` (an agent's WebSocket upgrade, already authenticated by the Worker) and `/dispatch`. */
  fetch(request: Request): Promise<Response>;
  /** A model load, unload, delete or copy on the agents. */
  manage(request: ManageRequest): Promise<ManageOutcome>;
  /** A model pull on the agents, answered with Ollama's progress lines. */
  pull(request: ManageRequest): Promise<Response>;
  /** The connected agents that have said hello. */
  agents(): Promise<AgentSummary[]>;
  authorize(keyHash: string): Promise<Authorization>;
  /** Pools (kept by the `default` hub): every pool's name, and adding one as its first agent connects. */
  pools(): Promise<string[]>;
  addPool(name: string): Promise<boolean>;
  /** A key's limits for a request in another pool's hub (the `default` hub counts them for all). */
  admitFor(key: KeyRecord, at: number, need: TokenNeed): Promise<Admission>;
  settleFor(reservation: Reservation, used: number, at: number): Promise<void>;
  revokeKey(id: string): Promise<{ revoked: boolean; databaseUpdated: boolean }>;
  /** Queues a usage row (for requests the Worker answers itself). */
  record(row: UsageRow): void;
  countRefusals(counts: RefusalCount[]): void;
  streams(): Promise<StreamsReport>;
  /** Rows still waiting for libSQL (for health checks and tests). */
  pendingUsage(): Promise<number>;
  /** What `/metrics` shows of this hub. */
  gauges(): Promise<HubGauges>;
  /** A tenant's stored response (see response-memory.ts); failures come back as values. */
  storedResponse(tenant: string, id: string, models: string[] | null): Promise<Remembered | RpcFailure | null>;
  deleteStoredResponse(tenant: string, id: string, models: string[] | null): Promise<boolean | RpcFailure>;
}

/**
 * The bindings the hub and the Worker's pre-hub side (edge/) use: the variables and the hub's namespace. The Worker's
 * whole `Env` (env.ts) adds what features above them bind (the Batch API's desks and bucket).
 */
export interface HubEnv extends EdgeVars {
  HUB: DurableObjectNamespace<HubApi>;
  /**
   * Which deployed version of the Worker this is (wrangler.jsonc's `version_metadata`). The Worker and the hub run
   * the same code when their ids agree: the hub then trusts a dispatch's shape instead of decoding it again
   * (dispatch.ts). Absent: every dispatch is decoded.
   */
  CF_VERSION_METADATA?: WorkerVersionMetadata;
}

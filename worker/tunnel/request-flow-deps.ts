/** What a request flow (request-flow.ts) is given by the hub, and what one request has got to. */
import type { ConversationAffinity } from './affinity.ts';
import type { AnswerCache, Flight } from './answer-cache.ts';
import type { AgentRegistry } from './agent-registry.ts';
import type { ExchangeTable } from './exchange-table.ts';
import type { InFlightLog } from './in-flight-log.ts';
import type { KeyGate } from './key-gate.ts';
import type { KeyRecord, Ledger, LimitsView, Reservation } from './ledger.ts';
import type { LimitsPoint } from './limits-point.ts';
import type { PromptAllowance } from './prompt-allowance.ts';
import type { ResponseMemory } from './response-memory.ts';
import type { SemanticTier } from './semantic-tier.ts';
import type { UsageOutbox } from './usage-outbox.ts';
import type { UsageRow } from './usage-row.ts';

export interface RequestFlowDeps {
  keys: KeyGate;
  ledger: Ledger;
  /** Where the key's limits are counted: this hub's ledger, or the `default` hub's for another pool (limits-point.ts). */
  limits: LimitsPoint;
  cache: AnswerCache;
  registry: AgentRegistry;
  exchanges: ExchangeTable;
  outbox: UsageOutbox;
  inFlight: InFlightLog;
  /** Stored responses: a conversation a request continues, and keeping its answer (response-memory.ts). */
  responses: ResponseMemory;
  /** What each model's template adds beyond the byte estimate, learned from the agents' counts. */
  allowance: PromptAllowance;
  /** Which agent holds the KV cache of the conversation a request continues. */
  affinity: ConversationAffinity;
  /** The cache's second tier, for keys that opted in (semantic-tier.ts). */
  semantic: SemanticTier;
  waitUntil: (p: Promise<unknown>) => void;
  /** How long a request whose agent went away waits for another (NPU_RELAY_PARK_MS; sent-requests.ts). */
  parkMs: () => number;
}

/** What the request has got to, for the row its failure leaves. */
export interface Progress {
  key: KeyRecord | undefined;
  cache: UsageRow['cache'];
  reservation: Reservation | undefined;
  flight: Flight | undefined;
  /** The key's limits after its admission, for the rate-limit headers of whatever the answer is. */
  limits?: LimitsView | undefined;
}

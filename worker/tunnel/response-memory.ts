/**
 * What the hub needs of a dialect that remembers responses (the Responses API's stored responses,
 * dialects/openai-responses/memory.ts): the request flow and the hub call this and know nothing of what is kept or
 * how. The hub is given one when it is built (worker/hub.ts).
 */
import type { EdgeConfig } from '../config.ts';
import type { HubDatabase } from '../db/hub-database.ts';
import type { AnswerChunk, Outcome, ResponseMeta } from '../dialects/core/format.ts';
import type { Dispatch } from './dispatch.ts';
import type { KeyRecord } from './ledger.ts';

/** Given the answer once the response has settled, or nothing when it failed or was cancelled. */
export type Keep = (answer?: { chunks: AnswerChunk[]; outcome: Outcome }) => void;

export interface Recalled {
  /** The dispatch to run: with the remembered history it continues put before its own input. */
  dispatch: Dispatch;
  /** Once the response has its id: what remembers its answer, when the request asked for it to be remembered. */
  keep(meta: ResponseMeta): Keep | undefined;
}

/** A remembered response as its routes serve it. */
export interface Remembered {
  response: Record<string, unknown>;
  inputItems: Array<Record<string, unknown>>;
}

export interface ResponseMemory {
  /** Before the request is admitted, so its reservation covers the history too. Throws the client's error. */
  recall(dispatch: Dispatch, key: KeyRecord): Promise<Recalled>;
  /** A tenant's response of a model in the key's scope (`models`), after any write of it still under way. */
  get(tenant: string, id: string, models: string[] | null): Promise<Remembered | null>;
  /** False when there was none to delete. */
  delete(tenant: string, id: string, models: string[] | null): Promise<boolean>;
  /** The hub's alarm went off: write what waits, sweep what expired. */
  alarm(now: number): Promise<void>;
}

export interface ResponseMemoryDeps {
  db: HubDatabase;
  /** The hub's own storage, for what must outlive the hub's memory (writes waiting for libSQL). */
  sql: SqlStorage;
  config: () => EdgeConfig;
  /** Makes sure the hub's alarm goes off no later than `at`. */
  wake: (at: number) => void;
  waitUntil: (p: Promise<unknown>) => void;
}

export type ResponseMemoryFactory = (deps: ResponseMemoryDeps) => ResponseMemory;

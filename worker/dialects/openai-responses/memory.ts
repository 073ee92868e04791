/**
 * The Responses API's stored responses as the hub sees them (tunnel/response-memory.ts): a request with
 * `previous_response_id` gets the stored conversation before its own input, and one with `store` is kept once it
 * settles (store.ts keeps them, pending.ts queues their writes).
 */
import { linkToolResults } from '../../../shared/api/tools.ts';
import type { ResponseMeta } from '../core/format.ts';
import type { Dispatch } from '../../tunnel/dispatch.ts';
import type { KeyRecord } from '../../tunnel/ledger.ts';
import type {
  Keep,
  Recalled,
  ResponseMemory,
  ResponseMemoryDeps,
  ResponseMemoryFactory,
} from '../../tunnel/response-memory.ts';
import { PendingResponses } from './pending.ts';
import { type Continued, ResponseStore } from './store.ts';

class StoredResponses implements ResponseMemory {
  readonly #store: ResponseStore;
  readonly #waitUntil: (p: Promise<unknown>) => void;

  constructor(deps: ResponseMemoryDeps) {
    this.#store = new ResponseStore({
      db: deps.db,
      pending: new PendingResponses(deps.sql),
      ttlMs: () => deps.config().responsesTtlMs,
      maxChain: () => deps.config().responsesMaxChain,
      wake: deps.wake,
    });
    this.#waitUntil = deps.waitUntil;
  }

  async recall(dispatch: Dispatch, key: KeyRecord): Promise<Recalled> {
    const conversation = dispatch.conversation;
    if (conversation === undefined || dispatch.task.task !== 'chat') return { dispatch, keep: () => undefined };
    let continued: Continued | undefined;
    if (conversation.previousResponseId !== undefined) {
      // The key's model scope covers what it continues: a response of a model outside it is one it cannot see.
      const prior = await this.#store.conversation(key.tenant, conversation.previousResponseId, key.models);
      const messages = dispatch.task.messages;
      const at = conversation.instructionCount;
      // Linked again: a function_call_output in the new input answers a call in the stored history.
      const task = {
        ...dispatch.task,
        messages: linkToolResults([...messages.slice(0, at), ...prior.messages, ...messages.slice(at)]),
      };
      dispatch = { ...dispatch, task };
      continued = prior.continued;
    }
    const store = conversation.store;
    const task = dispatch.task;
    if (!store || task.task !== 'chat') return { dispatch, keep: () => undefined };
    const what = (meta: ResponseMeta) => ({
      tenant: key.tenant,
      meta,
      task,
      instructionCount: conversation.instructionCount,
      inputItems: store.inputItems,
      continued,
    });
    return { dispatch, keep: (meta): Keep => this.#store.begin(what(meta), this.#waitUntil) };
  }

  async get(tenant: string, id: string, models: string[] | null) {
    const row = await this.#store.get(tenant, id, models);
    return row ? { response: row.response, inputItems: row.inputItems } : null;
  }

  delete(tenant: string, id: string, models: string[] | null): Promise<boolean> {
    return this.#store.delete(tenant, id, models);
  }

  async alarm(now: number): Promise<void> {
    await this.#store.flush();
    await this.#store.sweepIfDue(now);
  }
}

export const storedResponses: ResponseMemoryFactory = (deps) => new StoredResponses(deps);

/**
 * Conversations stay with their cache. An agent keeps the KV cache of the prompts it served (prefix reuse on ONNX
 * Runtime, GenAI's prefix caching on OpenVINO), so the next turn of a conversation prefills only what is new — on
 * that agent; on any other it prefills the whole history again. The hub remembers, for a while, which agent served
 * which conversation:
 *
 * - a chat by its messages, as a hash chain over the model, the tools and each message in turn, so that every prefix
 *   of a later history can be looked up (a second turn's history starts with the first turn's messages, whether the
 *   client sends them again or `previous_response_id` brings them from the store);
 * - an Ollama `/api/generate` answer by the token ids it returned as `context`, which the next turn sends back.
 *
 * The agent found is a preference, not a rule: the picker (agent-picker.ts) takes it unless it is busier than the
 * least loaded agent by more than `AFFINITY_MARGIN_ROUNDS`.
 */
import type { Task } from '../../shared/protocol/frames.ts';

/**
 * How much longer a conversation's next turn may expect to wait on the agent holding its cache than on the least
 * loaded agent, in rounds of the model's device (requests ahead of it over what the device runs at once; for an NPU
 * that runs one at a time, one request). Prefilling a long history again costs more than waiting out one request,
 * but a holder with a queue would make the conversation wait behind all of it.
 */
export const AFFINITY_MARGIN_ROUNDS = 1;

/** Whether the holder of a conversation's cache should serve it, by the rounds each would make it wait. */
export function holderWithinMargin(holderWait: number, leastWait: number): boolean {
  return holderWait - leastWait <= AFFINITY_MARGIN_ROUNDS;
}

/** How long a served conversation is remembered: about as long as an agent keeps an idle model (and its cache). */
export const AFFINITY_TTL_MS = 10 * 60_000;
/** Conversations remembered at most (the oldest are forgotten first); an entry is a short key and an agent id. */
export const AFFINITY_MAX_ENTRIES = 4096;

/** cyrb53: a fast 53-bit string hash. Collisions only misdirect a preference, so a cryptographic hash is not needed. */
function hash53(text: string, seed = 0): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/** The keys of a task's conversation, hashed once per request (`holder` at its start, `remember` at its end). */
const hashed = new WeakMap<Task, string[]>();

function chatKeys(task: Extract<Task, { task: 'chat' }>): string[] {
  let keys = hashed.get(task);
  if (!keys) {
    keys = hashChatKeys(task);
    hashed.set(task, keys);
  }
  return keys;
}

/**
 * The keys of a chat's message prefixes, shortest first: key `i` covers messages 0..i. Each message is hashed by
 * the fields a template renders, so a history that comes back from the Responses store matches the one sent.
 */
function hashChatKeys(task: Extract<Task, { task: 'chat' }>): string[] {
  let chain = hash53(JSON.stringify([task.model, task.tools ?? null]));
  return task.messages.map((m) => {
    const fields = [m.role, m.content, m.reasoning ?? null, m.toolCalls ?? null, m.toolCallId ?? null];
    chain = hash53(`${chain}:${JSON.stringify(fields)}`);
    return `chat:${chain}`;
  });
}

function contextKey(model: string, context: readonly number[]): string {
  return `context:${hash53(`${model}:${context.join(',')}`)}`;
}

export class ConversationAffinity {
  readonly #enabled: () => boolean;
  /** Key → the agent that served it and when; in insertion order, so the first entries are the oldest. */
  readonly #served = new Map<string, { agentId: string; at: number }>();

  /** `enabled` is read on every use (`NPU_RELAY_CONVERSATION_AFFINITY`), so the edge's configuration decides. */
  constructor(enabled: () => boolean = () => true) {
    this.#enabled = enabled;
  }

  /**
   * Remembers that `agentId` served `task` to its end: its whole history (the prefix the next turn starts with),
   * and the `context` ids its answer returned.
   */
  remember(task: Task, agentId: string, context: readonly number[] | undefined, now: number): void {
    if (!this.#enabled()) return;
    if (task.task === 'chat') this.#set(chatKeys(task).at(-1)!, agentId, now);
    if (context?.length && (task.task === 'chat' || task.task === 'complete'))
      this.#set(contextKey(task.model, context), agentId, now);
  }

  /** The agent that served the longest remembered prefix of `task`'s conversation, if one did recently. */
  holder(task: Task, now: number): string | undefined {
    if (!this.#enabled()) return undefined;
    if ((task.task === 'chat' || task.task === 'complete') && task.context?.length) {
      const found = this.#get(contextKey(task.model, task.context), now);
      if (found) return found;
    }
    if (task.task !== 'chat') return undefined;
    const keys = chatKeys(task);
    for (let i = keys.length - 1; i >= 0; i--) {
      const found = this.#get(keys[i]!, now);
      if (found) return found;
    }
    return undefined;
  }

  #get(key: string, now: number): string | undefined {
    const entry = this.#served.get(key);
    if (!entry) return undefined;
    if (now - entry.at > AFFINITY_TTL_MS) {
      this.#served.delete(key);
      return undefined;
    }
    return entry.agentId;
  }

  #set(key: string, agentId: string, now: number): void {
    this.#served.delete(key);
    this.#served.set(key, { agentId, at: now });
    while (this.#served.size > AFFINITY_MAX_ENTRIES) this.#served.delete(this.#served.keys().next().value!);
  }
}

/**
 * Exact-cache keys. A key is the SHA-256 of a canonical JSON form (object keys sorted, every default already filled
 * in by the edge) of everything that changes the output: tenant, task kind, model, input and sampling settings.
 * The API dialect is deliberately not part of it, so an Ollama and an OpenAI request for the same thing share an
 * entry; each replay is rendered in the caller's format.
 */
import type { Task } from '../protocol/frames.ts';

/**
 * Bump when the meaning of a cached entry changes, so old entries stop matching. 2: tasks carry tools, tool choice,
 * response format and think, and entries carry reasoning and tool-call pieces.
 */
const CACHE_KEY_VERSION = 2;

export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * Only reproducible requests are cached: embeddings, rerank scores, greedy decoding, or sampling with a fixed seed. A token count
 * costs no more than a lookup would, so it is never cached.
 */
export function isDeterministic(task: Task): boolean {
  if (task.task === 'count') return false;
  if (task.task === 'embed' || task.task === 'rerank') return true;
  return task.sampling.temperature === 0 || task.sampling.seed !== undefined;
}

/**
 * The task with settings that cannot change the output removed: neutral values (top-k 0, repetition penalty 1,
 * zero penalties) and, under greedy decoding, everything that only shapes sampling. Tools, tool choice, response
 * format and think stay in (the task's spread): the request mappers fill their defaults, so requests meaning the
 * same thing already carry the same values.
 */
export function canonicalTask(task: Task): unknown {
  if (task.task === 'embed' || task.task === 'rerank' || task.task === 'count') return task;
  const { topK, topP, seed, repetitionPenalty, presencePenalty, frequencyPenalty, ...rest } = task.sampling;
  const greedy = rest.temperature === 0;
  const sampling = {
    ...rest,
    ...(!greedy ? { topP } : {}),
    ...(!greedy && topK ? { topK } : {}),
    ...(!greedy && seed !== undefined ? { seed } : {}),
    ...(repetitionPenalty !== undefined && repetitionPenalty !== 1 ? { repetitionPenalty } : {}),
    ...(presencePenalty ? { presencePenalty } : {}),
    ...(frequencyPenalty ? { frequencyPenalty } : {}),
  };
  return { ...task, sampling };
}

export async function cacheKey(tenant: string, task: Task): Promise<string> {
  const canonical = canonicalJson({ v: CACHE_KEY_VERSION, tenant, task: canonicalTask(task) });
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(canonical));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

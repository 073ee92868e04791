/**
 * The semantic cache tier's rules, shared by the hub (which looks up and stores) and the CLI (which sets keys up):
 * which requests are candidates, what text of theirs is embedded, and what else must match for a cached answer to
 * stand in for a reworded question. docs/semantic-cache.md says the same for users.
 */
import type { Task } from '../protocol/frames.ts';
import { canonicalJson, canonicalTask, isDeterministic } from './key.ts';

/** The cosine similarity a cached question needs when the key names none. */
export const DEFAULT_SEMANTIC_THRESHOLD = 0.92;

/**
 * A request the semantic tier may answer: one the exact cache could (reproducible), a chat or a raw completion,
 * without tools (a cached call to a tool is an action, not an answer, and a reworded request may need another),
 * without a response format (a schema is part of what the answer must be) and without Ollama's context ids.
 */
export function isSemanticCandidate(task: Task): boolean {
  if (!isDeterministic(task)) return false;
  if (task.task === 'chat') {
    return !task.tools?.length && task.responseFormat === undefined && task.context === undefined;
  }
  return task.task === 'complete' && task.responseFormat === undefined && task.context === undefined;
}

/**
 * The text that is embedded: the conversation as the model reads it, role by role (system included), or the raw
 * prompt. The chat template's own markup is left out: it is the same for every request of a model.
 */
export function semanticText(task: Task): string {
  if (task.task === 'complete') return task.prompt;
  if (task.task !== 'chat') return '';
  return task.messages.map((m) => `${m.role}: ${m.content}`).join('\n');
}

/**
 * Everything but the words that decides the answer: the model, sampling, max tokens, think, the roles' order. A
 * semantic hit needs the same (a cached 5-token answer is no answer to a 500-token request).
 */
export async function semanticSettings(task: Task): Promise<string> {
  const canonical = canonicalTask(task) as Record<string, unknown>;
  const shape =
    task.task === 'chat'
      ? { ...canonical, messages: task.messages.map((m) => m.role) }
      : { ...canonical, prompt: undefined };
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(canonicalJson(shape)));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The vectors of one width live in a table of their own: libSQL's vector index needs a fixed dimension
 * (`F32_BLOB(N)`), and the width is the embedding model's, chosen per key.
 */
export function vectorTable(dimensions: number): string {
  if (!Number.isSafeInteger(dimensions) || dimensions <= 0 || dimensions > 65_536)
    throw new Error(`not a vector width: ${dimensions}`);
  return `semantic_vectors_${dimensions}`;
}

/** The table and its cosine index, created on a width's first entry (idempotent). */
export function vectorTableDdl(dimensions: number): string[] {
  const t = vectorTable(dimensions);
  return [
    `CREATE TABLE IF NOT EXISTS ${t} (
      id INTEGER PRIMARY KEY,
      tenant TEXT NOT NULL,
      model TEXT NOT NULL,
      embed_model TEXT NOT NULL,
      settings TEXT NOT NULL,
      cache_key TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      expires_at INTEGER NOT NULL,
      embedding F32_BLOB(${dimensions}) NOT NULL
    )`,
    `CREATE INDEX IF NOT EXISTS ${t}_idx ON ${t} (libsql_vector_idx(embedding, 'metric=cosine'))`,
    `CREATE INDEX IF NOT EXISTS ${t}_expires ON ${t} (expires_at)`,
  ];
}

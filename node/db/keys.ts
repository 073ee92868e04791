/**
 * Client API keys in the edge's libSQL database, for the `keys` CLI and `npm start`. A key's secret is returned
 * once, by `createKey`; the database keeps only its SHA-256 (`hashApiKey`) and a short visible prefix.
 */
import { MAX_KEY_WEIGHT } from '../../shared/protocol/frames.ts';
import { createClient } from '@libsql/client';
import { and, asc, count, DrizzleQueryError, eq, isNull } from 'drizzle-orm';
import { drizzle, type LibSQLDatabase } from 'drizzle-orm/libsql';
import { ConfigError } from '../config.ts';
import { hashApiKey, newApiKey, newKeyId, visiblePrefix } from '../../shared/keys.ts';
import { apiKeys } from '../../shared/db/schema.ts';
import { DEFAULT_SEMANTIC_THRESHOLD } from '../../shared/cache/semantic.ts';

export type KeysDb = LibSQLDatabase;

/** Where the database is: a local sqld (`http://127.0.0.1:PORT`) or Turso (`libsql://…`, with a token). */
export interface DatabaseTarget {
  url: string;
  authToken?: string | undefined;
}

/** Opens a drizzle database over a libSQL client; `close` releases the connection. */
export function openKeysDb(target: DatabaseTarget): { db: KeysDb; close(): void } {
  const client = createClient({ url: target.url, ...(target.authToken ? { authToken: target.authToken } : {}) });
  return { db: drizzle(client), close: () => client.close() };
}

/** A stored key as people may see it: everything but the hash. */
export interface KeyInfo {
  id: string;
  name: string;
  tenant: string;
  prefix: string;
  /** Models the key may use; null means all. */
  models: string[] | null;
  rpm: number | null;
  tpm: number | null;
  monthlyTokenBudget: number | null;
  /** The manage scope: may pull, delete and copy models, and unload or pin them for everyone. */
  manageModels: boolean;
  /** The semantic cache tier (docs/semantic-cache.md). */
  semanticCache: boolean;
  semanticThreshold: number | null;
  semanticModel: string | null;
  semanticReranker: string | null;
  /** Its share of a busy device relative to other keys' (docs/fair-shares.md). */
  weight: number;
  /** Milliseconds since the epoch. */
  createdAt: number;
  revokedAt: number | null;
}

export interface NewKey {
  name: string;
  models?: string[] | null | undefined;
  rpm?: number | null | undefined;
  tpm?: number | null | undefined;
  monthlyTokenBudget?: number | null | undefined;
  /** Defaults to the key's own id: a key alone in its tenant shares cache entries with no other key. */
  tenant?: string | undefined;
  /** May unload (`keep_alive: 0`) or pin (`-1`) models for every key. */
  manageModels?: boolean | undefined;
  /** Opt in to the semantic cache tier, with a cosine threshold (default 0.92) and an embedding model. */
  semanticCache?: boolean | undefined;
  semanticThreshold?: number | undefined;
  semanticModel?: string | undefined;
  /** A cross-encoder whose verdict a semantic hit also needs. */
  semanticReranker?: string | undefined;
  /** Its share of a busy device relative to other keys' (1–MAX_KEY_WEIGHT; default 1). */
  weight?: number | undefined;
  /** Store this secret instead of generating one (how `npm start` registers `NPU_RELAY_API_KEY`). */
  key?: string | undefined;
}

export type KeyErrorCode = 'invalid_key' | 'unknown_key';

export class KeyError extends Error {
  readonly code: KeyErrorCode;
  constructor(code: KeyErrorCode, message: string) {
    super(message);
    this.name = 'KeyError';
    this.code = code;
  }
}

const info = {
  id: apiKeys.id,
  name: apiKeys.name,
  tenant: apiKeys.tenant,
  prefix: apiKeys.prefix,
  models: apiKeys.models,
  rpm: apiKeys.rpm,
  tpm: apiKeys.tpm,
  monthlyTokenBudget: apiKeys.monthlyTokenBudget,
  manageModels: apiKeys.manageModels,
  semanticCache: apiKeys.semanticCache,
  semanticThreshold: apiKeys.semanticThreshold,
  semanticModel: apiKeys.semanticModel,
  semanticReranker: apiKeys.semanticReranker,
  weight: apiKeys.weight,
  createdAt: apiKeys.createdAt,
  revokedAt: apiKeys.revokedAt,
};

function checkLimit(field: string, value: number | null | undefined): number | null {
  if (value === undefined || value === null) return null;
  if (!Number.isSafeInteger(value) || value <= 0)
    throw new KeyError('invalid_key', `${field} must be a positive integer, got ${value}`);
  return value;
}

function semanticOf(input: NewKey) {
  const t = input.semanticThreshold;
  if (t !== undefined && !(t > 0 && t <= 1))
    throw new KeyError('invalid_key', `the semantic threshold must be a number in (0, 1], got ${t}`);
  if (input.semanticModel !== undefined && !input.semanticModel.trim())
    throw new KeyError('invalid_key', 'the semantic model, when given, must not be empty');
  if (input.semanticReranker !== undefined && !input.semanticReranker.trim())
    throw new KeyError('invalid_key', 'the semantic reranker, when given, must not be empty');
  if (!input.semanticCache) {
    if (t !== undefined || input.semanticModel !== undefined || input.semanticReranker !== undefined)
      throw new KeyError('invalid_key', 'a semantic threshold, model or reranker needs the semantic cache turned on');
    return { semanticCache: false, semanticThreshold: null, semanticModel: null, semanticReranker: null };
  }
  return {
    semanticCache: true,
    semanticThreshold: t ?? DEFAULT_SEMANTIC_THRESHOLD,
    semanticModel: input.semanticModel?.trim() ?? null,
    semanticReranker: input.semanticReranker?.trim() ?? null,
  };
}

function checkInput(input: NewKey) {
  const name = input.name.trim();
  if (!name) throw new KeyError('invalid_key', 'a key needs a non-empty name');
  if (input.tenant !== undefined && !input.tenant.trim())
    throw new KeyError('invalid_key', 'the tenant, when given, must not be empty');
  if (input.models && (input.models.length === 0 || input.models.some((m) => !m.trim()))) {
    throw new KeyError('invalid_key', 'the model list must name at least one model and hold no empty names');
  }
  if (input.key !== undefined && !input.key) throw new KeyError('invalid_key', 'the key to store must not be empty');
  return {
    name,
    tenant: input.tenant?.trim(),
    models: input.models ? [...new Set(input.models.map((m) => m.trim()))] : null,
    rpm: checkLimit('rpm', input.rpm),
    tpm: checkLimit('tpm', input.tpm),
    monthlyTokenBudget: checkLimit('the monthly token budget', input.monthlyTokenBudget),
    manageModels: input.manageModels ?? false,
    ...semanticOf(input),
    weight: checkWeight(input.weight),
  };
}

function checkWeight(value: number | undefined): number {
  if (value === undefined) return 1;
  if (!Number.isSafeInteger(value) || value < 1 || value > MAX_KEY_WEIGHT)
    throw new KeyError('invalid_key', `the weight must be a whole number from 1 to ${MAX_KEY_WEIGHT}, got ${value}`);
  return value;
}

/** Creates a key and returns its secret (shown to the user once, never stored) with what was stored. */
export async function createKey(db: KeysDb, input: NewKey, now = Date.now()): Promise<{ key: string; info: KeyInfo }> {
  const checked = checkInput(input);
  const key = input.key ?? newApiKey();
  const id = newKeyId();
  const [row] = await db
    .insert(apiKeys)
    .values({
      ...checked,
      id,
      tenant: checked.tenant ?? id,
      prefix: visiblePrefix(key),
      hash: await hashApiKey(key),
      createdAt: now,
    })
    .returning(info);
  return { key, info: row! };
}

/** Every key, oldest first, without hashes. */
export function listKeys(db: KeysDb): Promise<KeyInfo[]> {
  return db.select(info).from(apiKeys).orderBy(asc(apiKeys.createdAt), asc(apiKeys.id));
}

/** The stored key whose hash is that of `key`, revoked or not. */
export async function findKey(db: KeysDb, key: string): Promise<KeyInfo | undefined> {
  const [row] = await db
    .select(info)
    .from(apiKeys)
    .where(eq(apiKeys.hash, await hashApiKey(key)));
  return row;
}

/** How many keys are not revoked. */
export async function countActiveKeys(db: KeysDb): Promise<number> {
  const [row] = await db.select({ n: count() }).from(apiKeys).where(isNull(apiKeys.revokedAt));
  return row?.n ?? 0;
}

/**
 * Revokes a key. Revoking a revoked key changes nothing: its first `revokedAt` stays, and `alreadyRevoked` says so.
 * An id that does not exist is a `KeyError` with code `unknown_key`.
 */
export async function revokeKey(
  db: KeysDb,
  id: string,
  now = Date.now(),
): Promise<{ info: KeyInfo; alreadyRevoked: boolean }> {
  const [revoked] = await db
    .update(apiKeys)
    .set({ revokedAt: now })
    .where(and(eq(apiKeys.id, id), isNull(apiKeys.revokedAt)))
    .returning(info);
  if (revoked) return { info: revoked, alreadyRevoked: false };
  const [existing] = await db.select(info).from(apiKeys).where(eq(apiKeys.id, id));
  if (!existing)
    throw new KeyError(
      'unknown_key',
      `there is no API key with id '${id}' (the ids are in the first column of \`npm run keys -- list\`)`,
    );
  return { info: existing, alreadyRevoked: true };
}

/** The key `npm start` prints, and how it was found. */
export type StartKey =
  /** NPU_RELAY_API_KEY was set; `created` when it was not in the database before. */
  | { source: 'env'; key: string; info: KeyInfo; created: boolean }
  /** The key saved by an earlier start, still valid. */
  | { source: 'saved'; key: string; info: KeyInfo }
  /** No valid key existed, so one was made: `reused` when it is the saved key, which the database had never seen. */
  | { source: 'created'; key: string; info: KeyInfo; reused: boolean }
  /** Valid keys exist, but none whose secret this start knows: it cannot print one, and makes none. */
  | { source: 'none'; activeKeys: number };

export const ENV_KEY_NAME = 'dev (NPU_RELAY_API_KEY)';
export const FIRST_KEY_NAME = 'first key';

/**
 * Picks the key `npm start` prints. `given` (NPU_RELAY_API_KEY) is registered if it is not in the database yet.
 * Else the `saved` key is used while it is valid; when no valid key exists at all, one named 'first key' is created.
 * A saved key the database has never seen (saved before keys lived in the database, or the database was reset) is
 * what that new row stores, so clients already using it keep working; a revoked one is never brought back.
 */
export async function startKey(
  db: KeysDb,
  options: { given?: string | undefined; saved?: string | undefined },
): Promise<StartKey> {
  if (options.given) {
    const existing = await findKey(db, options.given);
    if (existing) return { source: 'env', key: options.given, info: existing, created: false };
    const { info: created } = await createKey(db, { name: ENV_KEY_NAME, key: options.given });
    return { source: 'env', key: options.given, info: created, created: true };
  }
  const saved = options.saved ? await findKey(db, options.saved) : undefined;
  if (saved && saved.revokedAt === null) return { source: 'saved', key: options.saved!, info: saved };
  const activeKeys = await countActiveKeys(db);
  if (activeKeys > 0) return { source: 'none', activeKeys };
  const reused = !!options.saved && !saved;
  const { key, info: created } = await createKey(db, { name: FIRST_KEY_NAME, key: reused ? options.saved : undefined });
  return { source: 'created', key, info: created, reused };
}

/** The `--url` and `--auth-token` options shared by the database CLIs (`migrate`, `keys`), for `parseArgs`. */
export const DATABASE_OPTIONS = {
  url: { type: 'string' },
  'auth-token': { type: 'string' },
} as const;

export const DATABASE_HELP = `  --url URL           the libSQL database: http://127.0.0.1:PORT for a local sqld,   NPU_RELAY_LIBSQL_URL
                      libsql://NAME-ORG.turso.io for Turso (required)
  --auth-token TOKEN  the database's auth token (Turso; none for a local sqld)       NPU_RELAY_LIBSQL_AUTH_TOKEN`;

const DATABASE_SCHEMES = ['libsql:', 'http:', 'https:', 'ws:', 'wss:', 'file:'];

/**
 * The database the CLIs work on, from their flags and the environment (flags win). A missing or malformed URL is a
 * `ConfigError` naming the flag and the variable.
 */
export function databaseTarget(
  values: { url?: string | undefined; 'auth-token'?: string | undefined },
  env: NodeJS.ProcessEnv,
): DatabaseTarget {
  const url = values.url ?? env.NPU_RELAY_LIBSQL_URL;
  if (!url) {
    throw new ConfigError(
      'no database given: pass --url or set NPU_RELAY_LIBSQL_URL (http://127.0.0.1:PORT for a local sqld — `npm start` prints its URL — or libsql://… for Turso)',
    );
  }
  let protocol;
  try {
    protocol = new URL(url).protocol;
  } catch {
    protocol = undefined;
  }
  if (!protocol || !DATABASE_SCHEMES.includes(protocol)) {
    throw new ConfigError(
      `--url / NPU_RELAY_LIBSQL_URL must be a libsql://, http(s)://, ws(s):// or file: URL, got '${url}'`,
    );
  }
  const authToken = values['auth-token'] ?? env.NPU_RELAY_LIBSQL_AUTH_TOKEN;
  return { url, authToken: authToken || undefined };
}

/** A database URL fit for printing: no credentials, no query string (Turso URLs may carry `?authToken=`). */
export function displayUrl(url: string): string {
  const u = new URL(url);
  if (u.protocol === 'file:') return url.replace(/\?.*$/, '');
  return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
}

/**
 * What went wrong talking to the database, in one line: the causes of a failed query or connection (drizzle's own
 * message repeats the SQL and its parameters, which says nothing a user can act on).
 */
export function databaseErrorMessage(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e instanceof Error && parts.length < 4; e = e.cause) {
    if (!(e instanceof DrizzleQueryError) && !parts.at(-1)?.includes(e.message)) parts.push(e.message);
  }
  return parts.join(': ') || String(err);
}

/**
 * Checks API keys for the hub. A key is looked up in libSQL at most every KEY_RECHECK_MS, so a revocation written
 * to the database takes effect within about that; a stranger's made-up key is remembered as unknown for a while,
 * so repeating it costs no query.
 */
import { DEFAULT_SEMANTIC_THRESHOLD } from '../../shared/cache/semantic.ts';
import { eq } from 'drizzle-orm';
import type { EdgeConfig } from '../config.ts';
import { apiKeys } from '../../shared/db/schema.ts';
import { ExpiringMap } from '../expiring-map.ts';
import type { HubDatabase } from '../db/hub-database.ts';
import type { KeyRecord, Ledger } from './ledger.ts';
import { logError } from '../observability/log.ts';

/** The outcome of checking a key, as plain data (errors do not cross RPC with their fields). */
export type Authorization =
  | { key: KeyRecord }
  | { error: { code: 'invalid_api_key' | 'database_unavailable'; message: string } };

const KEY_RECHECK_MS = 2000;
/** How long a key hash libSQL does not know is answered from memory, and how many such hashes are kept. */
const UNKNOWN_KEY_TTL_MS = 60_000;
const UNKNOWN_KEYS_MAX = 10_000;

function verdict(record: KeyRecord | undefined): Authorization {
  if (!record) return { error: { code: 'invalid_api_key', message: 'invalid API key' } };
  if (record.revokedAt !== null)
    return { error: { code: 'invalid_api_key', message: 'this API key has been revoked' } };
  return { key: record };
}

export class KeyGate {
  readonly #db: HubDatabase;
  readonly #ledger: Ledger;
  readonly #config: () => EdgeConfig;
  /** Keys verified against libSQL in the last KEY_RECHECK_MS, so a busy key costs no database query per request. */
  readonly #recent = new Map<string, { record: KeyRecord; at: number }>();
  /** Key lookups in flight, one per key hash: requests for the same key share it instead of queueing more. */
  readonly #lookups = new Map<string, Promise<KeyRecord | undefined | 'unreachable'>>();
  /** Key hashes libSQL does not know, so a stranger repeating a made-up key costs no query each time. */
  readonly #unknown = new ExpiringMap<true>(UNKNOWN_KEYS_MAX, UNKNOWN_KEY_TTL_MS);

  constructor(db: HubDatabase, ledger: Ledger, config: () => EdgeConfig) {
    this.#db = db;
    this.#ledger = ledger;
    this.#config = config;
  }

  /**
   * A key verified within the grace period (NPU_RELAY_KEY_GRACE_S) is served without waiting while libSQL is down
   * or a recheck of it is already in flight (the recheck finishes in the background), and when the recheck fails
   * or times out; a key revoked through the admin API meanwhile is refused at once.
   */
  async authorize(keyHash: string): Promise<Authorization> {
    const now = Date.now();
    const fresh = this.#recent.get(keyHash);
    if (fresh && now - fresh.at < KEY_RECHECK_MS) return verdict(fresh.record);
    if (this.#unknown.get(keyHash, now)) return verdict(undefined);
    const { keyGraceMs } = this.#config();
    const known =
      fresh && now - fresh.at <= keyGraceMs ? fresh.record : this.#ledger.recentKey(keyHash, now, keyGraceMs);
    const inFlight = this.#lookups.get(keyHash);
    const lookup = inFlight ?? this.#lookUp(keyHash);
    if (known && (inFlight || this.#db.down)) return verdict(known);
    let result = await lookup;
    // A key with nothing to fall back on gets one more try: a cold libSQL (its first connection, a Turso database
    // waking up) can miss one deadline, and refusing a valid key for that is worse than waiting a little longer.
    if (result === 'unreachable' && !known) result = await (this.#lookups.get(keyHash) ?? this.#lookUp(keyHash));
    if (result !== 'unreachable') return verdict(result);
    if (known) return verdict(known);
    return {
      error: {
        code: 'database_unavailable',
        message: 'cannot verify the API key right now: the key database is unreachable; retry shortly',
      },
    };
  }

  /** Looks a key up in libSQL, once at a time per key; 'unreachable' when libSQL failed or did not answer in time. */
  #lookUp(keyHash: string): Promise<KeyRecord | undefined | 'unreachable'> {
    const lookup = (async () => {
      try {
        const row = (
          await this.#db.query('a key lookup', (db) =>
            db.select().from(apiKeys).where(eq(apiKeys.hash, keyHash)).limit(1),
          )
        )[0];
        if (!row) {
          this.#unknown.set(keyHash, true, Date.now());
          return undefined;
        }
        const record: KeyRecord = {
          id: row.id,
          name: row.name,
          tenant: row.tenant,
          models: row.models ?? null,
          rpm: row.rpm,
          tpm: row.tpm,
          monthlyTokenBudget: row.monthlyTokenBudget,
          manageModels: row.manageModels,
          ...(row.semanticCache
            ? {
                semantic: {
                  threshold: row.semanticThreshold ?? DEFAULT_SEMANTIC_THRESHOLD,
                  model: row.semanticModel,
                  reranker: row.semanticReranker,
                },
              }
            : {}),
          weight: row.weight,
          revokedAt: row.revokedAt,
        };
        const now = Date.now();
        this.#ledger.rememberKey(keyHash, record, now);
        this.#recent.set(keyHash, { record, at: now });
        return record;
      } catch {
        // HubDatabase.query logged the outage.
        return 'unreachable' as const;
      } finally {
        this.#lookups.delete(keyHash);
      }
    })();
    this.#lookups.set(keyHash, lookup);
    return lookup;
  }

  /** Revokes a key in libSQL and in the hub's fallback copy, so it stops working on the next request either way. */
  async revoke(id: string): Promise<{ revoked: boolean; databaseUpdated: boolean }> {
    const now = Date.now();
    const known = this.#ledger.revokeKey(id, now);
    for (const entry of this.#recent.values())
      if (entry.record.id === id) entry.record = { ...entry.record, revokedAt: entry.record.revokedAt ?? now };
    try {
      const updated = await this.#db.query('a key revocation', (db) =>
        db.update(apiKeys).set({ revokedAt: now }).where(eq(apiKeys.id, id)).returning({ id: apiKeys.id }),
      );
      return { revoked: known || updated.length > 0, databaseUpdated: true };
    } catch (err) {
      logError('libSQL unreachable while revoking a key; revoked in the hub only', { keyId: id, err });
      return { revoked: known, databaseUpdated: false };
    }
  }
}

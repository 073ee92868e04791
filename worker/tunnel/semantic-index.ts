/**
 * The semantic tier's vectors in libSQL's own vector search: one table per vector width (`F32_BLOB(N)`, since the
 * index needs a fixed dimension) with a cosine `libsql_vector_idx`, searched with `vector_top_k`. A row points at an
 * exact-cache entry (`cache_key`); the answer itself stays in `cache_entries`. Every call fails safe: a database
 * error is a miss, never an error for the client.
 */
import { vectorTable, vectorTableDdl } from '../../shared/cache/semantic.ts';
import type { HubDatabase } from '../db/hub-database.ts';

/** Nearest neighbours read from the index before the tenant, model and settings filter. */
const TOP_K = 32;
/** Expired rows are deleted at most this often, a bounded batch at a time. */
const SWEEP_MS = 10 * 60_000;
const SWEEP_BATCH = 2000;

/** What a cached question is filed under: a hit needs all of it to match. */
export interface SemanticScope {
  tenant: string;
  model: string;
  embedModel: string;
  /** semanticSettings(task): sampling, max tokens, roles — all but the words. */
  settings: string;
}

export interface SemanticMatch {
  cacheKey: string;
  /** Cosine similarity of the two questions' vectors. */
  score: number;
}

const vectorText = (v: number[]) => `[${v.map((x) => (Number.isFinite(x) ? x : 0)).join(',')}]`;

export class SemanticIndex {
  readonly #db: HubDatabase;
  /** Widths whose table this hub has made sure of. */
  readonly #ready = new Map<number, Promise<void>>();
  #lastSweep = 0;

  constructor(db: HubDatabase) {
    this.#db = db;
  }

  #ensure(dimensions: number): Promise<void> {
    let ready = this.#ready.get(dimensions);
    if (!ready) {
      ready = this.#db
        .query('the semantic index tables', (db) =>
          db.$client.batch(
            vectorTableDdl(dimensions).map((sql) => ({ sql, args: [] })),
            'write',
          ),
        )
        .then(() => undefined);
      // A failure is tried again by the next call.
      ready.catch(() => this.#ready.delete(dimensions));
      this.#ready.set(dimensions, ready);
    }
    return ready;
  }

  /** The most similar unexpired question in scope, if any reaches `threshold`. */
  async nearest(scope: SemanticScope, vector: number[], threshold: number): Promise<SemanticMatch | undefined> {
    if (this.#db.down || vector.length === 0) return undefined;
    try {
      await this.#ensure(vector.length);
      const t = vectorTable(vector.length);
      const v = vectorText(vector);
      const rs = await this.#db.query('a semantic lookup', (db) =>
        db.$client.execute({
          sql: `SELECT s.cache_key AS cache_key, vector_distance_cos(s.embedding, vector32(?)) AS distance
                FROM vector_top_k('${t}_idx', vector32(?), ${TOP_K}) AS v JOIN ${t} AS s ON s.rowid = v.id
                WHERE s.tenant = ? AND s.model = ? AND s.embed_model = ? AND s.settings = ? AND s.expires_at > ?
                ORDER BY distance LIMIT 1`,
          args: [v, v, scope.tenant, scope.model, scope.embedModel, scope.settings, Date.now()],
        }),
      );
      const row = rs.rows[0];
      if (!row) return undefined;
      const score = 1 - Number(row.distance);
      return score >= threshold ? { cacheKey: String(row.cache_key), score } : undefined;
    } catch (err) {
      console.warn('semantic lookup failed; treating it as a miss', String(err));
      return undefined;
    }
  }

  /** Files a question (its vector) under the exact-cache entry that holds its answer. */
  async add(scope: SemanticScope, vector: number[], cacheKey: string, expiresAt: number): Promise<void> {
    if (this.#db.down || vector.length === 0) return;
    try {
      await this.#ensure(vector.length);
      const t = vectorTable(vector.length);
      const now = Date.now();
      await this.#db.query('a semantic store', (db) =>
        db.$client.execute({
          sql: `INSERT INTO ${t} (tenant, model, embed_model, settings, cache_key, created_at, expires_at, embedding)
                VALUES (?, ?, ?, ?, ?, ?, ?, vector32(?))`,
          args: [
            scope.tenant,
            scope.model,
            scope.embedModel,
            scope.settings,
            cacheKey,
            now,
            expiresAt,
            vectorText(vector),
          ],
        }),
      );
      if (now - this.#lastSweep >= SWEEP_MS) {
        this.#lastSweep = now;
        await this.#db.query('a semantic sweep', (db) =>
          db.$client.execute({
            sql: `DELETE FROM ${t} WHERE rowid IN (SELECT rowid FROM ${t} WHERE expires_at <= ? LIMIT ${SWEEP_BATCH})`,
            args: [now],
          }),
        );
      }
    } catch (err) {
      console.warn('could not store a semantic cache entry', String(err));
    }
  }
}

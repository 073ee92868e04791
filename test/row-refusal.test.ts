/**
 * The usage outbox and the stored-response queue drop a row only when libSQL refused that row; a database that is
 * stopping or gone keeps every row queued. These are the errors a real sqld gives, through the Worker's own client.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sql } from 'drizzle-orm';
import { applyMigrations } from '../node/db/migrate.ts';
import { startSqld, type Sqld } from '../node/local/sqld.ts';
import { usage } from '../shared/db/schema.ts';
import { openDatabase } from '../worker/db/client.ts';
import { isRowRefusal } from '../worker/db/row-refusal.ts';

const row = { id: 'r1', at: Date.now(), endpoint: '/v1/chat/completions', durationMs: 5, status: 200, outcome: 'ok' };

async function failure(call: () => PromiseLike<unknown>): Promise<unknown> {
  try {
    await call();
  } catch (err) {
    return err;
  }
  assert.fail('the call was expected to fail');
}

describe('row refusals against a real sqld', () => {
  let dir: string;
  let sqld: Sqld;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'row-refusal-'));
    sqld = await startSqld({ dbPath: path.join(dir, 'db') });
    await applyMigrations(sqld.url);
  });
  after(async () => {
    await sqld?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('a row breaking a constraint is a refusal; a missing table or a stopped database is not', async () => {
    const db = openDatabase(sqld.url, undefined, { timeoutMs: 2000 });
    await db.insert(usage).values(row);
    // `outcome` is NOT NULL: the database answers and refuses this row, and would refuse it again on every retry.
    const bad = await failure(() =>
      db.run(sql`insert into usage (id, at, endpoint, duration_ms, status) values ('r2', 1, '/x', 1, 200)`),
    );
    assert.equal(isRowRefusal(bad), true, String(bad));
    // A schema between migrations: the row would go in once the migration runs.
    const noTable = await failure(() => db.run(sql`insert into usage_next (id) values ('r3')`));
    assert.equal(isRowRefusal(noTable), false, String(noTable));
    await sqld.stop();
    const down = await failure(() => db.insert(usage).values({ ...row, id: 'r4' }));
    assert.equal(isRowRefusal(down), false, String(down));
  });
});

#!/usr/bin/env node
/** `npm run migrate`: bring a libSQL database (local sqld or Turso) up to the schema in `migrations/`. */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { createClient } from '@libsql/client';
import {
  databaseErrorMessage,
  DATABASE_HELP,
  DATABASE_OPTIONS,
  databaseTarget,
  displayUrl,
  type DatabaseTarget,
} from '../db/keys.ts';
import { applyMigrations, MIGRATIONS_DIR } from '../db/migrate.ts';
import { parseCommandLine, readCommandLineOrExit } from './command.ts';

const HELP = `Usage: npm run migrate -- [options]

Applies the migrations in migrations/ that the database does not have yet; running it again changes nothing.

Options (each also settable by the environment variable shown):
${DATABASE_HELP}
  -h, --help          show this help
`;

function readMigrateConfig(argv: string[], env: NodeJS.ProcessEnv): DatabaseTarget | undefined {
  const parsed = parseCommandLine(argv, HELP, DATABASE_OPTIONS);
  return parsed && databaseTarget(parsed.values, env);
}

/** drizzle records each applied migration by its journal timestamp (`when`); the tag is the human name for it. */
async function journal(): Promise<Map<number, string>> {
  const text = await readFile(path.join(MIGRATIONS_DIR, 'meta', '_journal.json'), 'utf8');
  const { entries } = JSON.parse(text) as { entries: Array<{ tag: string; when: number }> };
  return new Map(entries.map((e) => [e.when, e.tag]));
}

/** The journal timestamps of the migrations the database has, oldest first. */
async function appliedMigrations(target: DatabaseTarget): Promise<number[]> {
  const client = createClient({ url: target.url, ...(target.authToken ? { authToken: target.authToken } : {}) });
  try {
    const table = await client.execute({
      sql: "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
      args: ['__drizzle_migrations'],
    });
    if (table.rows.length === 0) return [];
    const rows = await client.execute('SELECT created_at FROM __drizzle_migrations ORDER BY created_at');
    return rows.rows.map((r) => Number(r.created_at));
  } finally {
    client.close();
  }
}

const target = readCommandLineOrExit('migrate', HELP, () => readMigrateConfig(process.argv.slice(2), process.env));

const where = displayUrl(target.url);
try {
  const tags = await journal();
  const before = new Set(await appliedMigrations(target));
  await applyMigrations(target.url, target.authToken);
  const after = await appliedMigrations(target);
  const name = (when: number) => tags.get(when) ?? `migration of ${new Date(when).toISOString()}`;
  const added = after.filter((when) => !before.has(when));
  const current = after.length > 0 ? name(after.at(-1)!) : 'no migration';
  if (added.length === 0) {
    console.log(
      `${where}: up to date, nothing to apply (at ${current}, ${after.length} migration${after.length === 1 ? '' : 's'} applied)`,
    );
  } else {
    for (const when of added) console.log(`${where}: applied ${name(when)}`);
    console.log(`${where}: ${added.length} migration${added.length === 1 ? '' : 's'} applied, now at ${current}`);
  }
} catch (err) {
  console.error(`npu-relay migrate: could not migrate ${where}: ${databaseErrorMessage(err)}
Check that the database is reachable (a local sqld runs while \`npm start\` does; its URL is in the banner) and, for Turso, that --auth-token / NPU_RELAY_LIBSQL_AUTH_TOKEN is set.`);
  process.exit(1);
}

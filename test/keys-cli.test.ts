/**
 * `npm run migrate` and `npm run keys`, run as the real CLIs against a real sqld; and the key `npm start` picks.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createClient, type Client } from '@libsql/client';
import { createKey, ENV_KEY_NAME, FIRST_KEY_NAME, openKeysDb, revokeKey, startKey } from '../node/db/keys.ts';
import { applyMigrations, MIGRATIONS_DIR } from '../node/db/migrate.ts';
import { startSqld, type Sqld } from '../node/local/sqld.ts';
import { ConfigError } from '../node/config.ts';
import { readKeysCommand } from '../node/cli/keys-command.ts';
import { hashApiKey, visiblePrefix } from '../shared/keys.ts';
import { runCommand } from './support/run-command.ts';

/** Runs a command in the project root with no database settings inherited from the caller's environment. */
const run = (command: string, args: string[], env: NodeJS.ProcessEnv = {}) =>
  runCommand(command, args, { env, unset: ['NPU_RELAY_LIBSQL_URL', 'NPU_RELAY_LIBSQL_AUTH_TOKEN'] });

const migrateCli = (args: string[], env?: NodeJS.ProcessEnv) =>
  run(process.execPath, ['node/cli/migrate.ts', ...args], env);
const keysCli = (args: string[], env?: NodeJS.ProcessEnv) => run(process.execPath, ['node/cli/keys.ts', ...args], env);

let dir: string;
const servers: Sqld[] = [];
const clients: Client[] = [];

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-keys-'));
});
after(async () => {
  for (const c of clients) c.close();
  await Promise.all(servers.map((s) => s.stop()));
  await rm(dir, { recursive: true, force: true });
});

/** A fresh, empty database on its own sqld, and a raw client to look inside it. */
async function freshDatabase(): Promise<{ url: string; sql: Client }> {
  const sqld = await startSqld({ dbPath: path.join(dir, `db-${servers.length}`) });
  servers.push(sqld);
  const sql = createClient({ url: sqld.url });
  clients.push(sql);
  return { url: sqld.url, sql };
}

async function schemaOf(sql: Client) {
  const schema = await sql.execute(
    "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
  );
  return schema.rows.map((r) => ({ ...r }));
}

async function migrationsOf(sql: Client) {
  return (await sql.execute('SELECT id, hash, created_at FROM __drizzle_migrations ORDER BY id')).rows.map((r) => ({
    ...r,
  }));
}

const lastLine = (out: string) => out.trimEnd().split('\n').at(-1)!;

test('migrate creates the tables on an empty database, and a second run succeeds and changes nothing', async () => {
  const { url, sql } = await freshDatabase();
  assert.deepEqual(await schemaOf(sql), [], 'the database starts empty');

  const first = await migrateCli(['--url', url]);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /applied 0000_init/);
  const tables = (await schemaOf(sql)).filter((o) => o.type === 'table').map((o) => o.name);
  assert.deepEqual(tables, ['__drizzle_migrations', 'api_keys', 'cache_entries', 'responses', 'usage', 'usage_totals']);
  const schema = await schemaOf(sql);
  const migrations = await migrationsOf(sql);
  const journal = JSON.parse(readFileSync(path.join(MIGRATIONS_DIR, 'meta/_journal.json'), 'utf8')) as {
    entries: Array<{ tag: string }>;
  };
  assert.equal(migrations.length, journal.entries.length, 'every migration in the journal is applied once');
  const latest = journal.entries.at(-1)!.tag;

  // The second run finds the database through the environment variable instead of the flag.
  const second = await migrateCli([], { NPU_RELAY_LIBSQL_URL: url });
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stdout, new RegExp(`up to date, nothing to apply \\(at ${latest}`));
  assert.doesNotMatch(second.stdout, /applied 0000_init/);
  assert.deepEqual(await schemaOf(sql), schema, 'the schema is unchanged');
  assert.deepEqual(await migrationsOf(sql), migrations, 'no migration is recorded twice');
});

test('migrate: a missing URL or an unknown flag exits 2 with a message naming the fix; an unreachable database exits 1', async () => {
  const noUrl = await migrateCli([]);
  assert.equal(noUrl.code, 2);
  assert.match(noUrl.stderr, /no database given: pass --url or set NPU_RELAY_LIBSQL_URL/);

  const badUrl = await migrateCli(['--url', 'postgres://somewhere/db']);
  assert.equal(badUrl.code, 2);
  assert.match(
    badUrl.stderr,
    /--url \/ NPU_RELAY_LIBSQL_URL must be a libsql:\/\/, http\(s\):\/\/.* got 'postgres:\/\/somewhere\/db'/,
  );

  const unknown = await migrateCli(['--frob']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /Unknown option '--frob'/);
  assert.match(unknown.stderr, /Usage: npm run migrate/);

  const help = await migrateCli(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--auth-token TOKEN/);

  const { url } = await freshDatabase();
  const port = new URL(url).port;
  await servers.at(-1)!.stop();
  const down = await migrateCli(['--url', url]);
  assert.equal(down.code, 1);
  assert.match(down.stderr, new RegExp(`could not migrate http://127\\.0\\.0\\.1:${port}: fetch failed`));
});

test('keys: create shows the key once as the last line and stores only its hash; list hides it; revoke sets revoked_at', async () => {
  const { url, sql } = await freshDatabase();
  await applyMigrations(url);

  const created = await keysCli([
    'create',
    '--name',
    'laptop',
    '--models',
    'tiny-random-llama, other',
    '--rpm',
    '60',
    '--tpm',
    '5000',
    '--budget',
    '1000000',
    '--tenant',
    'acme',
    '--weight',
    '3',
    '--url',
    url,
  ]);
  assert.equal(created.code, 0, created.stderr);
  const key = lastLine(created.stdout);
  assert.match(key, /^sk-relay-[A-Za-z0-9_-]{43}$/);
  assert.ok(created.stdout.endsWith(`${key}\n`), 'nothing is printed after the key');
  assert.match(created.stdout, /only time the key is shown/);

  const rows = (await sql.execute('SELECT * FROM api_keys')).rows;
  assert.equal(rows.length, 1);
  const row = rows[0]!;
  const id = String(row.id);
  assert.equal(row.hash, await hashApiKey(key));
  assert.equal(row.prefix, visiblePrefix(key));
  assert.equal(row.name, 'laptop');
  assert.equal(row.tenant, 'acme');
  assert.deepEqual(JSON.parse(String(row.models)), ['tiny-random-llama', 'other']);
  assert.equal(row.rpm, 60);
  assert.equal(row.tpm, 5000);
  assert.equal(row.monthly_token_budget, 1000000);
  assert.equal(row.weight, 3);
  assert.equal(row.revoked_at, null);
  assert.ok(Math.abs(Number(row.created_at) - Date.now()) < 60_000, 'created_at is now, in milliseconds');
  const secret = key.slice(visiblePrefix(key).length);
  const stored = JSON.stringify(rows);
  assert.ok(!stored.includes(key) && !stored.includes(secret), 'the clear key appears nowhere in api_keys');

  const plain = await keysCli(['create', '--name', 'ci', '--manage'], { NPU_RELAY_LIBSQL_URL: url });
  assert.equal(plain.code, 0, plain.stderr);
  const [second] = (
    await sql.execute({ sql: 'SELECT id, tenant, models, rpm, weight FROM api_keys WHERE name = ?', args: ['ci'] })
  ).rows;
  assert.equal(second!.tenant, second!.id, 'the tenant defaults to the key id');
  assert.equal(second!.weight, 1, 'the weight defaults to 1');
  assert.equal(second!.models, null);
  assert.equal(second!.rpm, null);

  const listed = await keysCli(['list', '--url', url]);
  assert.equal(listed.code, 0, listed.stderr);
  const lines = listed.stdout.trimEnd().split('\n');
  assert.match(
    lines[0]!,
    /^id\s+name\s+prefix\s+tenant\s+models\s+rpm\s+tpm\s+budget\s+weight\s+manage\s+semantic\s+created\s+revoked$/,
  );
  assert.equal(lines.length, 3);
  assert.match(
    listed.stdout,
    new RegExp(
      `${row.id}\\s+laptop\\s+${visiblePrefix(key)}…\\s+acme\\s+tiny-random-llama,other\\s+60\\s+5000\\s+1000000\\s+3\\s+-\\s+-\\s+\\d{4}-\\d\\d-\\d\\dT[\\d:]+Z\\s+-\\n`,
    ),
  );
  assert.match(
    listed.stdout,
    /\sci\s+sk-relay-\S+\s+\S+\s+all\s+-\s+-\s+-\s+1\s+yes\s+-\s+\d{4}-/,
    'list shows the manage scope',
  );
  assert.ok(!listed.stdout.includes(key) && !listed.stdout.includes(secret), 'list never shows the secret');
  assert.ok(!listed.stdout.includes(String(row.hash)), 'list never shows the hash');

  const revoked = await keysCli(['revoke', String(row.id), '--url', url]);
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.match(revoked.stdout, new RegExp(`Revoked ${row.id} 'laptop'`));
  const revokedAt = (await sql.execute({ sql: 'SELECT revoked_at FROM api_keys WHERE id = ?', args: [id] })).rows[0]!
    .revoked_at;
  assert.ok(typeof revokedAt === 'number' && Math.abs(revokedAt - Date.now()) < 60_000, 'revoked_at is set to now');
  const others = (await sql.execute({ sql: 'SELECT revoked_at FROM api_keys WHERE id != ?', args: [id] })).rows;
  assert.deepEqual(
    others.map((r) => r.revoked_at),
    [null],
    'only that key is revoked',
  );

  const again = await keysCli(['revoke', String(row.id), '--url', url]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /was already revoked/);
  assert.equal(
    (await sql.execute({ sql: 'SELECT revoked_at FROM api_keys WHERE id = ?', args: [id] })).rows[0]!.revoked_at,
    revokedAt,
    'the first revocation time stays',
  );

  const relisted = await keysCli(['list', '--url', url]);
  assert.match(
    relisted.stdout,
    new RegExp(`${row.id}\\s+laptop\\s.*Z\\s+\\d{4}-\\d\\d-\\d\\dT[\\d:]+Z\\n`),
    'list shows when the key was revoked',
  );

  const unknown = await keysCli(['revoke', 'key_doesnotexist', '--url', url]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /there is no API key with id 'key_doesnotexist'/);
  assert.equal(unknown.stdout, '');

  // The manage scope: --manage, and its older spelling --manage-models; off by default.
  for (const [name, flags] of [
    ['ops', ['--manage']],
    ['ops-old', ['--manage-models']],
    ['no-scope', []],
  ] as const) {
    const made = await keysCli(['create', '--name', name, ...flags], { NPU_RELAY_LIBSQL_URL: url });
    assert.equal(made.code, 0, made.stderr);
    const [scoped] = (await sql.execute({ sql: 'SELECT manage_models FROM api_keys WHERE name = ?', args: [name] }))
      .rows;
    assert.equal(Number(scoped!.manage_models), flags.length ? 1 : 0, `${name}: manage scope`);
  }

  // The semantic cache tier: off by default; on with the default threshold and model, or with both given (and a
  // cross-encoder's verdict).
  for (const [name, flags, expected] of [
    ['no-semantic', [], [0, null, null, null]],
    ['semantic', ['--semantic-cache'], [1, 0.92, null, null]],
    [
      'semantic-tuned',
      [
        '--semantic-cache',
        '--semantic-threshold',
        '0.85',
        '--semantic-model',
        'bge',
        '--semantic-reranker',
        'ms-marco',
      ],
      [1, 0.85, 'bge', 'ms-marco'],
    ],
  ] as const) {
    const made = await keysCli(['create', '--name', name, ...flags], { NPU_RELAY_LIBSQL_URL: url });
    assert.equal(made.code, 0, made.stderr);
    const [row] = (
      await sql.execute({
        sql: 'SELECT semantic_cache, semantic_threshold, semantic_model, semantic_reranker FROM api_keys WHERE name = ?',
        args: [name],
      })
    ).rows;
    assert.deepEqual(
      [Number(row!.semantic_cache), row!.semantic_threshold, row!.semantic_model, row!.semantic_reranker],
      expected,
      name,
    );
  }
  // `list` shows each key's semantic cache settings: off, or its threshold, embedding model (`auto`: the default), reranker.
  const withSemantic = await keysCli(['list'], { NPU_RELAY_LIBSQL_URL: url });
  assert.equal(withSemantic.code, 0, withSemantic.stderr);
  const [header, ...listedRows] = withSemantic.stdout.trimEnd().split('\n');
  const [from, to] = [header!.indexOf('semantic'), header!.indexOf('created')];
  assert.ok(from > 0 && to > from, header);
  const semanticOf = (name: string) =>
    listedRows
      .find((l) => l.includes(`  ${name}  `))
      ?.slice(from, to)
      .trim();
  assert.equal(semanticOf('no-semantic'), '-');
  assert.equal(semanticOf('semantic'), '0.92 auto');
  assert.equal(semanticOf('semantic-tuned'), '0.85 bge +ms-marco');
});

test('keys: bad numbers, bad names, unknown flags and misplaced arguments are each refused with a message naming the fix', () => {
  const cases: Array<[string[], RegExp]> = [
    [['create', '--name', 'x', '--rpm', '0'], /--rpm must be a positive integer, got '0'/],
    [['create', '--name', 'x', '--rpm=-5'], /--rpm must be a positive integer, got '-5'/],
    [['create', '--name', 'x', '--rpm', '1.5'], /--rpm must be a positive integer, got '1.5'/],
    [['create', '--name', 'x', '--tpm', '1e3'], /--tpm must be a positive integer, got '1e3'/],
    [['create', '--name', 'x', '--tpm', 'lots'], /--tpm must be a positive integer, got 'lots'/],
    [['create', '--name', 'x', '--budget', ''], /--budget must be a positive integer, got ''/],
    [['create', '--name', 'x', '--budget', '99999999999999999999'], /--budget must be a positive integer/],
    [['create', '--name', '  '], /--name must not be empty/],
    [['create'], /create needs --name NAME/],
    [['create', '--name', 'x', '--models', 'a,,b'], /--models must be model ids separated by commas/],
    [['create', '--name', 'x', '--tenant', ''], /--tenant must not be empty/],
    [['create', '--name', 'x', '--semantic-threshold', '0.9'], /go only with --semantic-cache/],
    [['create', '--name', 'x', '--semantic-cache', '--semantic-threshold', '1.5'], /must be a number in \(0, 1\]/],
    [['create', '--name', 'x', '--semantic-cache', '--semantic-threshold', 'high'], /must be a number in \(0, 1\]/],
    [['create', '--name', 'x', '--semantic-cache', '--semantic-model', ' '], /--semantic-model must not be empty/],
    [['create', '--name', 'x', '--semantic-reranker', 'r'], /go only with --semantic-cache/],
    [['create', '--name', 'x', '--semantic-cache', '--semantic-reranker', ''], /--semantic-reranker must not be empty/],
    [['create', '--name', 'x', '--weight', '0'], /--weight must be a positive integer, got '0'/],
    [['create', '--name', 'x', '--weight', '1001'], /--weight must be at most 1000, got 1001/],
    [['create', '--name', 'x', '--bogus'], /Unknown option '--bogus'/],
    [['create', '--name', 'x', 'extra'], /create takes no arguments, got 'extra'/],
    [['list', '--rpm', '5'], /--rpm goes only with create, not with list/],
    [['revoke'], /revoke takes exactly one key id/],
    [['revoke', 'a', 'b'], /revoke takes exactly one key id .* got 'a' 'b'/],
    [['rotate'], /unknown command 'rotate': use create, list or revoke/],
    [[], /a command is required: create, list or revoke/],
  ];
  // The command line is read as a function (no process, no database): each mistake is a ConfigError, which the CLI
  // turns into exit 2 with the message on stderr (the next test runs two of them as the real CLI).
  for (const [args, message] of cases) {
    assert.throws(
      () => readKeysCommand([...args, '--url', 'http://127.0.0.1:1'], {}),
      (err: unknown) => err instanceof ConfigError && message.test(err.message),
      args.join(' '),
    );
  }
});

test('keys: a mistake on the command line exits 2 with the message on stderr, nothing on stdout, and writes nothing', async () => {
  const { url, sql } = await freshDatabase();
  await applyMigrations(url);
  for (const [args, message] of [
    [['create', '--name', 'x', '--rpm', '0'], /--rpm must be a positive integer, got '0'/],
    [['create', '--name', 'x', '--bogus'], /Unknown option '--bogus'/],
  ] as const) {
    const r = await keysCli([...args, '--url', url]);
    assert.equal(r.code, 2, `${args.join(' ')} exits 2 (got ${r.code}: ${r.stderr})`);
    assert.match(r.stderr, message, args.join(' '));
    assert.equal(r.stdout, '', `${args.join(' ')} prints nothing on stdout`);
  }
  // Neither a URL nor a local stack (`npm start`'s data folder) to fall back on.
  const noUrl = await keysCli(['list'], { NPU_RELAY_DATA_DIR: path.join(dir, 'no-local-stack') });
  assert.equal(noUrl.code, 2);
  assert.match(
    noUrl.stderr,
    /no database given and no local one in .*no-local-stack .*pass --url or set NPU_RELAY_LIBSQL_URL/,
  );
  assert.equal((await sql.execute('SELECT count(*) AS n FROM api_keys')).rows[0]!.n, 0, 'no key was created');
});

test('keys: an unmigrated database fails with exit 1 and says to migrate', async () => {
  const { url } = await freshDatabase();
  const r = await keysCli(['list', '--url', url]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /list failed on http:\/\/127\.0\.0\.1:\d+: .*no such table: api_keys/);
  assert.match(r.stderr, /npm run migrate/);
});

test('npm run migrate and npm run keys work through npm, the key still the last line', async () => {
  const { url, sql } = await freshDatabase();
  const migrated = await run('npm', ['run', 'migrate', '--', '--url', url]);
  assert.equal(migrated.code, 0, migrated.stderr);
  assert.match(migrated.stdout, /applied 0000_init/);
  const created = await run('npm', ['run', 'keys', '--', 'create', '--name', 'via npm', '--url', url]);
  assert.equal(created.code, 0, created.stderr);
  const key = lastLine(created.stdout);
  assert.match(key, /^sk-relay-/);
  assert.equal((await sql.execute('SELECT hash FROM api_keys')).rows[0]!.hash, await hashApiKey(key));
});

test('the key npm start uses: NPU_RELAY_API_KEY, else the saved one while valid, else a first key when none is valid', async () => {
  const { url } = await freshDatabase();
  await applyMigrations(url);
  const { db, close } = openKeysDb({ url });
  try {
    const first = await startKey(db, {});
    assert.ok(first.source === 'created' && !first.reused);
    assert.equal(first.info.name, FIRST_KEY_NAME);

    const again = await startKey(db, { saved: first.key });
    assert.ok(again.source === 'saved');
    assert.equal(again.key, first.key);

    await revokeKey(db, first.info.id);
    const replaced = await startKey(db, { saved: first.key });
    assert.ok(replaced.source === 'created', 'a revoked saved key is replaced when no valid key is left');
    assert.notEqual(replaced.key, first.key, 'the revoked key is never brought back');

    await revokeKey(db, replaced.info.id);
    await createKey(db, { name: 'made with the CLI' });
    const none = await startKey(db, { saved: replaced.key });
    assert.deepEqual(none, { source: 'none', activeKeys: 1 }, 'no key is made while another valid key exists');

    const given = 'sk-dev-given-by-env';
    const registered = await startKey(db, { given, saved: replaced.key });
    assert.ok(registered.source === 'env' && registered.created);
    assert.equal(registered.info.name, ENV_KEY_NAME);
    assert.equal(registered.key, given);
    const known = await startKey(db, { given });
    assert.ok(known.source === 'env' && !known.created);
    assert.equal(known.info.id, registered.info.id);
  } finally {
    close();
  }

  // A key saved before keys lived in the database becomes the first key, so clients using it keep working.
  const other = await freshDatabase();
  await applyMigrations(other.url);
  const second = openKeysDb({ url: other.url });
  try {
    const old = 'sk-relay-saved-by-an-earlier-version';
    const imported = await startKey(second.db, { saved: old });
    assert.ok(imported.source === 'created' && imported.reused);
    assert.equal(imported.key, old);
    assert.equal(imported.info.name, FIRST_KEY_NAME);
    assert.equal((await other.sql.execute('SELECT hash FROM api_keys')).rows[0]!.hash, await hashApiKey(old));
  } finally {
    second.close();
  }
});

#!/usr/bin/env node
/** `npm run keys`: create, list and revoke client API keys in the edge's libSQL database. */
import { MAX_KEY_WEIGHT } from '../../shared/protocol/frames.ts';
import path from 'node:path';
import { ConfigError } from '../config.ts';
import {
  createKey,
  databaseErrorMessage,
  DATABASE_HELP,
  DATABASE_OPTIONS,
  databaseTarget,
  displayUrl,
  KeyError,
  listKeys,
  openKeysDb,
  revokeKey,
  type DatabaseTarget,
  type KeyInfo,
  type NewKey,
} from '../db/keys.ts';
import { PROJECT_ROOT } from '../local/edge.ts';
import { localDatabase, type LocalDatabase } from '../local/local-db.ts';
import { parseCommandLine, readCommandLineOrExit } from './command.ts';

const HELP = `Usage: npm run keys -- <command> [options]

Commands:
  create --name NAME [--models a,b] [--rpm N] [--tpm N] [--budget N] [--tenant T] [--weight N] [--manage]
                      creates a key and prints it, once, as the last line: only its hash is stored
  list                lists the keys (never their secrets)
  revoke ID           revokes the key with that id; a running edge refuses it within 2 s, or at once
                      when NPU_RELAY_EDGE_URL and NPU_RELAY_ADMIN_TOKEN are set (the edge is told)

Options of create:
  --name NAME         what the key is for (required)
  --models a,b        the models the key may use, comma-separated          (default: all)
  --rpm N             requests per minute                                 (default: no limit)
  --tpm N             tokens per minute                                   (default: no limit)
  --budget N          tokens per calendar month (UTC)                     (default: no limit)
  --tenant T          keys of one tenant may share cached answers         (default: the key's own id)
  --weight N          its share of a busy device against other keys', 1 to 1000: a key of weight 3
                      is served three times the tokens of a key of weight 1 (docs/fair-shares.md) (default: 1)
  --manage            the manage scope: may pull, delete and copy models (Ollama /api/pull, /api/delete,
                      /api/copy) and unload (keep_alive 0) or pin (-1) them for every key (default: no);
                      --manage-models is the same

Options of every command (each also settable by the environment variable shown):
${DATABASE_HELP}
                      without either: the local database of \`npm start\` (in NPU_RELAY_DATA_DIR, default .data),
                      while it runs or after
  -h, --help          show this help

The database must be migrated first: npm run migrate -- --url URL
`;

/** A database named by flags or the environment, or `local`: the local stack's (`npm start`), found at run time. */
type Target = DatabaseTarget | { local: string };

type KeysCommand =
  | { command: 'create'; target: Target; input: NewKey }
  | { command: 'list'; target: Target }
  | { command: 'revoke'; target: Target; id: string; edge: { url: string; adminToken: string } | undefined };

const CREATE_OPTIONS = [
  'name',
  'models',
  'rpm',
  'tpm',
  'budget',
  'tenant',
  'weight',
  'manage',
  'manage-models',
] as const;

function positiveInt(flag: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!/^[1-9][0-9]*$/.test(raw) || !Number.isSafeInteger(n) || n <= 0)
    throw new ConfigError(`--${flag} must be a positive integer, got '${raw}'`);
  return n;
}

function readKeysCommand(argv: string[], env: NodeJS.ProcessEnv): KeysCommand | undefined {
  const parsed = parseCommandLine(
    argv,
    HELP,
    {
      ...DATABASE_OPTIONS,
      name: { type: 'string' },
      models: { type: 'string' },
      rpm: { type: 'string' },
      tpm: { type: 'string' },
      budget: { type: 'string' },
      tenant: { type: 'string' },
      weight: { type: 'string' },
      manage: { type: 'boolean' },
      'manage-models': { type: 'boolean' },
    },
    true,
  );
  if (!parsed) return undefined;
  const { values, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (command === undefined) throw new ConfigError(`a command is required: create, list or revoke\n\n${HELP}`);
  if (command !== 'create' && command !== 'list' && command !== 'revoke') {
    throw new ConfigError(`unknown command '${command}': use create, list or revoke\n\n${HELP}`);
  }
  if (command !== 'create') {
    const misplaced = CREATE_OPTIONS.filter((o) => values[o] !== undefined);
    if (misplaced.length > 0)
      throw new ConfigError(
        `${misplaced.map((o) => `--${o}`).join(', ')} ${misplaced.length === 1 ? 'goes' : 'go'} only with create, not with ${command}`,
      );
  }
  const expected = command === 'revoke' ? 1 : 0;
  if (rest.length !== expected) {
    throw new ConfigError(
      command === 'revoke'
        ? `revoke takes exactly one key id (see \`npm run keys -- list\`), got ${rest.length === 0 ? 'none' : rest.map((r) => `'${r}'`).join(' ')}`
        : `${command} takes no arguments, got ${rest.map((r) => `'${r}'`).join(' ')}`,
    );
  }
  if (command === 'revoke' && !rest[0]!.trim()) throw new ConfigError('the key id to revoke must not be empty');

  // Validate every flag before touching the database, so a typo never half-creates anything.
  let input: NewKey | undefined;
  if (command === 'create') {
    const name = values.name?.trim();
    if (!name)
      throw new ConfigError(
        values.name === undefined ? 'create needs --name NAME: what the key is for' : '--name must not be empty',
      );
    let models: string[] | undefined;
    if (values.models !== undefined) {
      models = values.models.split(',').map((m) => m.trim());
      if (models.some((m) => !m))
        throw new ConfigError(
          `--models must be model ids separated by commas, with no empty ones, got '${values.models}'`,
        );
    }
    if (values.tenant !== undefined && !values.tenant.trim()) throw new ConfigError('--tenant must not be empty');
    const weight = positiveInt('weight', values.weight);
    if (weight !== undefined && weight > MAX_KEY_WEIGHT)
      throw new ConfigError(`--weight must be at most ${MAX_KEY_WEIGHT}, got ${weight}`);
    input = {
      name,
      models,
      rpm: positiveInt('rpm', values.rpm),
      tpm: positiveInt('tpm', values.tpm),
      monthlyTokenBudget: positiveInt('budget', values.budget),
      tenant: values.tenant?.trim(),
      manageModels: values.manage === true || values['manage-models'] === true,
      weight,
    };
  }
  // Without a database named, the local stack's: `npm start` keeps it in the data folder.
  const target: Target =
    values.url === undefined && !env.NPU_RELAY_LIBSQL_URL
      ? { local: path.resolve(env.NPU_RELAY_DATA_DIR ?? path.join(PROJECT_ROOT, '.data')) }
      : databaseTarget(values, env);
  if (command === 'create') return { command, target, input: input! };
  if (command === 'revoke') {
    // With the edge's URL and admin token, the running edge is told too, so it refuses the key from the very next
    // request (otherwise it rechecks keys against the database within 2 s).
    const edgeUrl = env.NPU_RELAY_EDGE_URL;
    const adminToken = env.NPU_RELAY_ADMIN_TOKEN;
    return {
      command,
      target,
      id: rest[0]!.trim(),
      edge: edgeUrl && adminToken ? { url: edgeUrl, adminToken } : undefined,
    };
  }
  return { command, target };
}

const time = (ms: number | null) => (ms === null ? '-' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z'));
const limit = (n: number | null) => (n === null ? '-' : String(n));

function table(keys: KeyInfo[]): string {
  const header = [
    'id',
    'name',
    'prefix',
    'tenant',
    'models',
    'rpm',
    'tpm',
    'budget',
    'weight',
    'manage',
    'created',
    'revoked',
  ];
  const rows = keys.map((k) => [
    k.id,
    k.name,
    `${k.prefix}…`,
    k.tenant,
    k.models ? k.models.join(',') : 'all',
    limit(k.rpm),
    limit(k.tpm),
    limit(k.monthlyTokenBudget),
    String(k.weight),
    k.manageModels ? 'yes' : '-',
    time(k.createdAt),
    time(k.revokedAt),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows]
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

const cmd = readCommandLineOrExit('keys', HELP, () => readKeysCommand(process.argv.slice(2), process.env));

let local: LocalDatabase | undefined;
let target: DatabaseTarget;
if ('local' in cmd.target) {
  local = await localDatabase(cmd.target.local).catch((err: unknown) => {
    console.error(
      `npu-relay keys: could not start the local database in ${cmd.target && 'local' in cmd.target ? cmd.target.local : ''}: ${(err as Error).message}`,
    );
    process.exit(1);
  });
  if (!local) {
    console.error(
      `npu-relay keys: no database given and no local one in ${cmd.target.local} (run \`npm start\` once, or set NPU_RELAY_DATA_DIR): pass --url or set NPU_RELAY_LIBSQL_URL for another database (libsql://… for Turso)`,
    );
    process.exit(2);
  }
  target = { url: local.url, authToken: undefined };
  console.error(
    local.via === 'running'
      ? `Using the database of the running \`npm start\` (${local.url}).`
      : `Using the local database in ${cmd.target.local} (\`npm start\` is not running).`,
  );
} else {
  target = cmd.target;
}
const { db, close } = openKeysDb(target);
try {
  switch (cmd.command) {
    case 'create': {
      const { key, info } = await createKey(db, cmd.input);
      console.log(
        `Created API key ${info.id} '${info.name}' (tenant ${info.tenant}; models: ${info.models ? info.models.join(', ') : 'all'}; ` +
          `rpm: ${limit(info.rpm)}; tpm: ${limit(info.tpm)}; monthly token budget: ${limit(info.monthlyTokenBudget)}; weight: ${info.weight}).`,
      );
      console.log('This is the only time the key is shown: only its hash is stored. Keep it now:');
      console.log(key);
      break;
    }
    case 'list': {
      const keys = await listKeys(db);
      console.log(
        keys.length === 0
          ? `No API keys in ${displayUrl(target.url)}: create one with \`npm run keys -- create --name NAME\`.`
          : table(keys),
      );
      break;
    }
    case 'revoke': {
      const { info, alreadyRevoked } = await revokeKey(db, cmd.id);
      console.log(
        alreadyRevoked
          ? `${info.id} '${info.name}' was already revoked at ${time(info.revokedAt)}.`
          : `Revoked ${info.id} '${info.name}' at ${time(info.revokedAt)}.`,
      );
      if (cmd.edge) {
        const res = await fetch(new URL(`/admin/keys/${encodeURIComponent(cmd.id)}/revoke`, cmd.edge.url), {
          method: 'POST',
          headers: { authorization: `Bearer ${cmd.edge.adminToken}` },
        });
        if (res.ok) console.log(`The edge at ${cmd.edge.url} refuses it from the next request on.`);
        else
          console.error(
            `npu-relay keys: the edge at ${cmd.edge.url} answered ${res.status}; it will refuse the key within 2 s anyway.`,
          );
      } else {
        console.log(
          'A running edge refuses it within 2 s (set NPU_RELAY_EDGE_URL and NPU_RELAY_ADMIN_TOKEN to tell it at once).',
        );
      }
      break;
    }
  }
} catch (err) {
  if (err instanceof KeyError) {
    console.error(`npu-relay keys: ${err.message}`);
  } else {
    console.error(`npu-relay keys: ${cmd.command} failed on ${displayUrl(target.url)}: ${databaseErrorMessage(err)}
Check that the database is reachable (a local sqld runs while \`npm start\` does; its URL is in the banner), that it is migrated (\`npm run migrate\`) and, for Turso, that --auth-token / NPU_RELAY_LIBSQL_AUTH_TOKEN is set.`);
  }
  process.exitCode = 1;
} finally {
  close();
  await local?.stop();
}

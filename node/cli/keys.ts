#!/usr/bin/env node
/** `npm run keys`: create, list and revoke client API keys in the edge's libSQL database (flags: keys-command.ts). */
import {
  createKey,
  databaseErrorMessage,
  displayUrl,
  KeyError,
  listKeys,
  openKeysDb,
  revokeKey,
  type DatabaseTarget,
  type KeyInfo,
} from '../db/keys.ts';
import { localDatabase, type LocalDatabase } from '../local/local-db.ts';
import { readCommandLineOrExit } from './command.ts';
import { KEYS_HELP, readKeysCommand } from './keys-command.ts';

const time = (ms: number | null) => (ms === null ? '-' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z'));
const limit = (n: number | null) => (n === null ? '-' : String(n));
/**
 * The semantic cache tier: its threshold, embedding model (`auto`: the edge's default, then the first one) and, when
 * it has one, the reranker whose verdict a hit also needs.
 */
const semantic = (k: KeyInfo) =>
  k.semanticCache
    ? `${k.semanticThreshold} ${k.semanticModel ?? 'auto'}${k.semanticReranker ? ` +${k.semanticReranker}` : ''}`
    : '-';

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
    'semantic',
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
    semantic(k),
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

const cmd = readCommandLineOrExit('keys', KEYS_HELP, () => readKeysCommand(process.argv.slice(2), process.env));

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

#!/usr/bin/env node
/**
 * `npm start`: the whole relay on one machine — a local libSQL server, the Worker in workerd, and an agent — wired
 * together, with the URL, key and models printed. Ctrl-C stops all three.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../config.ts';
import { openKeysDb, startKey } from '../db/keys.ts';
import { applyMigrations } from '../db/migrate.ts';
import { createLogger, levelValue } from '../log.ts';
import { PROJECT_ROOT, startLocalEdge, type LocalEdge } from '../local/edge.ts';
import { EDGE_VARIABLES, edgeVarsFrom } from '../local/edge-vars.ts';
import { ensureModels, retryPulls, type FirstStartOptions } from '../local/first-start.ts';
import { forgetLocalEdge, localAgentToken, noteLocalEdge } from '../local/local-stack.ts';
import { freePort } from '../local/ports.ts';
import { forgetLocalDb, noteLocalDb, sqldDataPath } from '../local/local-db.ts';
import { startSqld, type Sqld } from '../local/sqld.ts';
import { createAgentRuntime, type AgentRuntime } from '../runtime.ts';
import { parseCommandLine, readCommandLineOrExit } from './command.ts';

const HELP = `Usage: npm start [-- --help]

Runs the whole relay locally: sqld (data in .data/), the edge Worker in workerd, and an agent serving the models
in the models folder. Migrates the database, makes sure there is an API key, prints the URL and the key, and
stops everything on Ctrl-C. Manage keys with \`npm run keys\`, which finds this local database by itself.

Environment:
  NPU_RELAY_PORT        port of the edge on 127.0.0.1            (default 8787)
  NPU_RELAY_API_KEY     API key clients use, added to the database if missing
                                                                 (default: a key made once, kept in .data/api-key)
  NPU_RELAY_ADMIN_TOKEN token for the edge's /admin/ endpoints   (default: generated once, kept in .data/admin-token)
  NPU_RELAY_AGENT_TOKEN token agents present to attach           (default: generated once, kept in .data/agent-token;
                                                                 \`npm run agent -- --local\` reads it from there)
  NPU_RELAY_MODELS_DIR  folder of model folders                  (default ./models)
  NPU_RELAY_DATA_DIR    where local state is kept                (default ./.data)
  NPU_RELAY_LOG_LEVEL   agent and edge log level                 (default info)
  NPU_RELAY_NO_PULL     1: never pull models; with an empty models folder, start without any
                                                                 (default: pull the default models when there are none)
  NPU_RELAY_DEFAULT_MODELS  hub repo ids to pull when there are no models, comma-separated
  HF_ENDPOINT, HF_TOKEN the model hub and its token              (default https://huggingface.co, none)

The edge's own settings (${Object.keys(EDGE_VARIABLES).join(', ')})
apply as under \`wrangler dev\` and in production; NPU_RELAY_LIBSQL_URL is refused (npm start runs its own database).
`;

function readStartConfig(argv: string[], env: NodeJS.ProcessEnv) {
  if (!parseCommandLine(argv, HELP, {})) return undefined;
  const port = Number(env.NPU_RELAY_PORT ?? 8787);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new ConfigError(`NPU_RELAY_PORT must be a port number, got '${env.NPU_RELAY_PORT}'`);
  return {
    port,
    apiKey: env.NPU_RELAY_API_KEY || undefined,
    adminToken: env.NPU_RELAY_ADMIN_TOKEN || undefined,
    agentToken: env.NPU_RELAY_AGENT_TOKEN || undefined,
    edgeVars: edgeVarsFrom(env),
    modelsDir: path.resolve(env.NPU_RELAY_MODELS_DIR ?? path.join(PROJECT_ROOT, 'models')),
    dataDir: path.resolve(env.NPU_RELAY_DATA_DIR ?? path.join(PROJECT_ROOT, '.data')),
    logLevel: env.NPU_RELAY_LOG_LEVEL ?? 'info',
    noPull: booleanVar('NPU_RELAY_NO_PULL', env.NPU_RELAY_NO_PULL),
    defaultModels: env.NPU_RELAY_DEFAULT_MODELS
      ? env.NPU_RELAY_DEFAULT_MODELS.split(',')
          .map((r) => r.trim())
          .filter(Boolean)
      : undefined,
    hubEndpoint: env.HF_ENDPOINT || 'https://huggingface.co',
    hubToken: env.HF_TOKEN || undefined,
  };
}

function booleanVar(name: string, raw: string | undefined): boolean {
  if (raw === undefined || raw === '' || raw === '0' || raw.toLowerCase() === 'false') return false;
  if (raw === '1' || raw.toLowerCase() === 'true') return true;
  throw new ConfigError(`${name} must be 1 or 0 (true or false), got '${raw}'`);
}

/** A file's trimmed content, or undefined when the file does not exist or is empty. */
async function readSecretFile(file: string): Promise<string | undefined> {
  try {
    return (await readFile(file, 'utf8')).trim() || undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** The admin token: the one given, else one generated on first start and kept for the next. */
async function devAdminToken(dataDir: string, given: string | undefined): Promise<string> {
  if (given) return given;
  const file = path.join(dataDir, 'admin-token');
  const saved = await readSecretFile(file);
  if (saved) return saved;
  const token = randomBytes(32).toString('base64url');
  await writeFile(file, `${token}\n`, { mode: 0o600 });
  return token;
}

/**
 * The API key to print: NPU_RELAY_API_KEY (registered in the database if missing), else the key saved in
 * .data/api-key while the database holds it unrevoked, else — when no valid key exists — a new one, saved there.
 */
async function devApiKey(dbUrl: string, dataDir: string, given: string | undefined): Promise<string | undefined> {
  const file = path.join(dataDir, 'api-key');
  const { db, close } = openKeysDb({ url: dbUrl });
  let chosen;
  try {
    chosen = await startKey(db, { given, saved: given ? undefined : await readSecretFile(file) });
  } finally {
    close();
  }
  switch (chosen.source) {
    case 'env':
      if (chosen.info.revokedAt !== null) {
        console.error(
          `npu-relay: warning: NPU_RELAY_API_KEY is the key ${chosen.info.id}, revoked at ${new Date(chosen.info.revokedAt).toISOString()}; clients using it will be refused`,
        );
      } else if (chosen.created) {
        console.error(`npu-relay: added NPU_RELAY_API_KEY to the database as ${chosen.info.id} '${chosen.info.name}'`);
      }
      return chosen.key;
    case 'saved':
      return chosen.key;
    case 'created':
      if (!chosen.reused) await writeFile(file, `${chosen.key}\n`, { mode: 0o600 });
      console.error(`npu-relay: created the API key ${chosen.info.id} '${chosen.info.name}', kept in ${file}`);
      return chosen.key;
    case 'none':
      console.error(
        `npu-relay: no API key to show: ${file} holds no valid key, and the ${chosen.activeKeys} valid key(s) in the database are ` +
          'stored as hashes only. Use one of those, or create one with `npm run keys -- create --name NAME --url <the libSQL URL below>`.',
      );
      return undefined;
  }
}

const config = readCommandLineOrExit('start', HELP, () => readStartConfig(process.argv.slice(2), process.env));

await mkdir(config.dataDir, { recursive: true });
const adminToken = await devAdminToken(config.dataDir, config.adminToken);
// Kept in the data folder, where `npm run agent -- --local` finds it to join this stack.
const agentToken = await localAgentToken(config.dataDir, config.agentToken);
const pulls = new AbortController();

let apiKey: string | undefined;
let sqld: Sqld | undefined;
let edge: LocalEdge | undefined;

/** The edge's lines are filtered by the agent's NPU_RELAY_LOG_LEVEL; until the banner is out, only warnings. */
let edgeLevel = levelValue('warn');
function printEdgeLine(line: { level: string; message: string }): void {
  const text = line.message.trimEnd();
  if (text === '') return;
  let level = line.level;
  try {
    level = (JSON.parse(text) as { level?: string }).level ?? level;
  } catch {
    // Not one of the Worker's JSON lines (workerd's own messages): its console level stands.
  }
  if (levelValue(level) >= edgeLevel) process.stderr.write(`${text}\n`);
}
let runtime: AgentRuntime | undefined;
let stopping: Promise<never> | undefined;
let startLog: ReturnType<typeof createLogger> | undefined;
let retryPullsAfterBanner: (() => void) | undefined;

/** Stops the agent, then the edge, then the database; a second Ctrl-C waits for the first instead of cutting it short. */
function stopAll(code: number): Promise<never> {
  stopping ??= (async () => {
    console.error('\nnpu-relay: stopping…');
    pulls.abort();
    await forgetLocalEdge(config.dataDir).catch(() => {});
    runtime?.manager.close();
    await runtime?.agent.stop().catch(() => {});
    await runtime?.engine.close().catch(() => {});
    await edge?.stop().catch(() => {});
    await sqld?.stop().catch(() => {});
    await forgetLocalDb(config.dataDir).catch(() => {});
    process.exit(code);
  })();
  return stopping;
}
process.on('SIGINT', () => void stopAll(0));
process.on('SIGTERM', () => void stopAll(0));

try {
  // The database and the edge start side by side (the edge reads libSQL only when requests come): the edge's
  // bundling and workerd's start take seconds, and a first start should answer as soon as it can.
  const sqldUrl = `http://127.0.0.1:${await freePort()}`;
  const started = await Promise.allSettled([
    (async () => {
      sqld = await startSqld({ dbPath: sqldDataPath(config.dataDir), port: Number(new URL(sqldUrl).port) });
      await applyMigrations(sqld.url);
      await noteLocalDb(config.dataDir, sqld.url);
      apiKey = await devApiKey(sqld.url, config.dataDir, config.apiKey);
    })(),
    (async () => {
      edge = await startLocalEdge({
        port: config.port,
        persistDir: path.join(config.dataDir, 'wrangler'),
        // The edge's JSON lines (one per request, and its warnings) go to stderr beside the agent's, at the same level.
        onLog: printEdgeLine,
        // The edge checks API keys against libSQL, so the key itself is not among its variables.
        vars: {
          ...config.edgeVars,
          NPU_RELAY_AGENT_TOKEN: agentToken,
          NPU_RELAY_ADMIN_TOKEN: adminToken,
          NPU_RELAY_LIBSQL_URL: sqldUrl,
        },
      });
      await noteLocalEdge(config.dataDir, edge.url.toString());
    })(),
  ]);
  // Both settled first, so that stopping finds whatever did start.
  for (const s of started) if (s.status === 'rejected') throw s.reason;
  const firstStart: FirstStartOptions = {
    modelsDir: config.modelsDir,
    noPull: config.noPull,
    defaults: config.defaultModels,
    endpoint: config.hubEndpoint,
    token: config.hubToken,
    interactive: process.stdin.isTTY === true && process.stdout.isTTY === true,
    say: (line) => console.log(`npu-relay: ${line}`),
  };
  const models = await ensureModels(firstStart);
  const log = createLogger(config.logLevel, { agentId: 'local' });
  // Until the banner is out, only warnings: its start-up info lines say what the banner says, and would break it up.
  if (log.levelVal < log.levels.values.warn!) log.level = 'warn';
  startLog = log;
  runtime = await createAgentRuntime(
    {
      edgeUrl: edge!.url.toString(),
      agentToken,
      agentId: 'local',
      modelsDir: config.modelsDir,
      dataDir: config.dataDir,
      logLevel: config.logLevel,
      hub: { endpoint: config.hubEndpoint, token: config.hubToken },
    },
    log,
  );
  await runtime.agent.start();
  if (models.outcome === 'failed') {
    const manager = runtime.manager;
    // After the banner, so its lines follow it.
    retryPullsAfterBanner = () =>
      void retryPulls(models.missing, firstStart, () => manager.rescan(), pulls.signal).catch((err: Error) =>
        console.error(`npu-relay: the background pull stopped: ${err.message}`),
      );
  }
} catch (err) {
  console.error(`npu-relay: could not start: ${(err as Error).message}`);
  await stopAll(1);
}

const base = new URL('/v1', edge!.url).toString();
const models = runtime!.engine.models();
const chatModel = models.find((m) => m.kind === 'chat')?.id ?? '<model>';
const defaultDataDir = path.join(PROJECT_ROOT, '.data');
const agentLine = `npm run agent -- --local${config.dataDir === defaultDataDir ? '' : ` --data-dir ${config.dataDir}`} [--pool P] [--models DIR]`;
console.log(`
npu-relay is running
  OpenAI API:    ${base}
  Anthropic API: ${new URL('/v1/messages', edge!.url)}
  Ollama API:    ${new URL('/', edge!.url)}  (OLLAMA_HOST)
  Dashboard:     ${new URL('/dashboard', edge!.url)}  (log in with the admin token)
  API key:       ${apiKey ?? '(none shown: see the note above, or `npm run keys -- list`)'}
  Admin token:   ${adminToken}
  ${runtime!.summary.join('\n  ')}
  libSQL:        ${sqld!.url} (data in ${config.dataDir})

Another agent joins this stack (its token is read from ${path.join(config.dataDir, 'agent-token')}):
  ${agentLine}

Try it:
  curl -N ${base}/chat/completions \\
    -H "Authorization: Bearer ${apiKey ?? '<API key>'}" -H "Content-Type: application/json" \\
    -d '{"model":"${chatModel}","stream":true,"messages":[{"role":"user","content":"Hello!"}]}'

Press Ctrl-C to stop.`);
if (startLog) startLog.level = config.logLevel;
edgeLevel = levelValue(config.logLevel);
if (models.length === 0) {
  console.log(
    `\nNo models yet: \`npm run pull -- <hub repo id>\` (e.g. onnx-community/Qwen2.5-0.5B-Instruct) puts one in ${config.modelsDir} (or set NPU_RELAY_MODELS_DIR to a folder of models); it is served as soon as it is there.`,
  );
}
retryPullsAfterBanner?.();

#!/usr/bin/env node
/**
 * `npm start`: the whole relay on one machine — a local libSQL server, the Worker in workerd, and an agent — wired
 * together, with the URL, key and models printed. Ctrl-C stops all three.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError } from '../config.ts';
import { createLogger } from '../log.ts';
import { PROJECT_ROOT, startLocalEdge, type LocalEdge } from '../local/edge.ts';
import { startSqld, type Sqld } from '../local/sqld.ts';
import { createAgentRuntime, type AgentRuntime } from '../runtime.ts';

const HELP = `Usage: npm start [-- --help]

Runs the whole relay locally: sqld (data in .data/), the edge Worker in workerd, and an agent serving the models
in the models folder. Prints the URL and the API key, and stops everything on Ctrl-C.

Environment:
  NPU_RELAY_PORT        port of the edge on 127.0.0.1            (default 8787)
  NPU_RELAY_API_KEY     API key clients use                      (default: generated once, kept in .data/api-key)
  NPU_RELAY_MODELS_DIR  folder of model folders                  (default ./models)
  NPU_RELAY_DATA_DIR    where local state is kept                (default ./.data)
  NPU_RELAY_LOG_LEVEL   agent log level                          (default info)
`;

function readStartConfig(argv: string[], env: NodeJS.ProcessEnv) {
  try {
    const { values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { help: { type: 'boolean', short: 'h' } } });
    if (values.help) return undefined;
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n\n${HELP}`);
  }
  const port = Number(env.NPU_RELAY_PORT ?? 8787);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`NPU_RELAY_PORT must be a port number, got '${env.NPU_RELAY_PORT}'`);
  return {
    port,
    apiKey: env.NPU_RELAY_API_KEY || undefined,
    modelsDir: path.resolve(env.NPU_RELAY_MODELS_DIR ?? path.join(PROJECT_ROOT, 'models')),
    dataDir: path.resolve(env.NPU_RELAY_DATA_DIR ?? path.join(PROJECT_ROOT, '.data')),
    logLevel: env.NPU_RELAY_LOG_LEVEL ?? 'info',
  };
}

/** The development API key: the one given, else one generated on first start and kept for the next. */
async function devApiKey(dataDir: string, given: string | undefined): Promise<string> {
  if (given) return given;
  const file = path.join(dataDir, 'api-key');
  try {
    const saved = (await readFile(file, 'utf8')).trim();
    if (saved) return saved;
  } catch {
    // first start
  }
  const key = `sk-relay-${randomBytes(24).toString('base64url')}`;
  await writeFile(file, `${key}\n`, { mode: 0o600 });
  return key;
}

let config;
try {
  config = readStartConfig(process.argv.slice(2), process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(`npu-relay start: ${err.message}`);
  process.exit(2);
}
if (!config) {
  console.log(HELP);
  process.exit(0);
}

await mkdir(config.dataDir, { recursive: true });
const apiKey = await devApiKey(config.dataDir, config.apiKey);
// The agent and the edge run side by side here, so a fresh token each run is enough.
const agentToken = randomBytes(24).toString('base64url');

let sqld: Sqld | undefined;
let edge: LocalEdge | undefined;
let runtime: AgentRuntime | undefined;
let stopping: Promise<never> | undefined;

/** Stops the agent, then the edge, then the database; a second Ctrl-C waits for the first instead of cutting it short. */
function stopAll(code: number): Promise<never> {
  stopping ??= (async () => {
    console.error('\nnpu-relay: stopping…');
    await runtime?.agent.stop().catch(() => {});
    await runtime?.engine.close().catch(() => {});
    await edge?.stop().catch(() => {});
    await sqld?.stop().catch(() => {});
    process.exit(code);
  })();
  return stopping;
}
process.on('SIGINT', () => void stopAll(0));
process.on('SIGTERM', () => void stopAll(0));

try {
  sqld = await startSqld({ dbPath: path.join(config.dataDir, 'sqld') });
  edge = await startLocalEdge({
    port: config.port,
    persistDir: path.join(config.dataDir, 'wrangler'),
    vars: { NPU_RELAY_API_KEY: apiKey, NPU_RELAY_AGENT_TOKEN: agentToken, NPU_RELAY_LIBSQL_URL: sqld.url },
  });
  const log = createLogger(config.logLevel, { agentId: 'local' });
  runtime = await createAgentRuntime({ edgeUrl: edge.url.toString(), agentToken, agentId: 'local', modelsDir: config.modelsDir, logLevel: config.logLevel }, log);
  await runtime.agent.start();
} catch (err) {
  console.error(`npu-relay: could not start: ${(err as Error).message}`);
  await stopAll(1);
}

const base = new URL('/v1', edge!.url).toString();
const models = runtime!.engine.models();
const chatModel = models.find((m) => m.kind === 'chat')?.id ?? '<model>';
console.log(`
npu-relay is running
  OpenAI API:  ${base}
  API key:     ${apiKey}
  ${runtime!.summary.join('\n  ')}
  libSQL:      ${sqld!.url} (data in ${config.dataDir})

Try it:
  curl -N ${base}/chat/completions \\
    -H "Authorization: Bearer ${apiKey}" -H "Content-Type: application/json" \\
    -d '{"model":"${chatModel}","stream":true,"messages":[{"role":"user","content":"Hello!"}]}'

Press Ctrl-C to stop.`);
if (models.length === 0) {
  console.log(`\nNo models yet: put a model folder (Hugging Face layout with an onnx/ subfolder) in ${config.modelsDir}, or set NPU_RELAY_MODELS_DIR, then restart.`);
}

/**
 * The agent's configuration, read once from flags and environment variables (flags win) and validated strictly:
 * a bad value stops start-up with a message naming the flag and the variable.
 */
import { hostname } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { POOL_NAME } from '../shared/protocol/version.ts';
import { readLocalStack, readTokenFile } from './local/local-stack.ts';

export interface AgentConfig {
  edgeUrl: string;
  agentToken: string;
  /** The token came as `--token` on the command line, where `ps` and npm's echo show it: the agent warns. */
  tokenInArgv?: boolean;
  agentId: string;
  /** The pool of agents this one joins on the edge; the edge's `default` pool when absent. */
  pool?: string | undefined;
  modelsDir: string;
  logLevel: string;
  /** Models (or aliases) to load at start-up. */
  preload?: string[] | undefined;
  /** How long an idle model stays loaded, in ms (`Infinity`: until the agent stops); the engine's default when absent. */
  keepAliveMs?: number | undefined;
  /** Memory all loaded models may hold together, in bytes; no limit when absent. */
  memoryBudgetBytes?: number | undefined;
  /** Memory for the KV caches kept for prompt-prefix reuse (ONNX Runtime engine), in bytes; 0 turns reuse off; the engine's default when absent. */
  prefixCacheBytes?: number | undefined;
  /** Port of the health and metrics endpoints on 127.0.0.1 (0: any free port); none when absent. */
  metricsPort?: number | undefined;
  /** The model aliases file; `aliases.json` in the models folder when absent. */
  aliasesFile?: string | undefined;
  /** Pinned OpenVINO device (NPU, GPU, CPU, AUTO); NPU → GPU → CPU when absent. Validated by the engine selection. */
  device?: string | undefined;
  /** NPU pipeline limits, in tokens. */
  npu?: { maxPromptLen?: number; minResponseLen?: number; prefillChunkSize?: number } | undefined;
  /** Where the agent keeps its own state (the OpenVINO compiled-model cache); `./.data` when absent. */
  dataDir?: string | undefined;
  /** OpenVINO's compiled-model cache (`CACHE_DIR`); `<dataDir>/openvino-cache` when absent, none when `false`. */
  openvinoCacheDir?: string | false | undefined;
  /** Reuse the KV cache of repeated prompt prefixes on the OpenVINO engine (NPU, GPU, CPU); on when absent. */
  prefixCaching?: boolean | undefined;
  /** How long SIGTERM waits for in-flight requests before cancelling them. */
  drainTimeoutMs?: number | undefined;
  /** How long one compile of a client's schema or grammar may run, in ms; node/grammar's default when absent. */
  grammarTimeoutMs?: number | undefined;
  /** Requests running at once per device (e.g. `CPU=4,NPU=1`) and requests that may wait. */
  concurrency?: Record<string, number> | undefined;
  queueLimit?: number | undefined;
  /** The model hub `/api/pull` fetches from (`HF_ENDPOINT`, `HF_TOKEN`); huggingface.co without a token when absent. */
  hub?: { endpoint: string; token?: string | undefined } | undefined;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export const AGENT_HELP = `Usage: npm run agent -- [options]

Connects this machine's inference engine to an npu-relay edge over an outbound WebSocket.

Options (each also settable by the environment variable shown):
  --edge URL        edge base URL, e.g. https://relay.example.workers.dev   NPU_RELAY_EDGE_URL  (default http://127.0.0.1:8787)
  --token-file FILE a file holding the agent token, as set on the edge   NPU_RELAY_AGENT_TOKEN_FILE
                    (or the token itself in NPU_RELAY_AGENT_TOKEN; one of them is required)
  --token TOKEN     the token on the command line: visible in \`ps\` and npm's echo, prefer the two above
  --local           join the \`npm start\` running from the data folder: its edge URL and its agent token
                    (from <data dir>/agent-token); the id defaults to local-<pid> and metrics to off
  --models DIR      folder of model folders                               NPU_RELAY_MODELS_DIR (default ./models)
  --id ID           this agent's id                                        NPU_RELAY_AGENT_ID  (default the host name)
  --pool NAME       the pool of agents to join (a hub per pool on the edge) NPU_RELAY_POOL     (default default)
  --log-level LEVEL trace, debug, info, warn, error                        NPU_RELAY_LOG_LEVEL (default info)
  --preload IDS     models to load at start, comma-separated              NPU_RELAY_PRELOAD   (default none)
  --keep-alive TIME how long an idle model stays loaded: 30s, 5m, 1h,     NPU_RELAY_KEEP_ALIVE (default 5m)
                    seconds, 0 (unload after each request) or -1 (never)
  --memory-budget SIZE  memory for all loaded models: 8GB, 6GiB, bytes    NPU_RELAY_MEMORY_BUDGET (default no limit)
  --prefix-cache-size SIZE  KV cache kept so a prompt that repeats an     NPU_RELAY_PREFIX_CACHE_SIZE (default 512MiB)
                    earlier one (an agent's next turn) prefills only what is new (ONNX Runtime
                    engine); least recently used goes first; 0 turns it off
  --metrics-port PORT   /health and /metrics on 127.0.0.1; 0 turns off   NPU_RELAY_METRICS_PORT (default 9464)
  --aliases FILE    model aliases, {"alias": "model id"}                  NPU_RELAY_ALIASES   (default <models>/aliases.json)
  --device DEVICE   pin the OpenVINO device: NPU, GPU, CPU or AUTO        NPU_RELAY_DEVICE    (default NPU → GPU → CPU)
  --npu-max-prompt N    longest prompt the NPU pipeline takes, tokens     NPU_RELAY_NPU_MAX_PROMPT_LEN (default 4096)
  --npu-min-response N  tokens the NPU pipeline reserves for the answer   NPU_RELAY_NPU_MIN_RESPONSE_LEN (default 512)
  --npu-prefill-chunk N NPU prompt chunk (power of two); a longer prompt NPU_RELAY_NPU_PREFILL_CHUNK (default 1024)
                    limit is taken in chunks of this size
  --prefix-caching on|off  reuse the KV cache of repeated prompt starts  NPU_RELAY_PREFIX_CACHING (default on)
                    (OpenVINO: NPU, GPU and CPU)
  --data-dir DIR    the agent's own state                                 NPU_RELAY_DATA_DIR  (default ./.data)
  --openvino-cache DIR  compiled models, so a restart does not compile   NPU_RELAY_OPENVINO_CACHE_DIR
                    again; off turns the cache off                       (default <data dir>/openvino-cache)
  --concurrency LIST    requests at once per device, e.g. CPU=4,NPU=1     NPU_RELAY_CONCURRENCY (default NPU=1,GPU=1,CPU=4)
  --queue-limit N   requests that may wait for a device                   NPU_RELAY_QUEUE_LIMIT (default 64)
  --drain-timeout TIME  on SIGTERM, how long in-flight requests may finish NPU_RELAY_DRAIN_TIMEOUT (default 30s)
  --grammar-timeout MS  how long compiling one client schema may take;  NPU_RELAY_GRAMMAR_TIMEOUT_MS (default 3000)
                    past it the request is a 400
  -h, --help        show this help
`;

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/** Parses the agent's flags; returns undefined when help was asked for. */
export function agentConfig(argv: string[], env: NodeJS.ProcessEnv): AgentConfig | undefined {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        edge: { type: 'string' },
        token: { type: 'string' },
        'token-file': { type: 'string' },
        local: { type: 'boolean' },
        models: { type: 'string' },
        id: { type: 'string' },
        pool: { type: 'string' },
        'log-level': { type: 'string' },
        preload: { type: 'string' },
        'keep-alive': { type: 'string' },
        'memory-budget': { type: 'string' },
        'prefix-cache-size': { type: 'string' },
        'metrics-port': { type: 'string' },
        aliases: { type: 'string' },
        device: { type: 'string' },
        'npu-max-prompt': { type: 'string' },
        'npu-min-response': { type: 'string' },
        'npu-prefill-chunk': { type: 'string' },
        'prefix-caching': { type: 'string' },
        'data-dir': { type: 'string' },
        'openvino-cache': { type: 'string' },
        concurrency: { type: 'string' },
        'queue-limit': { type: 'string' },
        'drain-timeout': { type: 'string' },
        'grammar-timeout': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n\n${AGENT_HELP}`);
  }
  if (values.help) return undefined;
  const dataDir = path.resolve(values['data-dir'] ?? env.NPU_RELAY_DATA_DIR ?? '.data');
  // --local: the running `npm start`'s edge and token, read from its data folder, so the token never is an argument.
  const local = values.local ? readLocalStack(dataDir) : undefined;
  const edgeUrl = values.edge ?? local?.edgeUrl ?? env.NPU_RELAY_EDGE_URL ?? 'http://127.0.0.1:8787';
  try {
    const u = new URL(edgeUrl);
    if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) throw new Error('bad scheme');
  } catch {
    throw new ConfigError(`--edge / NPU_RELAY_EDGE_URL must be an http(s):// or ws(s):// URL, got '${edgeUrl}'`);
  }
  const tokenFile = values['token-file'] ?? env.NPU_RELAY_AGENT_TOKEN_FILE;
  const agentToken =
    values.token ??
    (values['token-file'] !== undefined ? readTokenFile(values['token-file'], '--token-file') : undefined) ??
    local?.agentToken ??
    (tokenFile !== undefined ? readTokenFile(tokenFile, 'NPU_RELAY_AGENT_TOKEN_FILE') : undefined) ??
    env.NPU_RELAY_AGENT_TOKEN;
  if (!agentToken)
    throw new ConfigError(
      'the agent token is required: set NPU_RELAY_AGENT_TOKEN, or pass --token-file FILE (or NPU_RELAY_AGENT_TOKEN_FILE), holding the same value the edge has; --local reads it from a running `npm start`',
    );
  const logLevel = values['log-level'] ?? env.NPU_RELAY_LOG_LEVEL ?? 'info';
  if (!LEVELS.includes(logLevel))
    throw new ConfigError(`--log-level / NPU_RELAY_LOG_LEVEL must be one of ${LEVELS.join(', ')}, got '${logLevel}'`);
  const keepAlive = values['keep-alive'] ?? env.NPU_RELAY_KEEP_ALIVE;
  const budget = values['memory-budget'] ?? env.NPU_RELAY_MEMORY_BUDGET;
  const prefixCache = values['prefix-cache-size'] ?? env.NPU_RELAY_PREFIX_CACHE_SIZE;
  const metricsPort = parsePort(
    values['metrics-port'] ?? env.NPU_RELAY_METRICS_PORT ?? (local ? '0' : '9464'),
    '--metrics-port / NPU_RELAY_METRICS_PORT',
  );
  const preload = [
    ...new Set(
      (values.preload ?? env.NPU_RELAY_PRELOAD ?? '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    ),
  ];
  const aliasesFile = values.aliases ?? env.NPU_RELAY_ALIASES;
  const device = values.device ?? env.NPU_RELAY_DEVICE;
  const maxPrompt = values['npu-max-prompt'] ?? env.NPU_RELAY_NPU_MAX_PROMPT_LEN;
  const minResponse = values['npu-min-response'] ?? env.NPU_RELAY_NPU_MIN_RESPONSE_LEN;
  const prefillChunk = values['npu-prefill-chunk'] ?? env.NPU_RELAY_NPU_PREFILL_CHUNK;
  const prefixCaching = values['prefix-caching'] ?? env.NPU_RELAY_PREFIX_CACHING;
  const openvinoCache = values['openvino-cache'] ?? env.NPU_RELAY_OPENVINO_CACHE_DIR;
  const queueLimit = values['queue-limit'] ?? env.NPU_RELAY_QUEUE_LIMIT;
  const drain = values['drain-timeout'] ?? env.NPU_RELAY_DRAIN_TIMEOUT;
  const grammarTimeout = values['grammar-timeout'] ?? env.NPU_RELAY_GRAMMAR_TIMEOUT_MS;
  const pool = values.pool ?? env.NPU_RELAY_POOL;
  if (pool !== undefined && !POOL_NAME.test(pool))
    throw new ConfigError(`--pool / NPU_RELAY_POOL must be 1–32 letters, digits, '-' or '_', got '${pool}'`);
  return {
    edgeUrl,
    agentToken,
    ...(values.token !== undefined ? { tokenInArgv: true } : {}),
    agentId: values.id ?? env.NPU_RELAY_AGENT_ID ?? (local ? `local-${process.pid}` : hostname()),
    ...(pool !== undefined ? { pool } : {}),
    modelsDir: path.resolve(values.models ?? env.NPU_RELAY_MODELS_DIR ?? 'models'),
    logLevel,
    preload,
    ...(keepAlive !== undefined
      ? { keepAliveMs: parseDuration(keepAlive, '--keep-alive / NPU_RELAY_KEEP_ALIVE') }
      : {}),
    ...(budget !== undefined
      ? { memoryBudgetBytes: parseBytes(budget, '--memory-budget / NPU_RELAY_MEMORY_BUDGET') }
      : {}),
    ...(prefixCache !== undefined ? { prefixCacheBytes: parsePrefixCacheSize(prefixCache) } : {}),
    ...(metricsPort !== 0 ? { metricsPort } : {}),
    ...(aliasesFile ? { aliasesFile: path.resolve(aliasesFile) } : {}),
    ...(device ? { device } : {}),
    npu: {
      ...(maxPrompt !== undefined
        ? { maxPromptLen: parseCount(maxPrompt, '--npu-max-prompt / NPU_RELAY_NPU_MAX_PROMPT_LEN') }
        : {}),
      ...(minResponse !== undefined
        ? { minResponseLen: parseCount(minResponse, '--npu-min-response / NPU_RELAY_NPU_MIN_RESPONSE_LEN') }
        : {}),
      ...(prefillChunk !== undefined
        ? { prefillChunkSize: parsePowerOfTwo(prefillChunk, '--npu-prefill-chunk / NPU_RELAY_NPU_PREFILL_CHUNK') }
        : {}),
    },
    dataDir,
    openvinoCacheDir:
      openvinoCache === undefined
        ? path.join(dataDir, 'openvino-cache')
        : openvinoCache.trim().toLowerCase() === 'off'
          ? false
          : path.resolve(openvinoCache),
    prefixCaching:
      prefixCaching === undefined ? true : parseSwitch(prefixCaching, '--prefix-caching / NPU_RELAY_PREFIX_CACHING'),
    drainTimeoutMs: drain !== undefined ? parseDuration(drain, '--drain-timeout / NPU_RELAY_DRAIN_TIMEOUT') : 30_000,
    ...(grammarTimeout !== undefined
      ? { grammarTimeoutMs: parseCount(grammarTimeout, '--grammar-timeout / NPU_RELAY_GRAMMAR_TIMEOUT_MS') }
      : {}),
    concurrency: parseConcurrency(values.concurrency ?? env.NPU_RELAY_CONCURRENCY ?? ''),
    ...(queueLimit !== undefined
      ? { queueLimit: parseCount(queueLimit, '--queue-limit / NPU_RELAY_QUEUE_LIMIT', 0) }
      : {}),
    hub: hubOf(env),
  };
}

/** Where pulls through the API come from: `HF_ENDPOINT` (an http(s) URL) and `HF_TOKEN`. */
export function hubOf(env: NodeJS.ProcessEnv): { endpoint: string; token?: string } {
  const endpoint = env.HF_ENDPOINT || 'https://huggingface.co';
  if (!/^https?:\/\//.test(endpoint) || !URL.canParse(endpoint))
    throw new ConfigError(`HF_ENDPOINT must be an http(s):// URL, got '${endpoint}'`);
  return { endpoint, ...(env.HF_TOKEN ? { token: env.HF_TOKEN } : {}) };
}

/** A whole number of at least `min`. */
export function parseCount(text: string, name: string, min = 1): number {
  const n = Number(text.trim());
  if (!Number.isSafeInteger(n) || n < min)
    throw new ConfigError(`${name} must be a whole number of at least ${min}, got '${text}'`);
  return n;
}

/** A power of two, as GenAI requires of the NPU's prefill chunk. */
export function parsePowerOfTwo(text: string, name: string): number {
  const n = Number(text.trim());
  if (!Number.isSafeInteger(n) || n < 1 || (n & (n - 1)) !== 0)
    throw new ConfigError(`${name} must be a power of two such as 256, 512 or 1024, got '${text}'`);
  return n;
}

/** `on`/`off` (also `true`/`false`, `yes`/`no`, `1`/`0`). */
export function parseSwitch(text: string, name: string): boolean {
  const t = text.trim().toLowerCase();
  if (['on', 'true', 'yes', '1'].includes(t)) return true;
  if (['off', 'false', 'no', '0'].includes(t)) return false;
  throw new ConfigError(`${name} must be on or off, got '${text}'`);
}

/** `CPU=4,NPU=1`: requests that may run at once on each device. */
export function parseConcurrency(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const m = /^([A-Za-z][\w.]*)=(\d+)$/.exec(part);
    if (!m || Number(m[2]) < 1)
      throw new ConfigError(
        `--concurrency / NPU_RELAY_CONCURRENCY must look like CPU=4,NPU=1 (each at least 1), got '${text}'`,
      );
    out[m[1]!.toUpperCase()] = Number(m[2]);
  }
  return out;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `30s`, `5m`, `1h`, `500ms`, a number of seconds, or -1 for ever; in milliseconds. */
export function parseDuration(text: string, name: string): number {
  const t = text.trim();
  if (t === '-1') return Infinity;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(t);
  if (!m)
    throw new ConfigError(
      `${name} must be a duration like 30s, 5m or 1h, a number of seconds, or -1 for ever; got '${text}'`,
    );
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2] ?? 's']!);
}

const BYTE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/** `8GB` (10^9), `6GiB` (2^30), `512MB`, or a number of bytes; in bytes. */
export function parseBytes(text: string, name: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]+)?$/i.exec(text.trim());
  const unit = BYTE_UNITS[(m?.[2] ?? 'b').toLowerCase()];
  const bytes = m && unit ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!(bytes > 0))
    throw new ConfigError(
      `${name} must be a positive size like 8GB, 6GiB or 512MB, or a number of bytes; got '${text}'`,
    );
  return bytes;
}

/** A size as `parseBytes` reads it, or 0 for no prefix cache. */
function parsePrefixCacheSize(text: string): number {
  if (text.trim() === '0') return 0;
  try {
    return parseBytes(text, '--prefix-cache-size / NPU_RELAY_PREFIX_CACHE_SIZE');
  } catch (err) {
    throw new ConfigError(`${(err as Error).message} (or 0 to turn prefix reuse off)`);
  }
}

function parsePort(text: string, name: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text.trim()) || port > 65535)
    throw new ConfigError(`${name} must be a port number from 1 to 65535, or 0 to turn it off; got '${text}'`);
  return port;
}

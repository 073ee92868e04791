/**
 * The agent's configuration, read once from flags and environment variables (flags win) and validated strictly:
 * a bad value stops start-up with a message naming the flag and the variable.
 */
import { hostname } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

export interface AgentConfig {
  edgeUrl: string;
  agentToken: string;
  agentId: string;
  modelsDir: string;
  logLevel: string;
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
  --token TOKEN     agent token, as set on the edge                        NPU_RELAY_AGENT_TOKEN (required)
  --models DIR      folder of model folders                               NPU_RELAY_MODELS_DIR (default ./models)
  --id ID           this agent's id                                        NPU_RELAY_AGENT_ID  (default the host name)
  --log-level LEVEL trace, debug, info, warn, error                        NPU_RELAY_LOG_LEVEL (default info)
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
        models: { type: 'string' },
        id: { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n\n${AGENT_HELP}`);
  }
  if (values.help) return undefined;
  const edgeUrl = values.edge ?? env.NPU_RELAY_EDGE_URL ?? 'http://127.0.0.1:8787';
  try {
    const u = new URL(edgeUrl);
    if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) throw new Error('bad scheme');
  } catch {
    throw new ConfigError(`--edge / NPU_RELAY_EDGE_URL must be an http(s):// or ws(s):// URL, got '${edgeUrl}'`);
  }
  const agentToken = values.token ?? env.NPU_RELAY_AGENT_TOKEN;
  if (!agentToken) throw new ConfigError('the agent token is required: pass --token or set NPU_RELAY_AGENT_TOKEN (the same value the edge has)');
  const logLevel = values['log-level'] ?? env.NPU_RELAY_LOG_LEVEL ?? 'info';
  if (!LEVELS.includes(logLevel)) throw new ConfigError(`--log-level / NPU_RELAY_LOG_LEVEL must be one of ${LEVELS.join(', ')}, got '${logLevel}'`);
  return {
    edgeUrl,
    agentToken,
    agentId: values.id ?? env.NPU_RELAY_AGENT_ID ?? hostname(),
    modelsDir: path.resolve(values.models ?? env.NPU_RELAY_MODELS_DIR ?? 'models'),
    logLevel,
  };
}

/**
 * The edge's settings under `npm start`: every variable the Worker reads (worker/env.ts) is passed from `npm start`'s
 * environment to the local edge, as `wrangler dev --var` and production vars would set it, so a setting behaves the
 * same in all three. Those `npm start` owns itself (the tokens and the database it runs) are not passed through, and
 * one it cannot honour is refused by name rather than ignored.
 */
import { MIN_USAGE_RETENTION_DAYS } from '../../shared/db/usage-retention.ts';
import { ConfigError } from '../config.ts';

/** Edge variables passed through unchanged. Numbers are checked here too, so a typo stops `npm start` at once. */
export const EDGE_VARIABLES = {
  NPU_RELAY_MAX_BODY_BYTES: 'positive',
  NPU_RELAY_CACHE_TTL_S: 'positive',
  NPU_RELAY_RESPONSES_TTL_S: 'positive',
  NPU_RELAY_RESPONSES_MAX_CHAIN: 'positive',
  NPU_RELAY_KEY_GRACE_S: 'positive',
  NPU_RELAY_DB_TIMEOUT_MS: 'positive',
  NPU_RELAY_PARK_MS: 'positive',
  NPU_RELAY_INFERENCE_TIMEOUT_S: 'positive',
  NPU_RELAY_ATTACHMENT_LIMIT_BYTES: 'positive',
  NPU_RELAY_EDGE_HITS: 'switch',
  NPU_RELAY_CONVERSATION_AFFINITY: 'switch',
  NPU_RELAY_CORS_ORIGINS: 'text',
  NPU_RELAY_SEMANTIC_EMBED_MODEL: 'text',
  NPU_RELAY_BATCH_FILE_MAX_BYTES: 'positive',
  NPU_RELAY_BATCH_CONCURRENCY: 'positive',
  NPU_RELAY_USAGE_RETENTION_DAYS: 'retention',
} as const;

/** Edge variables `npm start` sets itself (tokens), or cannot take (it runs its own database). */
export const OWNED_EDGE_VARIABLES = [
  'NPU_RELAY_AGENT_TOKEN',
  'NPU_RELAY_ADMIN_TOKEN',
  'NPU_RELAY_LIBSQL_URL',
  'NPU_RELAY_LIBSQL_AUTH_TOKEN',
] as const;

/** The edge variables set in `env`, checked; a value the edge would refuse, or a database URL, is a ConfigError. */
export function edgeVarsFrom(env: NodeJS.ProcessEnv): Record<string, string> {
  for (const name of ['NPU_RELAY_LIBSQL_URL', 'NPU_RELAY_LIBSQL_AUTH_TOKEN']) {
    if (env[name]) {
      throw new ConfigError(
        `${name} is set, but \`npm start\` runs its own local database (sqld, data in the data folder) and cannot use another. ` +
          `Unset it for \`npm start\` (\`npm run keys\` finds the local database by itself), or run the edge with \`wrangler dev\` against that database.`,
      );
    }
  }
  const vars: Record<string, string> = {};
  for (const [name, kind] of Object.entries(EDGE_VARIABLES)) {
    const raw = env[name];
    if (raw === undefined || raw === '') continue;
    if (kind === 'positive' && !(Number.isSafeInteger(Number(raw)) && Number(raw) > 0))
      throw new ConfigError(`${name} must be a positive integer, got '${raw}'`);
    if (kind === 'retention' && !(Number.isSafeInteger(Number(raw)) && Number(raw) >= MIN_USAGE_RETENTION_DAYS))
      throw new ConfigError(
        `${name} must be a whole number of days, at least ${MIN_USAGE_RETENTION_DAYS}, got '${raw}'`,
      );
    if (kind === 'switch' && !['on', 'off'].includes(raw))
      throw new ConfigError(`${name} must be on or off, got '${raw}'`);
    vars[name] = raw;
  }
  return vars;
}

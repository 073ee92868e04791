/**
 * `npm run keys`' command line: what to do, to which database, with every flag checked before anything is opened
 * (a typo never half-creates a key). A function of argv and the environment, so tests read it without a process.
 */
import path from 'node:path';
import { MAX_KEY_WEIGHT } from '../../shared/protocol/frames.ts';
import { ConfigError } from '../config.ts';
import { DATABASE_HELP, DATABASE_OPTIONS, databaseTarget, type DatabaseTarget, type NewKey } from '../db/keys.ts';
import { PROJECT_ROOT } from '../local/edge.ts';
import { parseCommandLine } from './command.ts';

export const KEYS_HELP = `Usage: npm run keys -- <command> [options]

Commands:
  create --name NAME [--models a,b] [--rpm N] [--tpm N] [--budget N] [--tenant T] [--weight N] [--manage]
         [--semantic-cache [--semantic-threshold X] [--semantic-model EMBED_MODEL] [--semantic-reranker RERANK_MODEL]]
                      creates a key and prints it, once, as the last line: only its hash is stored
  list                lists the keys (never their secrets); \`semantic\` is the semantic cache's threshold,
                      embedding model (auto: NPU_RELAY_SEMANTIC_EMBED_MODEL, else the first embedding
                      model the key may use) and +reranker when it has one; \`-\` when it is off
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
  --semantic-cache    the semantic cache tier: a reworded question may be answered from the cache
                      (docs/semantic-cache.md)                             (default: no)
  --semantic-threshold X  the cosine similarity a cached question needs, in (0, 1]  (default: 0.92)
  --semantic-model M  the embedding model that compares questions (default: NPU_RELAY_SEMANTIC_EMBED_MODEL,
                      else the first embedding model the key may use)
  --semantic-reranker R  a cross-encoder that must also judge the cached answer relevant to the new
                      question (relevance at least 0.5) before it is served (default: none)

Options of every command (each also settable by the environment variable shown):
${DATABASE_HELP}
                      without either: the local database of \`npm start\` (in NPU_RELAY_DATA_DIR, default .data),
                      while it runs or after
  -h, --help          show this help

The database must be migrated first: npm run migrate -- --url URL
`;

/** A database named by flags or the environment, or `local`: the local stack's (`npm start`), found at run time. */
export type Target = DatabaseTarget | { local: string };

export type KeysCommand =
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
  'semantic-cache',
  'semantic-threshold',
  'semantic-model',
  'semantic-reranker',
] as const;

function positiveInt(flag: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!/^[1-9][0-9]*$/.test(raw) || !Number.isSafeInteger(n) || n <= 0)
    throw new ConfigError(`--${flag} must be a positive integer, got '${raw}'`);
  return n;
}

function semanticFlags(values: {
  'semantic-cache'?: boolean | undefined;
  'semantic-threshold'?: string | undefined;
  'semantic-model'?: string | undefined;
  'semantic-reranker'?: string | undefined;
}): Pick<NewKey, 'semanticCache' | 'semanticThreshold' | 'semanticModel' | 'semanticReranker'> {
  const raw = values['semantic-threshold'];
  const model = values['semantic-model'];
  const reranker = values['semantic-reranker'];
  if (values['semantic-cache'] !== true) {
    if (raw !== undefined || model !== undefined || reranker !== undefined)
      throw new ConfigError(
        '--semantic-threshold, --semantic-model and --semantic-reranker go only with --semantic-cache',
      );
    return {};
  }
  const threshold = raw === undefined ? undefined : Number(raw);
  if (threshold !== undefined && !(raw!.trim() !== '' && threshold > 0 && threshold <= 1))
    throw new ConfigError(`--semantic-threshold must be a number in (0, 1], got '${raw}'`);
  if (model !== undefined && !model.trim()) throw new ConfigError('--semantic-model must not be empty');
  if (reranker !== undefined && !reranker.trim()) throw new ConfigError('--semantic-reranker must not be empty');
  return {
    semanticCache: true,
    ...(threshold !== undefined ? { semanticThreshold: threshold } : {}),
    ...(model !== undefined ? { semanticModel: model.trim() } : {}),
    ...(reranker !== undefined ? { semanticReranker: reranker.trim() } : {}),
  };
}

export function readKeysCommand(argv: string[], env: NodeJS.ProcessEnv): KeysCommand | undefined {
  const parsed = parseCommandLine(
    argv,
    KEYS_HELP,
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
      'semantic-cache': { type: 'boolean' },
      'semantic-threshold': { type: 'string' },
      'semantic-model': { type: 'string' },
      'semantic-reranker': { type: 'string' },
    },
    true,
  );
  if (!parsed) return undefined;
  const { values, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (command === undefined) throw new ConfigError(`a command is required: create, list or revoke\n\n${KEYS_HELP}`);
  if (command !== 'create' && command !== 'list' && command !== 'revoke') {
    throw new ConfigError(`unknown command '${command}': use create, list or revoke\n\n${KEYS_HELP}`);
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
      weight,
      manageModels: values.manage === true || values['manage-models'] === true,
      ...semanticFlags(values),
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

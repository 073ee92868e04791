/**
 * Where the tests find their tiny models (never copied into the project), in this order:
 * 1. `NPU_RELAY_TEST_MODELS_DIR`, when set;
 * 2. `../shared/models` beside the checkout, when it holds the workplace fixtures;
 * 3. `.data/test-models`, where `npm test` first pulls small public models from the hub
 *    (test/support/fetch-test-models.ts, with the same code as `npm run pull`).
 * A folder may hold either set; the model ids the tests use are the folder names of the set it holds.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { PROJECT_ROOT } from '../../node/local/edge.ts';

export interface TestModelSet {
  chat: string;
  embed: string;
  /** Hub repos to pull the set from; the workplace fixtures are not on a hub. */
  repos?: { chat: string; embed: string };
}

/** The workplace fixtures (../shared/models/README.md), then the public models the test setup can pull. */
export const TEST_MODEL_SETS: readonly TestModelSet[] = [
  { chat: 'tiny-random-llama', embed: 'tiny-bow-embed' },
  {
    chat: 'tiny-random-LlamaForCausalLM',
    embed: 'tiny-random-BertModel',
    repos: {
      chat: 'hf-internal-testing/tiny-random-LlamaForCausalLM',
      embed: 'hf-internal-testing/tiny-random-BertModel',
    },
  },
];

export const SHARED_MODELS_DIR = path.join(PROJECT_ROOT, '../shared/models');
export const FETCHED_MODELS_DIR = path.join(PROJECT_ROOT, '.data/test-models');

const holds = (dir: string, set: TestModelSet) =>
  existsSync(path.join(dir, set.chat, 'config.json')) && existsSync(path.join(dir, set.embed, 'config.json'));

/** The folder to use and the set in it (undefined when it holds none yet). */
export function locateTestModels(env: NodeJS.ProcessEnv = process.env): { dir: string; set: TestModelSet | undefined } {
  const candidates = env.NPU_RELAY_TEST_MODELS_DIR
    ? [path.resolve(env.NPU_RELAY_TEST_MODELS_DIR)]
    : [SHARED_MODELS_DIR, FETCHED_MODELS_DIR];
  for (const dir of candidates) {
    const set = TEST_MODEL_SETS.find((s) => holds(dir, s));
    if (set) return { dir, set };
  }
  return { dir: candidates.at(-1)!, set: undefined };
}

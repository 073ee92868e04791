/** Where the tests find the tiny model fixtures (never copied into the project). */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { PROJECT_ROOT } from '../../node/local/edge.ts';

export const MODELS_DIR = path.resolve(process.env.NPU_RELAY_TEST_MODELS_DIR ?? path.join(PROJECT_ROOT, '../shared/models'));
export const CHAT_MODEL = 'tiny-random-llama';
export const EMBED_MODEL = 'tiny-bow-embed';

if (!existsSync(path.join(MODELS_DIR, CHAT_MODEL, 'config.json'))) {
  throw new Error(
    `test model fixtures not found in ${MODELS_DIR}: set NPU_RELAY_TEST_MODELS_DIR to a folder holding ${CHAT_MODEL}/ and ${EMBED_MODEL}/`,
  );
}

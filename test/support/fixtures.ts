/** The test models every test uses; importing this fails at once, saying what to do, when there are none. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { locateTestModels, TEST_MODEL_SETS } from './test-models.ts';

const located = locateTestModels();
if (!located.set) {
  throw new Error(
    `no test models in ${located.dir}: \`npm test\` pulls them from the hub first (needs the network, or HF_ENDPOINT pointing at a mirror); ` +
      `or set NPU_RELAY_TEST_MODELS_DIR to a folder holding ${TEST_MODEL_SETS.map((s) => `${s.chat}/ and ${s.embed}/`).join(', or ')}`,
  );
}

export const MODELS_DIR = located.dir;
export const CHAT_MODEL = located.set.chat;
export const EMBED_MODEL = located.set.embed;
/** The vector size of EMBED_MODEL, from its config. */
export const EMBED_DIMENSIONS = (
  JSON.parse(readFileSync(path.join(MODELS_DIR, EMBED_MODEL, 'config.json'), 'utf8')) as { hidden_size: number }
).hidden_size;

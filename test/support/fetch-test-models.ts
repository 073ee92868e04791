#!/usr/bin/env node
/**
 * Run by `npm test` before the suite (the `pretest` script): makes sure the tests have their tiny models. When no
 * folder holds them (test/support/test-models.ts), it pulls the public set from the hub with the code behind
 * `npm run pull`, honouring HF_ENDPOINT and HF_TOKEN as that command does. A second run finds them and does nothing.
 */
import { pullModel, PullError } from '../../node/models/pull.ts';
import { locateTestModels, TEST_MODEL_SETS } from './test-models.ts';

const { dir, set } = locateTestModels();
if (set) {
  console.log(`test models: ${set.chat} and ${set.embed} in ${dir}`);
  process.exit(0);
}

const repos = TEST_MODEL_SETS.find((s) => s.repos)!.repos!;
const endpoint = process.env.HF_ENDPOINT ?? 'https://huggingface.co';
console.log(`test models: none found; pulling ${repos.chat} and ${repos.embed} from ${endpoint} into ${dir}`);
for (const repo of [repos.chat, repos.embed]) {
  try {
    const result = await pullModel({
      endpoint,
      repo,
      revision: 'main',
      modelsDir: dir,
      ...(process.env.HF_TOKEN ? { token: process.env.HF_TOKEN } : {}),
    });
    const bytes = result.files.reduce((n, f) => n + f.size, 0);
    console.log(
      `test models: ${repo}@${result.commit.slice(0, 7)} → ${result.dir} (${result.files.length} files, ${(bytes / 1e6).toFixed(1)} MB)`,
    );
  } catch (err) {
    const reason = err instanceof PullError ? err.message : String(err);
    console.error(
      `test models: could not pull ${repo}: ${reason}\n` +
        'The tests need two tiny models. Give them network access to the hub (or HF_ENDPOINT pointing at a mirror), ' +
        `or set NPU_RELAY_TEST_MODELS_DIR to a folder that holds ${TEST_MODEL_SETS.map((s) => `${s.chat}/ and ${s.embed}/`).join(', or ')}.`,
    );
    process.exit(1);
  }
}

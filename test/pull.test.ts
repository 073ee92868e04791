/**
 * `npm run pull` against a local hub (test/support/hub-server.ts) serving a repo laid out like an ONNX export.
 * Its files are made up here, with the sizes of a real tiny model, so this test needs no model fixtures: nothing in
 * it loads the pulled model, it checks what arrives on disk.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, test } from 'node:test';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { scanModels } from '../node/models/catalog.ts';
import { pullModel } from '../node/models/pull.ts';
import { repoFile, startHub, type Hub } from './support/hub-server.ts';
import { mulberry32 } from './support/prng.ts';
import { commandEnv, runScript } from './support/run-command.ts';

/** The folder `pull` makes for REPO. */
const MODEL = 'tiny-pull-llama';
const REPO = `test-org/${MODEL}`;
/** What a default pull must bring: every JSON file and the full-precision ONNX model with its external data. */
const EXPECTED = [
  'config.json',
  'generation_config.json',
  'onnx/model.onnx',
  'onnx/model.onnx.data',
  'special_tokens_map.json',
  'tokenizer.json',
  'tokenizer_config.json',
];

function bytes(n: number, seed: number): Buffer {
  const next = mulberry32(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (next() * 256) | 0;
  return b;
}

const json = (value: unknown, size?: number) => {
  const text = JSON.stringify(value);
  // Padded to a size like a real tokenizer.json's, so progress is reported while it downloads.
  return Buffer.from(size ? `${text.slice(0, -1)},"padding":"${'x'.repeat(size - text.length - 13)}"}` : text);
};

const FILES = [
  repoFile('PROVENANCE.md', Buffer.from('not part of a default pull\n')),
  repoFile(
    'config.json',
    json({ architectures: ['LlamaForCausalLM'], model_type: 'llama', max_position_embeddings: 2048 }),
  ),
  repoFile('generation_config.json', json({ bos_token_id: 1, eos_token_id: 2 })),
  repoFile('onnx/model.onnx', bytes(4_294_666, 1)),
  repoFile('onnx/model.onnx.data', bytes(2_130_080, 2)),
  repoFile('onnx/model_fp16.onnx', bytes(35_909, 3)),
  repoFile('special_tokens_map.json', json({ bos_token: '<s>', eos_token: '</s>' })),
  repoFile('tokenizer.json', json({ version: '1.0' }, 3_619_013)),
  repoFile('tokenizer_config.json', json({ tokenizer_class: 'LlamaTokenizer' })),
];
const byPath = new Map(FILES.map((f) => [f.path, f]));
let hub: Hub;
let COMMIT: string;

const CLI = path.join(PROJECT_ROOT, 'node/cli/pull.ts');

/** `npm run pull`, without the variables it reads from the caller's environment unless `env` sets them. */
const runCli = (args: string[], env: NodeJS.ProcessEnv = {}) => runScript(CLI, args, { env, unset: PULL_VARIABLES });
const PULL_VARIABLES = ['HF_ENDPOINT', 'HF_TOKEN', 'NPU_RELAY_MODELS_DIR'];

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function assertPulled(modelsDir: string, files = EXPECTED) {
  const dir = path.join(modelsDir, MODEL);
  const got = (await readdir(dir, { recursive: true, withFileTypes: true }))
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)).split(path.sep).join('/'));
  assert.deepEqual(got.sort(), [...files].sort(), 'exactly the selected files are in the model folder');
  for (const f of files)
    assert.ok(
      (await readFile(path.join(dir, f))).equals(byPath.get(f)!.content),
      `${f} is byte-identical to the source`,
    );
  assert.equal(await exists(path.join(modelsDir, '.pull')), false, 'no staging folder is left behind');
}

let modelsDir: string;
const tempDirs: string[] = [];
const pull = (extra: Partial<Parameters<typeof pullModel>[0]> = {}) =>
  pullModel({ endpoint: hub.url, repo: REPO, revision: 'main', modelsDir, ...extra });

before(async () => {
  hub = await startHub({ [REPO]: FILES });
  COMMIT = hub.commit;
});

beforeEach(async () => {
  hub.sabotage = {};
  hub.requests = [];
  modelsDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-pull-'));
  tempDirs.push(modelsDir);
});

after(async () => {
  await hub.close();
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

test('npm run pull downloads the ONNX model byte for byte and prints per-file progress', async () => {
  const { code, stdout, stderr } = await runCli([REPO, '--endpoint', hub.url], {
    NPU_RELAY_MODELS_DIR: modelsDir,
    HF_TOKEN: 'hf_test',
  });
  assert.equal(code, 0, stderr);
  assert.match(stdout, /onnx\/model\.onnx: downloading 4\.3 MB/);
  assert.match(stdout, /onnx\/model\.onnx: [1-3]\.\d MB\/4\.3 MB\n/, 'a large file reports its progress as it goes');
  assert.match(stdout, /onnx\/model\.onnx\.data: 2\.1 MB\/2\.1 MB verified/);
  assert.match(stdout, new RegExp(`pulled ${REPO}@${COMMIT.slice(0, 7)} into .*${MODEL}: 7 files, 10\\.0 MB`));
  await assertPulled(modelsDir);
  assert.ok(
    hub.requests.every((r) => r.authorization === 'Bearer hf_test'),
    'HF_TOKEN is sent to the hub',
  );
  assert.ok(
    !hub.requests.some((r) => /model_fp16|PROVENANCE/.test(r.path)),
    'files outside the selection are not fetched',
  );
});

test('on a terminal, npm run pull draws a progress bar per file', async (t) => {
  // `script` gives the CLI a pseudo-terminal, the only way to see what a user at a terminal sees.
  const cmd = `${process.execPath} node/cli/pull.ts ${REPO} --endpoint ${hub.url} --models ${modelsDir}`;
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile('script', ['-qec', cmd, '/dev/null'], { cwd: PROJECT_ROOT }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    ),
  );
  if (code === 127 || (code !== 0 && /ENOENT|not found/.test(stderr)))
    return t.skip('util-linux script is not installed');
  assert.equal(code, 0, stdout + stderr);
  assert.match(stdout, /onnx\/model\.onnx +█+ 100% \| 4\.3 MB\/4\.3 MB/);
  await assertPulled(modelsDir);
});

test('an interrupted pull fails, leaves no model behind, and resumes with a Range request when run again', async () => {
  hub.sabotage.dropAfter = { file: 'onnx/model.onnx', bytes: 1_500_000 };
  await assert.rejects(pull(), {
    name: 'PullError',
    code: 'interrupted',
    message:
      /^download of onnx\/model\.onnx stopped at \d+ of 4294666 bytes \(.+\); run the same pull again to resume from there$/,
  });
  assert.deepEqual((await scanModels(modelsDir)).entries, [], 'the agent sees no half-downloaded model');
  const partial = path.join(modelsDir, '.pull', MODEL, 'onnx/model.onnx.partial');
  const kept = (await stat(partial)).size;
  assert.ok(kept > 0 && kept <= 1_500_000, `the partial file keeps what arrived (${kept} bytes)`);

  hub.sabotage = {};
  hub.requests = [];
  const { code, stdout, stderr } = await runCli([REPO, '--endpoint', hub.url, '--models', modelsDir]);
  assert.equal(code, 0, stderr);
  assert.match(stdout, new RegExp(`onnx/model\\.onnx: resuming at ${(kept / 1e6).toFixed(1)} MB/4\\.3 MB`));
  const onnx = hub.requests.filter((r) => r.path === `/cdn/${byPath.get('onnx/model.onnx')!.sha256}`);
  assert.deepEqual(
    onnx.map((r) => r.range),
    [`bytes=${kept}-`],
    'the second run asks only for the rest of the file',
  );
  assert.ok(
    !hub.requests.some((r) => r.path.endsWith('/config.json')),
    'files finished by the first run are not fetched again',
  );
  await assertPulled(modelsDir);
});

test('a pull stopped with Ctrl-C mid-download continues from its partial file when run again', async () => {
  hub.sabotage.stallAfter = { file: 'onnx/model.onnx', bytes: 2_000_000 };
  const child = spawn(process.execPath, [CLI, REPO, '--endpoint', hub.url, '--models', modelsDir], {
    cwd: PROJECT_ROOT,
    env: commandEnv({ unset: PULL_VARIABLES }),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = once(child, 'exit');
  const partial = path.join(modelsDir, '.pull', MODEL, 'onnx/model.onnx.partial');
  const deadline = performance.now() + 30_000;
  while (
    (await stat(partial).then(
      (s) => s.size,
      () => 0,
    )) < 2_000_000
  ) {
    assert.ok(performance.now() < deadline, 'the first 2 MB of onnx/model.onnx reach the partial file within 30 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGINT');
  assert.deepEqual(await exited, [130, null], 'a stalled download still stops at once on Ctrl-C');
  assert.match(stderr, /npu-relay pull: stopped by SIGINT; run the same command again to resume/);

  hub.sabotage = {};
  hub.requests = [];
  const again = await runCli([REPO, '--endpoint', hub.url, '--models', modelsDir]);
  assert.equal(again.code, 0, again.stderr);
  const onnx = hub.requests.filter((r) => r.path === `/cdn/${byPath.get('onnx/model.onnx')!.sha256}`);
  assert.deepEqual(
    onnx.map((r) => r.range),
    ['bytes=2000000-'],
  );
  await assertPulled(modelsDir);
});

test('a server that ignores Range makes the resumed download start over, and it still ends correct', async () => {
  hub.sabotage.dropAfter = { file: 'onnx/model.onnx', bytes: 1_000_000 };
  await assert.rejects(pull(), { code: 'interrupted' });
  hub.sabotage = { ignoreRange: true };
  hub.requests = [];
  const result = await pull();
  assert.equal(result.files.find((f) => f.path === 'onnx/model.onnx')?.how, 'downloaded');
  assert.ok(
    hub.requests.some((r) => r.range?.startsWith('bytes=')),
    'the second run did ask for a range',
  );
  await assertPulled(modelsDir);
});

test('a corrupted LFS file is rejected with its expected and actual sha256 and is not kept', async () => {
  hub.sabotage.corrupt = 'onnx/model.onnx.data';
  const expected = byPath.get('onnx/model.onnx.data')!.sha256;
  await assert.rejects(pull(), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'integrity');
    assert.match(
      err.message,
      new RegExp(
        `^onnx/model\\.onnx\\.data from ${REPO}@${COMMIT} is corrupt: expected sha256 ${expected}, got (?!${expected})[0-9a-f]{64}\\. The download was deleted; run the pull again to fetch it afresh$`,
      ),
    );
    return true;
  });
  const staged = path.join(modelsDir, '.pull', MODEL, 'onnx');
  assert.equal(await exists(path.join(staged, 'model.onnx.data')), false);
  assert.equal(await exists(path.join(staged, 'model.onnx.data.partial')), false);
  assert.equal(await exists(path.join(modelsDir, MODEL)), false, 'no model folder appears');

  hub.sabotage = {};
  await pull();
  await assertPulled(modelsDir);
});

test('an unknown flag or a missing repo id is a usage error with exit code 2', async () => {
  const unknown = await runCli([REPO, '--bogus']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^npu-relay pull: Unknown option '--bogus'/);
  assert.match(unknown.stderr, /Usage: npm run pull -- <hub repo id> \[options\]/);

  const missing = await runCli(['--revision', 'main']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /the hub repo id is missing, e\.g\. onnx-community\/Qwen2\.5-0\.5B-Instruct/);

  const help = await runCli(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--include GLOB/);
});

test('the agent catalog lists a pulled model as a chat model', async () => {
  await pull();
  const { entries, skipped } = await scanModels(modelsDir);
  assert.deepEqual(skipped, []);
  assert.deepEqual(
    entries.map((e) => ({ id: e.id, kind: e.kind, formats: e.formats })),
    [{ id: MODEL, kind: 'chat', formats: ['onnx'] }],
  );
});

test('pulling again downloads nothing, and --include adds a variant while reusing the files already there', async () => {
  await pull();
  hub.requests = [];
  const again = await pull();
  assert.equal(again.upToDate, true);
  assert.ok(!hub.requests.some((r) => r.path.includes('/resolve/')), 'an up-to-date model is not downloaded again');

  hub.requests = [];
  const more = await pull({ include: ['onnx/model_fp16.onnx'] });
  assert.equal(more.upToDate, false);
  assert.deepEqual(
    more.files.filter((f) => f.how === 'downloaded').map((f) => f.path),
    ['onnx/model_fp16.onnx'],
  );
  assert.deepEqual(
    hub.requests.filter((r) => r.path.includes('/resolve/')).map((r) => r.path),
    [`/${REPO}/resolve/${COMMIT}/onnx/model_fp16.onnx`],
  );
  await assertPulled(modelsDir, [...EXPECTED, 'onnx/model_fp16.onnx']);
});

test('a repo the hub does not know fails with the status and how to fix it', async () => {
  await assert.rejects(pull({ repo: 'test-org/missing' }), {
    code: 'hub_request',
    message: `the hub answered 401 (Repository not found) for GET ${hub.url}/api/models/test-org/missing/revision/main; check the repo id and --revision, and for a private or gated repo set HF_TOKEN to a token that may read it`,
  });
});

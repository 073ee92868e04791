/**
 * `npm start` from a fresh state: one command brings up sqld, the Worker and the agent, and curl gets a stream; `npm
 * run keys` finds its database without flags, while it runs and after.
 */
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { freePort } from '../node/local/ports.ts';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { DEFAULT_MODELS } from '../node/models/defaults.ts';
import { modelFolderName } from '../node/models/pull.ts';
import { CHAT_MODEL, EMBED_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { repoFilesFrom, startHub } from './support/hub-server.ts';
import { runCommand } from './support/run-command.ts';
import { waitFor } from './support/wait-for.ts';

const run = promisify(execFile);

/** `npm run keys` with no database settings but the data folder of the stack under test. */
const keys = (args: string[], dataDir: string) =>
  runCommand(process.execPath, ['node/cli/keys.ts', ...args], {
    env: { NPU_RELAY_DATA_DIR: dataDir },
    unset: ['NPU_RELAY_LIBSQL_URL', 'NPU_RELAY_LIBSQL_AUTH_TOKEN'],
  });

test('npm start serves a streamed curl request within 60 s and stops cleanly on Ctrl-C', async () => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-start-'));
  const port = await freePort();
  const started = performance.now();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NPU_RELAY_PORT: String(port),
    NPU_RELAY_DATA_DIR: dataDir,
    NPU_RELAY_MODELS_DIR: MODELS_DIR,
    NPU_RELAY_LOG_LEVEL: 'info',
  };
  delete env.NPU_RELAY_API_KEY;
  // Its own process group, so Ctrl-C can be delivered the way a terminal does: to npm and everything under it.
  const child = spawn('npm', ['start'], { cwd: PROJECT_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<string>((resolve) =>
    child.once('exit', (code, signal) => resolve(signal ?? String(code))),
  );
  try {
    while (!/Press Ctrl-C to stop/.test(stdout)) {
      if (child.exitCode !== null) assert.fail(`npm start exited early (${child.exitCode}):\n${stdout}\n${stderr}`);
      if (performance.now() - started > 60_000)
        assert.fail(`npm start was not ready within 60 s:\n${stdout}\n${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const apiKey = /API key:\s+(\S+)/.exec(stdout)?.[1];
    assert.ok(apiKey?.startsWith('sk-relay-'), 'a generated API key is printed');
    assert.match(stdout, new RegExp(`http://127\\.0\\.0\\.1:${port}/v1`), 'the URL is printed');
    assert.match(stdout, new RegExp(`${CHAT_MODEL} \\(chat\\)`), 'the models are printed');
    assert.match(stdout, /engine: onnxruntime on CPU/, 'the engine and device are printed');
    // No noise from the project's own configuration: no wrangler warning, no offline Request.cf stack trace.
    assert.doesNotMatch(stdout + stderr, /WARNING|Request\.cf|ENOTFOUND/, 'the start-up output is clean');

    const { stdout: sse } = await run('curl', [
      '-sN',
      '--max-time',
      '30',
      `http://127.0.0.1:${port}/v1/chat/completions`,
      '-H',
      `Authorization: Bearer ${apiKey}`,
      '-H',
      'Content-Type: application/json',
      '-d',
      JSON.stringify({
        model: CHAT_MODEL,
        stream: true,
        max_tokens: 8,
        messages: [{ role: 'user', content: 'Hello!' }],
      }),
    ]);
    const elapsed = performance.now() - started;
    const data = sse
      .split('\n\n')
      .filter((e) => e.startsWith('data: '))
      .map((e) => e.slice(6));
    assert.equal(data.at(-1), '[DONE]');
    const content = data
      .slice(0, -1)
      .map((d) => JSON.parse(d).choices[0]?.delta?.content ?? '')
      .join('');
    assert.ok(content.length > 0, 'curl received generated text');
    console.log(`npm start → streamed answer in ${(elapsed / 1000).toFixed(1)} s (${data.length - 1} chunks)`);
    assert.ok(elapsed < 60_000);
    // The terminal shows the edge's line for that request, as `wrangler tail` would.
    await waitFor('the edge line of the curl request', () =>
      stderr
        .split('\n')
        .some(
          (l) =>
            l.startsWith('{') &&
            /"msg":"request"/.test(l) &&
            /"endpoint":"chat\.completions"/.test(l) &&
            /"status":200/.test(l),
        ),
    );

    // A key made with no database flags lands in the running stack's database and works on the next request.
    const made = await keys(['create', '--name', 'alice'], dataDir);
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stderr, /Using the database of the running `npm start`/);
    const alice = made.stdout.trim().split('\n').at(-1)!;
    const res = await fetch(`http://127.0.0.1:${port}/v1/models`, { headers: { authorization: `Bearer ${alice}` } });
    assert.equal(res.status, 200, 'the new key is accepted at once');
  } finally {
    const stopAt = performance.now();
    process.kill(-child.pid!, 'SIGINT');
    const how = await Promise.race([
      exited,
      new Promise((r) => setTimeout(() => r('still running after 15 s'), 15_000).unref()),
    ]);
    // npm re-raises the Ctrl-C it received once its child has exited, so it ends by SIGINT rather than with 0.
    assert.ok(
      how === '0' || how === 'SIGINT',
      `npm start ends on Ctrl-C (got ${String(how)}):\n${stderr.slice(-2000)}`,
    );
    assert.match(stderr, /npu-relay: stopping/);
    console.log(`stopped ${(performance.now() - stopAt).toFixed(0)} ms after Ctrl-C`);
    // After the stack stopped, the CLI starts a database of its own on the data it left.
    const listed = await keys(['list'], dataDir);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stderr, /`npm start` is not running/);
    assert.match(listed.stdout, /alice/);
    await rm(dataDir, { recursive: true, force: true });
  }
  // Nothing is left listening: neither the edge nor the database.
  await assert.rejects(fetch(`http://127.0.0.1:${port}/health`));
  const sqldUrl = /libSQL:\s+(\S+)/.exec(stdout)?.[1];
  assert.ok(sqldUrl, 'the libSQL URL is printed');
  await assert.rejects(fetch(`${sqldUrl}/health`), 'sqld was stopped');
});

/** Runs `npm start` until its banner (or its exit), then Ctrl-C; returns what it printed. */
async function startAndStop(
  env: NodeJS.ProcessEnv,
  whileRunning: (stdout: string) => Promise<void> = async () => {},
): Promise<{ stdout: string; stderr: string }> {
  const child = spawn('npm', ['start'], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, NPU_RELAY_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const started = performance.now();
  try {
    while (!/Press Ctrl-C to stop/.test(stdout)) {
      if (child.exitCode !== null) assert.fail(`npm start exited early (${child.exitCode}):\n${stdout}\n${stderr}`);
      if (performance.now() - started > 90_000)
        assert.fail(`npm start was not ready within 90 s:\n${stdout}\n${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await whileRunning(stdout);
  } finally {
    process.kill(-child.pid!, 'SIGINT');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000).unref())]);
  }
  return { stdout, stderr };
}

test('a first npm start with an empty models folder pulls the default models, with progress, and serves them', async () => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-first-'));
  const modelsDir = path.join(dataDir, 'models');
  await mkdir(modelsDir);
  // A local hub stands in for huggingface.co, serving the fixture models under the default ids of both engines: the
  // defaults pulled are those of the engine this machine runs (OpenVINO where it loads, ONNX Runtime otherwise).
  const chatFiles = repoFilesFrom(path.join(MODELS_DIR, CHAT_MODEL));
  const embedFiles = repoFilesFrom(path.join(MODELS_DIR, EMBED_MODEL));
  const hub = await startHub(
    Object.fromEntries(
      Object.values(DEFAULT_MODELS).flatMap(([chat, embed]) => [
        [chat!, chatFiles],
        [embed!, embedFiles],
      ]),
    ),
  );
  const pulledSet = () =>
    Object.values(DEFAULT_MODELS).find(([chat]) => hub.requests.some((r) => r.path.includes(chat!)))!;
  const port = await freePort();
  try {
    const { stdout } = await startAndStop(
      {
        NPU_RELAY_PORT: String(port),
        NPU_RELAY_DATA_DIR: dataDir,
        NPU_RELAY_MODELS_DIR: modelsDir,
        HF_ENDPOINT: hub.url,
      },
      async (out) => {
        const apiKey = /API key:\s+(\S+)/.exec(out)?.[1];
        const { stdout: sse } = await run('curl', [
          '-sN',
          '--max-time',
          '30',
          `http://127.0.0.1:${port}/v1/chat/completions`,
          '-H',
          `Authorization: Bearer ${apiKey}`,
          '-H',
          'Content-Type: application/json',
          '-d',
          JSON.stringify({
            model: modelFolderName(pulledSet()[0]!),
            stream: true,
            max_tokens: 5,
            messages: [{ role: 'user', content: 'Hello!' }],
          }),
        ]);
        assert.match(sse, /data: \[DONE\]/, 'the pulled chat model streams an answer');
      },
    );
    const [chatRepo, embedRepo] = pulledSet();
    const chatModel = modelFolderName(chatRepo!);
    assert.match(stdout, new RegExp(`pulling the defaults, ${chatRepo} and ${embedRepo}, from ${hub.url}`));
    assert.match(
      stdout,
      new RegExp(`${chatRepo}: \\d+ files, [\\d.]+ (kB|MB)`),
      'the size is printed before the download',
    );
    assert.match(stdout, /onnx\/model\.onnx: downloading/, 'progress is shown');
    assert.match(stdout, new RegExp(`models: .*${chatModel} \\(chat\\)`));
    assert.ok(
      hub.requests.some((r) => r.path.includes(embedRepo)),
      'the embedding model was pulled too',
    );
  } finally {
    await hub.close();
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('npm start with NPU_RELAY_NO_PULL=1, or non-interactive without a models folder, starts without models and says what to run', async () => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-nopull-'));
  const hub = await startHub({});
  try {
    for (const [env, why] of [
      [{ NPU_RELAY_NO_PULL: '1', NPU_RELAY_MODELS_DIR: dataDir }, /NPU_RELAY_NO_PULL is set/],
      [{ NPU_RELAY_MODELS_DIR: path.join(dataDir, 'absent') }, /not an interactive terminal/],
    ] as const) {
      const { stdout } = await startAndStop({
        ...env,
        NPU_RELAY_PORT: String(await freePort()),
        NPU_RELAY_DATA_DIR: path.join(dataDir, 'state'),
        HF_ENDPOINT: hub.url,
      });
      assert.match(stdout, why);
      assert.match(stdout, /starting without models\. To serve something, pull a model yourself: npm run pull -- /);
    }
    assert.equal(hub.requests.length, 0, 'nothing was fetched');
  } finally {
    await hub.close();
    await rm(dataDir, { recursive: true, force: true });
  }
});

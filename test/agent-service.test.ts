/**
 * docs/agent-service.md is the single source of the service setups: these tests read its code blocks (the systemd
 * unit, its environment file, the NSSM commands and the Scheduled Task script) and check that they run as written
 * on a host whose system Node is older than 22. The systemd unit's ExecStart runs for real, with the unit's
 * environment and working directory and /usr/bin/node (20 here) first on PATH, against a real edge (workerd), and
 * serves a chat and an Ollama copy (which writes the models folder).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parseEnv } from 'node:util';
import { Ollama } from 'ollama';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { codeBlock, codeBlocks } from './support/doc-blocks.ts';
import { CHAT_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { startTestEdge, type TestEdge } from './support/stack.ts';
import {
  environmentLines,
  execArgv,
  isUnder,
  parseUnit,
  unitValue,
  unitValues,
  writableUnder,
} from './support/systemd-unit.ts';

const DOC = path.join(PROJECT_ROOT, 'docs/agent-service.md');
const unitText = codeBlock(DOC, 'ini', 'npu-relay-agent.service').content;
const unit = parseUnit(unitText);
const envFile = parseEnv(codeBlock(DOC, 'sh', '/etc/npu-relay/agent.env').content);
const installDir = unitValue(unit, 'Service', 'WorkingDirectory')!;
/** The doc's install folder as this checkout. */
const here = (p: string) => (isUnder(p, installDir) ? path.join(PROJECT_ROOT, path.posix.relative(installDir, p)) : p);
const SYSTEM_NODE = '/usr/bin/node';

describe('the systemd unit in docs/agent-service.md', () => {
  test('starts the Node the project installs, keeps the models folder writable, and systemd accepts it', (t) => {
    assert.equal(installDir, '/opt/npu-relay', 'the install steps clone into the working directory');
    const argv = execArgv(unitValue(unit, 'Service', 'ExecStart')!);
    assert.equal(argv[0], path.posix.join(installDir, 'node_modules/node/bin/node'), "the agent runs on npm ci's Node");
    assert.ok(existsSync(here(argv[0]!)), `${here(argv[0]!)} is what npm ci installs`);
    const models = envFile.NPU_RELAY_MODELS_DIR!;
    const dataDir = envFile.NPU_RELAY_DATA_DIR!;
    assert.ok(models && dataDir, 'agent.env sets the models and data folders');
    for (const [what, dir] of [
      ['models folder (pull, copy, delete)', models],
      ['data folder (OpenVINO cache)', dataDir],
    ] as const) {
      const w = writableUnder(unit, dir);
      assert.ok(w.writable, `the ${what} ${dir} is read-only for the service: ${w.why}`);
    }
    assert.ok(!writableUnder(unit, installDir).writable, 'the sandbox is not simply off: the code is read-only');
    assert.ok(
      codeBlocks(DOC).some(
        (b) => b.lang === 'sh' && b.content.includes(`install -d -m 750 -o npu-relay -g npu-relay ${models}`),
      ),
      'the install steps create the models folder owned by the service user',
    );
    // systemd's own reading of the unit (unknown keys, a missing executable), with this checkout's paths.
    const probe = spawnSync('systemd-analyze', ['--version']);
    if (probe.error) {
      t.skip('systemd-analyze is not installed');
      return;
    }
    return (async () => {
      const dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-unit-file-'));
      const file = path.join(dir, 'npu-relay-agent.service');
      await writeFile(file, unitText.replaceAll(installDir, PROJECT_ROOT));
      const verify = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
      await rm(dir, { recursive: true, force: true });
      assert.equal(verify.status, 0, verify.stderr);
      assert.equal(verify.stderr.trim(), '', 'systemd reads every line of the unit');
    })();
  });

  describe('runs as written with the system Node first on PATH', () => {
    let edge: TestEdge;
    let work: string;
    before(async () => {
      edge = await startTestEdge();
      work = await mkdtemp(path.join(tmpdir(), 'npu-relay-unit-'));
    });
    after(async () => {
      await edge?.stop();
      if (work) await rm(work, { recursive: true, force: true });
    });

    test('ExecStart connects to a local edge and serves; the models folder takes an Ollama copy', async (t) => {
      const systemNode = spawnSync(SYSTEM_NODE, ['--version'], { encoding: 'utf8' }).stdout.trim();
      t.diagnostic(`system node: ${systemNode || 'none'}`);
      // A writable models folder of its own (the test models, copied), and the data folder systemd would create.
      const models = path.join(work, 'models');
      await cp(path.join(MODELS_DIR, CHAT_MODEL), path.join(models, CHAT_MODEL), { recursive: true });
      const state = path.join(work, 'state');
      // agent.env as the doc writes it, with this host's edge, token and folders; the rest (keep-alive, memory budget,
      // …) as written. The metrics port is off: other tests on this machine may hold 9464.
      const env: Record<string, string> = {
        ...envFile,
        NPU_RELAY_EDGE_URL: edge.url.origin,
        NPU_RELAY_AGENT_TOKEN: edge.agentToken,
        NPU_RELAY_MODELS_DIR: models,
        NPU_RELAY_DATA_DIR: state,
        NPU_RELAY_AGENT_ID: 'unit-agent',
        NPU_RELAY_PRELOAD: CHAT_MODEL,
        NPU_RELAY_METRICS_PORT: '0',
      };
      const envPath = path.join(work, 'agent.env');
      await writeFile(
        envPath,
        Object.entries(env)
          .map(([k, v]) => `${k}=${v}`)
          .join('\n'),
      );

      // What systemd hands the process: its own PATH (here with /usr/bin first, where the old Node is), HOME of the
      // service user, Environment= lines, then each EnvironmentFile= read in order.
      const processEnv: Record<string, string> = {
        PATH: '/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/bin',
        HOME: work,
        ...environmentLines(unitValues(unit, 'Service', 'Environment')),
      };
      const files = unitValues(unit, 'Service', 'EnvironmentFile');
      assert.deepEqual(files, ['/etc/npu-relay/agent.env'], 'the unit reads the agent.env the doc shows');
      for (const f of files) Object.assign(processEnv, parseEnv(await readFile(f === files[0] ? envPath : f, 'utf8')));
      const argv = execArgv(unitValue(unit, 'Service', 'ExecStart')!);
      // systemd looks a bare command name up in its own fixed path, where /usr/bin/node is.
      const program = path.isAbsolute(argv[0]!) ? here(argv[0]!) : SYSTEM_NODE;

      const child = spawn(program, argv.slice(1), {
        cwd: here(installDir),
        env: processEnv,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d));
      child.stderr.on('data', (d: Buffer) => (out += d));
      const exited = new Promise<number | string>((resolve) =>
        child.once('exit', (code, sig) => resolve(code ?? sig!)),
      );
      t.after(() => child.kill('SIGKILL'));
      const deadline = Date.now() + 60_000;
      while (!/connected to the edge/.test(out)) {
        if (child.exitCode !== null) assert.fail(`the unit's ExecStart exited with ${child.exitCode}:\n${out}`);
        if (Date.now() > deadline) assert.fail(`the agent did not connect within 60 s:\n${out}`);
        await new Promise((r) => setTimeout(r, 100));
      }

      const answer = await edge.openai().chat.completions.create({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'Hello' }],
        max_tokens: 3,
        temperature: 0,
      });
      assert.ok(answer.choices[0]!.message.content, 'the agent answered');
      assert.ok(answer.usage!.completion_tokens > 0);

      const manager = await edge.createKey({ name: 'manager', manageModels: true });
      const ollama = new Ollama({ host: edge.url.origin, headers: { Authorization: `Bearer ${manager.key}` } });
      await ollama.copy({ source: CHAT_MODEL, destination: 'unit-copy' });
      const names = (await ollama.list()).models.map((m) => m.name);
      assert.ok(names.includes('unit-copy:latest'), `the copy is served: ${names.join(', ')}`);

      // The unit's KillSignal ends the agent cleanly within TimeoutStopSec.
      const signal = unitValue(unit, 'Service', 'KillSignal') ?? 'SIGTERM';
      child.kill(signal as NodeJS.Signals);
      const stopSec = Number(unitValue(unit, 'Service', 'TimeoutStopSec') ?? 90);
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), stopSec * 1000))]);
      assert.equal(code, 0, `the agent stopped on ${signal} with ${code}:\n${out}`);
    });
  });
});

/** Words of a Windows command line, with "double quotes" kept together. */
const words = (line: string) => [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
const win = (p: string) => p.replaceAll('\\', '/').toLowerCase();
const PROJECT_NODE = 'node_modules/node/bin/node.exe';

describe('the Windows setups in docs/agent-service.md', () => {
  const bat = codeBlocks(DOC).filter((b) => b.lang === 'bat');
  const lines = bat.flatMap((b) => b.content.split(/\r?\n/).map((l) => l.trim()));
  const grants = lines.filter((l) => /^icacls\s/i.test(l)).map(words);
  const writableBy = (dir: string, account: string) =>
    grants.some(
      ([, target, ...rest]) =>
        win(target!) === win(dir) &&
        rest.some((w, i) => rest[i - 1] === '/grant' && new RegExp(`^${account}:\\(OI\\)\\(CI\\)[MF]$`, 'i').test(w)),
    );

  test("NSSM starts the project's Node in the install folder, and its account can write the models folder", () => {
    /** The words of the NSSM command that starts with `nssm <command> `. */
    const nssm = (command: string) => words(lines.find((l) => l.startsWith(`nssm ${command} `)) ?? '');
    const install = nssm('install npu-relay-agent');
    const appDir = nssm('set npu-relay-agent AppDirectory')[4]!;
    assert.equal(win(install[3]!), win(`${appDir}\\${PROJECT_NODE}`), "the service runs npm ci's Node");
    assert.deepEqual(install.slice(4), ['node\\cli\\agent.ts']);
    assert.ok(existsSync(path.join(PROJECT_ROOT, 'node/cli/agent.ts')));
    const envLine = lines.find((l) => /^nssm set npu-relay-agent AppEnvironmentExtra /.test(l))!;
    const env = Object.fromEntries(
      words(envLine)
        .slice(4)
        .map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]),
    );
    assert.ok(
      env.NPU_RELAY_MODELS_DIR && env.NPU_RELAY_DATA_DIR && env.NPU_RELAY_EDGE_URL && env.NPU_RELAY_AGENT_TOKEN,
    );
    // LocalSystem writes anywhere; the dedicated account the doc offers is given both folders first.
    const objectName = lines.find((l) => /^nssm set npu-relay-agent ObjectName /.test(l));
    if (objectName) {
      const account = words(objectName)[4]!.replace(/^\.\\/, '');
      for (const dir of [env.NPU_RELAY_MODELS_DIR, env.NPU_RELAY_DATA_DIR]) {
        assert.ok(writableBy(dir!, account), `icacls gives ${account} Modify on ${dir}`);
      }
    }
  });

  test("the Scheduled Task script starts the project's Node, as SYSTEM (which can write the models folder)", () => {
    const script = codeBlock(DOC, 'bat', 'agent.cmd')
      .content.split(/\r?\n/)
      .map((l) => l.trim());
    const cd = words(script.find((l) => /^cd \/d /i.test(l))!)[2]!;
    const run = script.find((l) => /node(\.exe)?"?\s+node\\cli\\agent\.ts/i.test(l));
    assert.ok(run, 'the script runs node\\cli\\agent.ts');
    assert.equal(win(words(run)[0]!), win(`${cd}\\${PROJECT_NODE}`), "the task runs npm ci's Node");
    assert.ok(script.some((l) => /^set NPU_RELAY_MODELS_DIR=\S/.test(l)));
    const register = codeBlocks(DOC).find(
      (b) => b.lang === 'powershell' && b.content.includes('Register-ScheduledTask'),
    );
    assert.match(register!.content, /-User 'NT AUTHORITY\\SYSTEM'/);
    assert.match(register!.content, /-Execute '([^']+)'/);
    assert.equal(win(/-Execute '([^']+)'/.exec(register!.content)![1]!), win(`${cd}\\agent.cmd`));
  });
});

/** Every command answers --help and refuses an unknown flag with a clear message (exit code 2). */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { runScript } from './support/run-command.ts';

const COMMANDS: Record<string, string> = {
  start: 'node/cli/start.ts',
  agent: 'node/cli/agent.ts',
  keys: 'node/cli/keys.ts',
  pull: 'node/cli/pull.ts',
  migrate: 'node/cli/migrate.ts',
  bench: 'test/bench/run.ts',
  doctor: 'node/cli/doctor.ts',
};

async function cli(file: string, args: string[]) {
  const { code, stdout, stderr } = await runScript(path.join(PROJECT_ROOT, file), args, {
    env: { NPU_RELAY_AGENT_TOKEN: '' },
    timeoutMs: 30_000,
  });
  return { code, out: stdout + stderr };
}

for (const [name, file] of Object.entries(COMMANDS)) {
  test(`${name}: --help explains the command; an unknown flag exits 2 naming it`, async () => {
    const help = await cli(file, ['--help']);
    assert.equal(help.code, 0, help.out);
    assert.match(help.out, /Usage:/);
    assert.match(help.out, /--help/);
    const bad = await cli(file, ['--no-such-flag']);
    assert.equal(bad.code, 2, bad.out);
    assert.match(bad.out, /--no-such-flag/);
  });
}

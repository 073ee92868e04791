/** Runs a project command the way a user would, for tests that check its exit code and what it printed. */
import { execFile } from 'node:child_process';
import { PROJECT_ROOT } from '../../node/local/edge.ts';

export interface CommandRun {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CommandOptions {
  /** Added to (or overriding) the caller's environment. */
  env?: NodeJS.ProcessEnv;
  /** Variables of the caller's environment the command must not see, unless `env` sets them. */
  unset?: readonly string[];
  timeoutMs?: number;
}

/** The environment a command gets: the caller's, less `unset`, plus `env`. */
export function commandEnv({ env = {}, unset = [] }: Pick<CommandOptions, 'env' | 'unset'> = {}): NodeJS.ProcessEnv {
  const merged = { ...process.env, ...env };
  for (const name of unset) if (!(name in env)) delete merged[name];
  return merged;
}

/** Runs `command args` in the project root; never rejects, the outcome is in `code`. */
export function runCommand(
  command: string,
  args: readonly string[],
  options: CommandOptions = {},
): Promise<CommandRun> {
  return new Promise((resolve) => {
    execFile(
      command,
      [...args],
      { cwd: PROJECT_ROOT, env: commandEnv(options), timeout: options.timeoutMs ?? 120_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Runs a TypeScript entry point of the project (`node/cli/pull.ts`, …) with the Node running the tests. */
export function runScript(file: string, args: readonly string[] = [], options?: CommandOptions): Promise<CommandRun> {
  return runCommand(process.execPath, [file, ...args], options);
}

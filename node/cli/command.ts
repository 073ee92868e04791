/**
 * What every `npm run <command>` does with its command line and its configuration mistakes: strict flags plus
 * `-h/--help`, a usage mistake reported with the help text, and one way out for each (exit 2 with
 * `npu-relay <command>: …` for a mistake, the help and exit 0 when asked for it).
 */
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { ConfigError } from '../config.ts';

const HELP_FLAG = { help: { type: 'boolean', short: 'h' } } as const;

/**
 * `argv` parsed strictly against `options` and `-h/--help`; undefined when help was asked for. An unknown flag, a
 * missing value or (without `positionals`) a stray argument is a ConfigError that ends with `help`.
 */
export function parseCommandLine<const O extends ParseArgsOptionsConfig, const P extends boolean = false>(
  argv: string[],
  help: string,
  options: O,
  positionals?: P,
) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: (positionals ?? false) as P,
      options: { ...options, ...HELP_FLAG },
    });
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n\n${help}`);
  }
  return (parsed.values as { help?: boolean }).help ? undefined : parsed;
}

/** Ends the program as a configuration mistake: `npu-relay <command>: <message>` on stderr, exit code 2. */
export function exitWithConfigError(command: string, err: ConfigError): never {
  console.error(`npu-relay ${command}: ${err.message}`);
  process.exit(2);
}

/**
 * Reads a command's configuration: a ConfigError exits 2 (see exitWithConfigError), undefined from `read` (help
 * was asked for) prints `help` and exits 0; anything else is the configuration.
 */
export function readCommandLineOrExit<T>(command: string, help: string, read: () => T | undefined): T {
  let value: T | undefined;
  try {
    value = read();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    exitWithConfigError(command, err);
  }
  if (value === undefined) {
    console.log(help);
    process.exit(0);
  }
  return value;
}

/** Runs a start-up step whose ConfigError (no engine for these models, a bad device name…) ends the program with exit 2. */
export async function orExitOnConfigError<T>(command: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    exitWithConfigError(command, err);
  }
}

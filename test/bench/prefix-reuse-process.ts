/**
 * Runs the prefix reuse measurement (`prefix-reuse.ts`) in a process of its own: reads its options as JSON from argv
 * and prints one result as JSON on stdout, away from the bench process's agent and garbage.
 */
import { measurePrefixReuse, type PrefixReuseOptions } from './prefix-reuse.ts';

const options = JSON.parse(process.argv[2] ?? '') as PrefixReuseOptions;
process.stdout.write(JSON.stringify(await measurePrefixReuse(options)));

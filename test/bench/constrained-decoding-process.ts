/**
 * Runs the constrained decoding measurement (`constrained-decoding.ts`) in a process of its own: reads its options
 * as JSON from argv and prints one result as JSON on stdout, away from the bench process's agent and garbage.
 */
import { measureConstrainedDecoding, type ConstrainedDecodingOptions } from './constrained-decoding.ts';

const options = JSON.parse(process.argv[2] ?? '') as ConstrainedDecodingOptions;
process.stdout.write(JSON.stringify(await measureConstrainedDecoding(options)));

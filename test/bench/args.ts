/** The bench's command line, parsed before anything else is loaded (see run.ts). */
import { parseArgs } from 'node:util';

const HELP = `Usage: npm run bench [-- --quick]

Measures what the relay costs against the agent answering directly, on this machine, and prints one table
(docs/BENCHMARKS.md keeps the latest): edge overhead sequential and at 32 clients, cache hits, time to first token,
tunnel tokens/s with 64 streams, ONNX Runtime engine vs transformers.js, agent idle RSS, Worker bundle size.

Options:
  --quick     a tenth of every count and duration, to check the bench itself (figures are not results)
  --only scale  only the scale-out rows (one hub, hits in the Worker, two and four pools; docs/SCALING.md)
  -h, --help  show this help
`;

let args;
try {
  ({ values: args } = parseArgs({ args: process.argv.slice(2), strict: true, allowPositionals: false, options: { quick: { type: 'boolean' }, only: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
} catch (err) {
  console.error(`npu-relay bench: ${(err as Error).message}\n\n${HELP}`);
  process.exit(2);
}
if (args.only !== undefined && args.only !== 'scale') {
  console.error(`npu-relay bench: --only takes 'scale', got '${args.only}'\n\n${HELP}`);
  process.exit(2);
}
if (args.help) {
  console.log(HELP);
  process.exit(0);
}

export const benchArgs = { quick: args.quick === true, only: args.only };

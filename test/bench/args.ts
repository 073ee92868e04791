/** The bench's command line, parsed before anything else is loaded (see run.ts). */
import { parseArgs } from 'node:util';

const HELP = `Usage: npm run bench [-- [--quick] [--only LIST]]

Measures what the relay costs against the agent answering directly, on this machine, and prints one table
(docs/BENCHMARKS.md keeps the latest): edge overhead sequential and at 32 clients, cache hits, time to first token,
tunnel tokens/s with 64 streams, ONNX Runtime engine vs transformers.js, agent idle RSS, Worker bundle size,
prompt-prefix reuse (second-turn time to first token, KV bytes per 1,000 tokens).

Options:
  --quick     a tenth of every count and duration, to check the bench itself (figures are not results)
  --only LIST row groups to measure, e.g. 4,6 (1 edge overhead and profile, 2 cache hits, 3 streaming,
              4 engine efficiency and constrained decoding, 5 footprint, 6 prefix reuse, scale the scale-out
              rows S1–S4: one hub, hits in the Worker, two and four pools; docs/SCALING.md); default all
  -h, --help  show this help
`;

let args;
try {
  ({ values: args } = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    allowPositionals: false,
    options: { quick: { type: 'boolean' }, only: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  }));
} catch (err) {
  console.error(`npu-relay bench: ${(err as Error).message}\n\n${HELP}`);
  process.exit(2);
}
if (args.help) {
  console.log(HELP);
  process.exit(0);
}

const only = args.only?.split(',').map((g) => g.trim());
if (only?.some((g) => !/^([1-6]|scale)$/.test(g))) {
  console.error(
    `npu-relay bench: --only takes row groups 1 to 6 or scale, comma-separated (e.g. 4,6); got '${args.only}'\n\n${HELP}`,
  );
  process.exit(2);
}

export const benchArgs = { quick: args.quick === true, only };

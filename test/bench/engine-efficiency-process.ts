/**
 * Runs the engine comparison (`engine-efficiency.ts`) in a process of its own: reads `EngineComparisonOptions` as
 * JSON from argv and prints one `EngineComparison` as JSON on stdout. The bench's own process holds the agent, the
 * direct server and the garbage of the earlier rows; none of that belongs in an engine's tokens per second.
 */
import { compareOrtWithTransformers, type EngineComparisonOptions } from './engine-efficiency.ts';

const options = JSON.parse(process.argv[2] ?? '') as EngineComparisonOptions;
process.stdout.write(JSON.stringify(await compareOrtWithTransformers(options)));

/**
 * Constrained decoding's schema statistics at full size: 50 seeds per schema at temperature 1 on the ONNX Runtime
 * engine (test/support/structured-seeds.ts); npm test runs 2.
 */
import { jsonSchemaSeeds } from '../support/structured-seeds.ts';

jsonSchemaSeeds(50);

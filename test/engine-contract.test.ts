/**
 * The engine contract (test/support/engine-contract.ts) against every engine that runs on this machine: ONNX
 * Runtime here. The OpenVINO engine runs the same suite in test/openvino-engine.test.ts where OpenVINO is installed.
 */
import { CHAT_MODEL, EMBED_MODEL } from './support/fixtures.ts';
import { engineContract } from './support/engine-contract.ts';
import { createOrtEngine } from './support/stack.ts';

engineContract({ name: 'onnxruntime', create: createOrtEngine, chatModel: CHAT_MODEL, embedModel: EMBED_MODEL });

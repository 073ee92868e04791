/**
 * The part of the ONNX Runtime engine that needs `@huggingface/transformers`: loading models and tokenizers
 * (ort-models.ts), encoding prompts (ort-prompt.ts), generating (ort-generation.ts, with prefix reuse in
 * ort-kv-reuse.ts) and embedding. `ort.ts` loads this module with `import()` when its first model loads, so an agent
 * that has not loaded a model never maps transformers.js and onnxruntime-node (≈ 45 MiB resident). Import only types
 * from it, and from the modules it gathers, statically.
 */
export { generate } from './ort-generation.ts';
export { embed, loadChatModel, loadCrossEncoder, loadEmbedder, score } from './ort-models.ts';
export { countPrompt } from './ort-prompt.ts';

/**
 * The models a first `npm start` offers when the models folder is empty, per engine: small enough to pull in
 * minutes, good enough to try the relay with. OpenVINO IR exports (int4 symmetric for the NPU) where the OpenVINO
 * engine is available, ONNX exports for ONNX Runtime otherwise. `NPU_RELAY_DEFAULT_MODELS` replaces them.
 */
export const DEFAULT_MODELS = {
  openvino: ['OpenVINO/Qwen2.5-1.5B-Instruct-int4-ov', 'OpenVINO/bge-base-en-v1.5-fp16-ov'],
  onnx: ['onnx-community/Qwen2.5-0.5B-Instruct', 'Xenova/all-MiniLM-L6-v2'],
} as const satisfies Record<'openvino' | 'onnx', readonly string[]>;

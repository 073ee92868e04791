/**
 * How much memory a model will take, estimated before loading it from the size of its weight files on disk: the
 * engines map the weights into memory more or less as they are, so this is what the memory budget counts.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';

/** transformers.js's file name suffix per ONNX weight precision (`onnx/model_fp16.onnx`, …). */
const ONNX_SUFFIX: Record<string, string> = {
  fp32: '',
  fp16: '_fp16',
  q8: '_quantized',
  int8: '_int8',
  uint8: '_uint8',
  q4: '_q4',
  q4f16: '_q4f16',
  bnb4: '_bnb4',
};

/** The ONNX weight precisions transformers.js knows. */
export const ONNX_DTYPES = Object.keys(ONNX_SUFFIX);

async function sizes(dir: string, matches: (name: string) => boolean): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  let total = 0;
  for (const name of names.filter(matches)) total += (await stat(path.join(dir, name))).size;
  return total;
}

/**
 * Bytes of the weight files an engine loads from a model folder: for ONNX, `onnx/model<suffix>.onnx` and its external
 * data (`model.onnx_data`, `model.onnx.data`, numbered parts); for OpenVINO IR, `openvino_model.xml` and `.bin`.
 */
export async function weightBytes(modelDir: string, format: 'onnx' | 'openvino', dtype = 'fp32'): Promise<number> {
  if (format === 'openvino')
    return sizes(modelDir, (name) => name === 'openvino_model.xml' || name === 'openvino_model.bin');
  const suffix = ONNX_SUFFIX[dtype];
  if (suffix === undefined)
    throw new RangeError(`unknown ONNX weight precision '${dtype}' (known: ${Object.keys(ONNX_SUFFIX).join(', ')})`);
  const base = `model${suffix}.onnx`;
  return sizes(
    path.join(modelDir, 'onnx'),
    (name) => name === base || name.startsWith(`${base}_data`) || name.startsWith(`${base}.data`),
  );
}

/**
 * What a model's files say about it, read once when the models folder is scanned: the bytes it takes on disk, a
 * digest that changes when its files change, when they last changed, how many parameters its weights hold and at
 * what precision (Ollama's `/api/tags` `size`, `digest`, `modified_at`, `details.parameter_size` and
 * `details.quantization_level`).
 *
 * The digest is not a hash of every byte: hashing multi-gigabyte weights at every start would take minutes. It is
 * SHA-256 over each file's path, size and modification time, plus the whole content of the files up to 1 MiB (the
 * configs, the tokenizer config, the chat template): a file added, removed, resized or rewritten changes it, and so
 * does an edit to a config that kept its size and time.
 */
import { createHash } from 'node:crypto';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { ModelInfo } from '../../shared/protocol/frames.ts';

/** Files up to this size are hashed whole; larger ones (the weights) by path, size and time. */
const HASHED_WHOLE_BYTES = 1024 * 1024;
/** A chat template longer than this is not sent to the edge (it travels in the hello; see docs/PROTOCOL.md). */
export const MAX_TEMPLATE_CHARS = 32 * 1024;

/** Parameters and precision of the weights one engine loads. */
export interface WeightStats {
  parameterCount?: number;
  /** As Ollama writes it: `F32`, `F16`, `BF16`, `INT8`, `INT4`. */
  quantizationLevel?: string;
}

export interface ModelMetadata {
  sizeBytes: number;
  /** `sha256:<64 hex>`. */
  digest: string;
  /** Newest modification time of the model's files, epoch ms. */
  modifiedAt: number;
  /** Per weight format in the folder: what the ONNX Runtime engine (`onnx/model.onnx`) and OpenVINO load. */
  weights: { onnx?: WeightStats; openvino?: WeightStats };
}

interface FileEntry {
  rel: string;
  size: number;
  mtimeMs: number;
}

async function listFiles(dir: string, prefix = ''): Promise<FileEntry[]> {
  const out: FileEntry[] = [];
  for (const d of await readdir(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${d.name}` : d.name;
    // Symbolic links are followed (stat): a folder of links into a download cache takes what they point to.
    const s = await stat(path.join(dir, rel)).catch(() => undefined);
    if (!s) continue;
    if (s.isDirectory()) out.push(...(await listFiles(dir, rel)));
    else if (s.isFile()) out.push({ rel, size: s.size, mtimeMs: s.mtimeMs });
  }
  return out;
}

/** Reads the metadata of the model in `dir` (see the module comment for what the digest covers). */
export async function readModelMetadata(dir: string, config: Record<string, unknown>): Promise<ModelMetadata> {
  const files = (await listFiles(dir)).sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  const hash = createHash('sha256');
  let sizeBytes = 0;
  let modifiedAt = 0;
  for (const f of files) {
    sizeBytes += f.size;
    modifiedAt = Math.max(modifiedAt, Math.floor(f.mtimeMs));
    hash.update(`${f.rel}\0${f.size}\0${f.mtimeMs}\0`);
    if (f.size <= HASHED_WHOLE_BYTES) hash.update(await readFile(path.join(dir, f.rel)));
  }
  const fromConfig = configStats(config);
  const weights: ModelMetadata['weights'] = {};
  const safetensors = await safetensorsStats(dir, files);
  const onnx = files.some((f) => f.rel === 'onnx/model.onnx')
    ? await onnxStats(path.join(dir, 'onnx/model.onnx')).catch(() => undefined)
    : undefined;
  if (files.some((f) => f.rel.startsWith('onnx/'))) weights.onnx = merge(onnx, safetensors, fromConfig);
  const ir = files.some((f) => f.rel === 'openvino_model.xml')
    ? await openVinoStats(path.join(dir, 'openvino_model.xml')).catch(() => undefined)
    : undefined;
  if (ir) weights.openvino = merge(ir, safetensors, fromConfig);
  return { sizeBytes, digest: `sha256:${hash.digest('hex')}`, modifiedAt, weights };
}

/** The first source that knows each field: the weights the engine loads, then other weights, then the config. */
function merge(...sources: Array<WeightStats | undefined>): WeightStats {
  const count = sources.find((s) => s?.parameterCount)?.parameterCount;
  const level = sources.find((s) => s?.quantizationLevel)?.quantizationLevel;
  return { ...(count ? { parameterCount: count } : {}), ...(level ? { quantizationLevel: level } : {}) };
}

/** The ModelInfo fields for a model served from `format`'s weights. */
export function metadataFields(
  meta: ModelMetadata | undefined,
  format: 'onnx' | 'openvino',
): Pick<ModelInfo, 'sizeBytes' | 'digest' | 'modifiedAt' | 'parameterSize' | 'parameterCount' | 'quantizationLevel'> {
  if (!meta) return {};
  const w = meta.weights[format] ?? {};
  return {
    sizeBytes: meta.sizeBytes,
    digest: meta.digest,
    modifiedAt: meta.modifiedAt,
    ...(w.parameterCount ? { parameterCount: w.parameterCount, parameterSize: parameterSize(w.parameterCount) } : {}),
    ...(w.quantizationLevel ? { quantizationLevel: w.quantizationLevel } : {}),
  };
}

/** A parameter count as Ollama prints it (`format.HumanNumber`): `8B`, `1.1B`, `134.52M`, `12K`. */
export function parameterSize(n: number): string {
  const whole = (x: number) => x === Math.floor(x);
  if (n >= 1e9) return whole(n / 1e9) ? `${n / 1e9}B` : `${(n / 1e9).toFixed(1)}B`;
  if (n >= 1e6) return whole(n / 1e6) ? `${n / 1e6}M` : `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${Math.round(n / 1e3)}K`;
  return String(n);
}

/** Tallies elements per precision and names the precision most of the weights have. */
class Tally {
  count = 0;
  readonly #byLevel = new Map<string, number>();
  add(level: string, elements: number): void {
    this.count += elements;
    this.#byLevel.set(level, (this.#byLevel.get(level) ?? 0) + elements);
  }
  stats(): WeightStats | undefined {
    if (this.count === 0) return undefined;
    const [level] = [...this.#byLevel].sort((a, b) => b[1] - a[1])[0]!;
    return { parameterCount: this.count, quantizationLevel: level };
  }
}

const elements = (shape: readonly number[]) => shape.reduce((n, d) => n * d, 1);

/** Precision names for the config's `torch_dtype` (what the original weights were saved as). */
const TORCH_DTYPES: Record<string, string> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };

function configStats(config: Record<string, unknown>): WeightStats {
  const q = config.quantization_config as { bits?: unknown } | undefined;
  if (q && typeof q.bits === 'number') return { quantizationLevel: `INT${q.bits}` };
  const dtype = config.torch_dtype ?? config.dtype;
  return typeof dtype === 'string' && TORCH_DTYPES[dtype] ? { quantizationLevel: TORCH_DTYPES[dtype] } : {};
}

/** safetensors dtypes that hold weights (integer tensors are indices and buffers, not parameters). */
const SAFETENSORS_DTYPES: Record<string, string> = {
  F64: 'F64',
  F32: 'F32',
  F16: 'F16',
  BF16: 'BF16',
  I8: 'INT8',
  U8: 'INT8',
  F8_E4M3: 'F8',
  F8_E5M2: 'F8',
};

/** Each `.safetensors` file starts with an 8-byte little-endian header length and a JSON header of tensor shapes. */
async function safetensorsStats(dir: string, files: FileEntry[]): Promise<WeightStats | undefined> {
  const tally = new Tally();
  for (const f of files.filter((x) => x.rel.endsWith('.safetensors') && !x.rel.includes('/'))) {
    const fh = await open(path.join(dir, f.rel), 'r');
    try {
      const head = Buffer.alloc(8);
      await fh.read(head, 0, 8, 0);
      const length = Number(head.readBigUInt64LE(0));
      if (length > 100 * 1024 * 1024) continue;
      const json = Buffer.alloc(length);
      await fh.read(json, 0, length, 8);
      const header = JSON.parse(json.toString('utf8')) as Record<string, { dtype?: string; shape?: number[] }>;
      for (const [name, t] of Object.entries(header)) {
        const level = t.dtype && SAFETENSORS_DTYPES[t.dtype];
        if (name !== '__metadata__' && level && t.shape) tally.add(level, elements(t.shape));
      }
    } finally {
      await fh.close();
    }
  }
  return tally.stats();
}

/** ONNX `TensorProto.DataType`s that hold weights, by Ollama's precision names. */
const ONNX_TYPES: Record<number, string> = {
  1: 'F32',
  2: 'INT8',
  3: 'INT8',
  10: 'F16',
  11: 'F64',
  16: 'BF16',
  21: 'INT4',
  22: 'INT4',
};

/**
 * Reads a file through a small window, for walking a protobuf without loading the weights inside it: a model's
 * initializers carry their data inline (up to 2 GB), and only each one's first bytes (dims, data type) are needed.
 */
class Cursor {
  readonly #fh: Awaited<ReturnType<typeof open>>;
  #buf = Buffer.alloc(0);
  #bufAt = 0;
  pos: number;
  constructor(fh: Awaited<ReturnType<typeof open>>, pos: number) {
    this.#fh = fh;
    this.pos = pos;
  }
  async byte(): Promise<number> {
    if (this.pos < this.#bufAt || this.pos >= this.#bufAt + this.#buf.length) {
      const buf = Buffer.alloc(64 * 1024);
      const { bytesRead } = await this.#fh.read(buf, 0, buf.length, this.pos);
      if (bytesRead === 0) throw new Error('unexpected end of the ONNX file');
      this.#buf = buf.subarray(0, bytesRead);
      this.#bufAt = this.pos;
    }
    return this.#buf[this.pos++ - this.#bufAt]!;
  }
  async varint(): Promise<number> {
    let result = 0;
    let mul = 1;
    for (;;) {
      const b = await this.byte();
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
  }
  async text(length: number): Promise<string> {
    const bytes: number[] = [];
    for (let i = 0; i < length; i++) bytes.push(await this.byte());
    return Buffer.from(bytes).toString('utf8');
  }
  /** Skips a field's value of wire type `wire`. */
  async skip(wire: number): Promise<void> {
    if (wire === 0) await this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) {
      const length = await this.varint();
      this.pos += length;
    } else if (wire === 5) this.pos += 4;
    else throw new Error(`unsupported protobuf wire type ${wire}`);
  }
}

/**
 * Counts the parameters of an ONNX model from its graph's initializers (ModelProto.graph = 7, GraphProto.initializer
 * = 5, TensorProto.dims = 1, data_type = 2), skipping their data; external data files need not be read.
 */
export async function onnxStats(file: string): Promise<WeightStats | undefined> {
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    const c = new Cursor(fh, 0);
    const tally = new Tally();
    while (c.pos < size) {
      const key = await c.varint();
      if (key >>> 3 !== 7 || (key & 7) !== 2) {
        await c.skip(key & 7);
        continue;
      }
      const graphEnd = (await c.varint()) + c.pos;
      while (c.pos < graphEnd) {
        const gk = await c.varint();
        if (gk >>> 3 !== 5 || (gk & 7) !== 2) {
          await c.skip(gk & 7);
          continue;
        }
        const tensorEnd = (await c.varint()) + c.pos;
        const dims: number[] = [];
        let type = 0;
        let name = '';
        // Serializers write fields in number order: dims (1), data_type (2) and name (8) come before raw_data (9).
        while (c.pos < tensorEnd) {
          const tk = await c.varint();
          const field = tk >>> 3;
          if (field === 1 && (tk & 7) === 0) dims.push(await c.varint());
          else if (field === 1 && (tk & 7) === 2) {
            const end = (await c.varint()) + c.pos;
            while (c.pos < end) dims.push(await c.varint());
          } else if (field === 2 && (tk & 7) === 0) type = await c.varint();
          else if (field === 8 && (tk & 7) === 2) name = await c.text(await c.varint());
          else if (field < 8) await c.skip(tk & 7);
          else break;
        }
        c.pos = tensorEnd;
        const level = ONNX_TYPES[type];
        // Exporters store rotary position tables as initializers; they are computed, not learned.
        if (level && !/(cos|sin)_cache/i.test(name)) tally.add(level, elements(dims));
      }
      break;
    }
    return tally.stats();
  } finally {
    await fh.close();
  }
}

/** OpenVINO IR element types that hold weights. */
const IR_TYPES: Record<string, string> = {
  f32: 'F32',
  f16: 'F16',
  bf16: 'BF16',
  f64: 'F64',
  u8: 'INT8',
  i8: 'INT8',
  u4: 'INT4',
  i4: 'INT4',
  nf4: 'INT4',
  f8e4m3: 'F8',
  f8e5m2: 'F8',
};

/**
 * Counts the parameters of an OpenVINO IR from its `Const` layers' shapes. A compressed IR (int8/int4 weights) also
 * holds per-group scales and zero points, shaped `[…, 1]`: those are not parameters of the model and are left out.
 */
async function openVinoStats(file: string): Promise<WeightStats | undefined> {
  const xml = await readFile(file, 'utf8');
  const consts: Array<{ type: string; shape: number[] }> = [];
  for (const m of xml.matchAll(/<layer\b[^>]*\btype="Const"[^>]*>\s*<data\b([^>]*)\/?>/g)) {
    const attrs = m[1]!;
    const type = /element_type="([^"]*)"/.exec(attrs)?.[1];
    const shape = /shape="([^"]*)"/.exec(attrs)?.[1];
    if (type === undefined || shape === undefined) continue;
    consts.push({ type, shape: shape === '' ? [] : shape.split(',').map(Number) });
  }
  const compressed = consts.some((c) => ['u8', 'i8', 'u4', 'i4', 'nf4'].includes(c.type));
  const tally = new Tally();
  for (const c of consts) {
    const level = IR_TYPES[c.type];
    if (!level || (compressed && c.shape.length >= 2 && c.shape.at(-1) === 1)) continue;
    tally.add(level, elements(c.shape));
  }
  return tally.stats();
}

/** Everything the edge shows about a catalogued model beyond its id and kind, for a model served from `format`. */
export function describedFields(
  entry: { metadata?: ModelMetadata | undefined; template?: string | undefined; hiddenSize?: number | undefined },
  format: 'onnx' | 'openvino',
): Pick<
  ModelInfo,
  | 'sizeBytes'
  | 'digest'
  | 'modifiedAt'
  | 'parameterSize'
  | 'parameterCount'
  | 'quantizationLevel'
  | 'embeddingLength'
  | 'template'
> {
  return {
    ...metadataFields(entry.metadata, format),
    ...(entry.hiddenSize ? { embeddingLength: entry.hiddenSize } : {}),
    ...(entry.template !== undefined ? { template: entry.template } : {}),
  };
}

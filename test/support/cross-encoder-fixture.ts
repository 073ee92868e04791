/**
 * A tiny cross-encoder made at test time, since the workplace test models hold none and fixtures are never copied
 * into the repository: an ONNX graph written here (protobufjs over the part of onnx.proto it needs) in the layout a
 * Hugging Face ONNX export of a reranker has (`config.json` saying `BertForSequenceClassification` with one label,
 * `onnx/model.onnx`, the tokenizer files of tiny-bow-embed), so the engines load it by the path a user's
 * cross-encoder/ms-marco-MiniLM-L-6-v2 or BAAI/bge-reranker-base export takes.
 *
 * The graph takes `input_ids`, `attention_mask` and `token_type_ids` ([batch, seq], int64) and returns `logits`
 * ([batch, 1], float): 8 × the token overlap of the pair − 4, where the overlap is (query wordpieces found among the
 * document's + document wordpieces found among the query's) / (all wordpieces of both), special tokens and padding
 * left out. `expectedLogit` computes the same from token ids, for tests to check the engines' scores against.
 */
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import protobuf from 'protobufjs';

/** The messages of onnx.proto (github.com/onnx/onnx, onnx/onnx.proto) this graph uses, with their field numbers. */
const ONNX_SUBSET = `
syntax = "proto2";
package onnx;
message AttributeProto {
  optional string name = 1;
  optional int64 i = 3;
  repeated int64 ints = 8;
  optional int32 type = 20;
}
message ValueInfoProto { optional string name = 1; optional TypeProto type = 2; }
message NodeProto {
  repeated string input = 1;
  repeated string output = 2;
  optional string name = 3;
  optional string op_type = 4;
  repeated AttributeProto attribute = 5;
}
message ModelProto {
  optional int64 ir_version = 1;
  optional string producer_name = 2;
  optional GraphProto graph = 7;
  repeated OperatorSetIdProto opset_import = 8;
}
message GraphProto {
  repeated NodeProto node = 1;
  optional string name = 2;
  repeated TensorProto initializer = 5;
  repeated ValueInfoProto input = 11;
  repeated ValueInfoProto output = 12;
}
message TensorProto {
  repeated int64 dims = 1;
  optional int32 data_type = 2;
  repeated float float_data = 4 [packed = true];
  repeated int64 int64_data = 7 [packed = true];
  optional string name = 8;
}
message TensorShapeProto {
  message Dimension { optional int64 dim_value = 1; optional string dim_param = 2; }
  repeated Dimension dim = 1;
}
message TypeProto {
  message Tensor { optional int32 elem_type = 1; optional TensorShapeProto shape = 2; }
  optional Tensor tensor_type = 1;
}
message OperatorSetIdProto { optional string domain = 1; optional int64 version = 2; }
`;

const FLOAT = 1;
const INT64 = 7;
/** AttributeProto.type INT and INTS. */
const ATTR_INT = 2;
const ATTR_INTS = 7;
const OPSET = 13;

/**
 * The logit the graph gives one encoded pair (its ids, attention mask and token types), as the graph computes it;
 * `specials`: the tokenizer's special token ids (writeCrossEncoder's answer).
 */
export function expectedLogit(ids: number[], mask: number[], types: number[], specials: ReadonlySet<number>): number {
  const real = ids.map((id, i) => mask[i] === 1 && !specials.has(id));
  const query = ids.filter((_, i) => real[i] && types[i] === 0);
  const document = ids.filter((_, i) => real[i] && types[i] === 1);
  const covered =
    query.filter((id) => document.includes(id)).length + document.filter((id) => query.includes(id)).length;
  return (8 * covered) / Math.max(query.length + document.length, 1) - 4;
}

const node = (op_type: string, input: string[], output: string, attribute: object[] = []) => ({
  op_type,
  input,
  output: [output],
  name: output,
  attribute,
});
const ints = (name: string, values: number[]) => ({ name, ints: values, type: ATTR_INTS });
const int = (name: string, i: number) => ({ name, i, type: ATTR_INT });
const input = (name: string) => ({
  name,
  type: { tensor_type: { elem_type: INT64, shape: { dim: [{ dim_param: 'batch' }, { dim_param: 'sequence' }] } } },
});

/** The cross-encoder's ONNX model, serialised: see the file's comment for what it computes. */
export async function crossEncoderOnnx(vocabSize: number, specials: ReadonlySet<number>): Promise<Uint8Array> {
  const root = protobuf.parse(ONNX_SUBSET, { keepCase: true }).root;
  const weights = Array.from({ length: vocabSize }, (_, id) => (specials.has(id) ? 0 : 1));
  const initializer = [
    { name: 'word_weight', data_type: FLOAT, dims: [vocabSize], float_data: weights },
    { name: 'axes_1', data_type: INT64, dims: [1], int64_data: [1] },
    { name: 'axes_2', data_type: INT64, dims: [1], int64_data: [2] },
    { name: 'one', data_type: FLOAT, dims: [], float_data: [1] },
    { name: 'scale', data_type: FLOAT, dims: [], float_data: [8] },
    { name: 'shift', data_type: FLOAT, dims: [], float_data: [4] },
  ];
  const nodes = [
    node('Cast', ['attention_mask'], 'mask', [int('to', FLOAT)]),
    node('Cast', ['token_type_ids'], 'types', [int('to', FLOAT)]),
    // A wordpiece counts unless it is special (its weight 0); the query is segment 0, the document segment 1.
    node('Gather', ['word_weight', 'input_ids'], 'weight'),
    node('Mul', ['mask', 'weight'], 'counted'),
    node('Mul', ['counted', 'types'], 'in_document'),
    node('Sub', ['counted', 'in_document'], 'in_query'),
    // same[b, i, j]: positions i and j hold the same wordpiece.
    node('Unsqueeze', ['input_ids', 'axes_2'], 'ids_rows'),
    node('Unsqueeze', ['input_ids', 'axes_1'], 'ids_columns'),
    node('Equal', ['ids_rows', 'ids_columns'], 'same_bool'),
    node('Cast', ['same_bool'], 'same', [int('to', FLOAT)]),
    // A query position is covered when some document position holds its wordpiece, and the other way round.
    node('Unsqueeze', ['in_document', 'axes_1'], 'document_columns'),
    node('Mul', ['same', 'document_columns'], 'matches_document'),
    node('ReduceMax', ['matches_document'], 'found_in_document', [ints('axes', [2]), int('keepdims', 0)]),
    node('Unsqueeze', ['in_query', 'axes_1'], 'query_columns'),
    node('Mul', ['same', 'query_columns'], 'matches_query'),
    node('ReduceMax', ['matches_query'], 'found_in_query', [ints('axes', [2]), int('keepdims', 0)]),
    node('Mul', ['found_in_document', 'in_query'], 'query_covered'),
    node('Mul', ['found_in_query', 'in_document'], 'document_covered'),
    node('Add', ['query_covered', 'document_covered'], 'covered'),
    node('ReduceSum', ['covered', 'axes_1'], 'covered_count', [int('keepdims', 1)]),
    node('ReduceSum', ['counted', 'axes_1'], 'all_count', [int('keepdims', 1)]),
    node('Max', ['all_count', 'one'], 'denominator'),
    node('Div', ['covered_count', 'denominator'], 'overlap'),
    node('Mul', ['overlap', 'scale'], 'scaled'),
    node('Sub', ['scaled', 'shift'], 'logits'),
  ];
  const ModelProto = root.lookupType('onnx.ModelProto');
  const model = {
    ir_version: 8,
    producer_name: 'npu-relay test/support/cross-encoder-fixture.ts',
    opset_import: [{ domain: '', version: OPSET }],
    graph: {
      name: 'token_overlap_cross_encoder',
      node: nodes,
      initializer,
      input: [input('input_ids'), input('attention_mask'), input('token_type_ids')],
      output: [
        {
          name: 'logits',
          type: { tensor_type: { elem_type: FLOAT, shape: { dim: [{ dim_param: 'batch' }, { dim_value: 1 }] } } },
        },
      ],
    },
  };
  const problem = ModelProto.verify(model);
  if (problem) throw new Error(`the cross-encoder's ONNX model is malformed: ${problem}`);
  return ModelProto.encode(ModelProto.fromObject(model)).finish();
}

/** The special token ids and the vocabulary size of the tokenizer in `dir` (its `tokenizer.json`). */
export async function readTokenizer(dir: string): Promise<{ specials: ReadonlySet<number>; vocabSize: number }> {
  const tokenizer = JSON.parse(await readFile(path.join(dir, 'tokenizer.json'), 'utf8')) as {
    model: { vocab: Record<string, number> };
    added_tokens: Array<{ id: number; special: boolean }>;
  };
  const specials = new Set(tokenizer.added_tokens.filter((t) => t.special).map((t) => t.id));
  return { specials, vocabSize: Math.max(...Object.values(tokenizer.model.vocab), ...specials) + 1 };
}

/** The tokenizer files a cross-encoder folder takes from the embedder's folder, those it has. */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt'];

/**
 * Writes the cross-encoder into `dir` (created): `config.json`, `onnx/model.onnx`, and the tokenizer of the BERT
 * embedder in `embedDir` (tiny-bow-embed, or CI's tiny-random-BertModel). Returns the tokenizer's special token ids.
 */
export async function writeCrossEncoder(dir: string, embedDir: string): Promise<ReadonlySet<number>> {
  await mkdir(path.join(dir, 'onnx'), { recursive: true });
  const { specials, vocabSize } = await readTokenizer(embedDir);
  await writeFile(
    path.join(dir, 'config.json'),
    JSON.stringify({
      architectures: ['BertForSequenceClassification'],
      model_type: 'bert',
      vocab_size: vocabSize,
      hidden_size: 8,
      max_position_embeddings: 512,
      type_vocab_size: 2,
      id2label: { 0: 'LABEL_0' },
      label2id: { LABEL_0: 0 },
      pad_token_id: 0,
      _comment: 'SYNTHETIC token-overlap cross-encoder made by npu-relay test/support/cross-encoder-fixture.ts',
    }),
  );
  await writeFile(path.join(dir, 'onnx', 'model.onnx'), await crossEncoderOnnx(vocabSize, specials));
  for (const file of TOKENIZER_FILES)
    await copyFile(path.join(embedDir, file), path.join(dir, file)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT' || file === 'tokenizer.json') throw err;
    });
  return specials;
}

/** OpenAI `/v1/embeddings` responses, with vectors as float arrays or base64 little-endian float32. */
import { ApiError } from '../../http/errors.ts';
import type { ResponseFormat } from '../core/format.ts';

function base64Float32(vector: number[]): string {
  const bytes = new Uint8Array(new Float32Array(vector).buffer);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

const notStreamed = () => {
  throw new ApiError('invalid_request', 'embeddings are not streamed');
};

export const openaiEmbeddings: ResponseFormat = {
  flavor: 'openai',
  stream: notStreamed,
  body: notStreamed,
  embeddings: (meta, vectors, usage) => ({
    object: 'list',
    data: vectors.map((v, index) => ({
      object: 'embedding',
      index,
      embedding: meta.encoding === 'base64' ? base64Float32(v) : v,
    })),
    model: meta.model,
    usage: { prompt_tokens: usage.promptTokens, total_tokens: usage.promptTokens },
  }),
};

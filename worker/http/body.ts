/** Reading and validating JSON request bodies, with the size limit applied before parsing. */
import type { z } from 'zod';
import { ApiError } from './errors.ts';

async function readLimited(request: Request, maxBytes: number): Promise<string> {
  const declared = Number(request.headers.get('content-length') ?? NaN);
  if (declared > maxBytes) throw tooLarge(maxBytes);
  if (!request.body) return '';
  // With a declared length, HTTP framing already bounds the body, and one arrayBuffer() costs a fraction of
  // reading chunk by chunk; only a chunked body of unknown length is counted as it arrives.
  if (Number.isFinite(declared)) {
    const bytes = new Uint8Array(await request.arrayBuffer());
    if (bytes.byteLength > maxBytes) throw tooLarge(maxBytes);
    return utf8(bytes);
  }
  const reader = request.body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw tooLarge(maxBytes);
    }
    parts.push(value);
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.byteLength;
  }
  return utf8(bytes);
}

function utf8(bytes: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new ApiError('invalid_json', 'the request body is not valid UTF-8');
  }
}

function tooLarge(maxBytes: number): ApiError {
  return new ApiError('payload_too_large', `the request body is larger than the ${maxBytes}-byte limit`);
}

/** Reads a JSON body and validates it; every failure is an `ApiError` naming the problem (and the field). */
export async function readJson<S extends z.ZodType>(
  request: Request,
  schema: S,
  maxBytes: number,
): Promise<z.infer<S>> {
  // Like OpenAI and Ollama, parse the body whatever Content-Type says (curl -d sends a form type by default).
  const text = await readLimited(request, maxBytes);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    const type = request.headers.get('content-type');
    const hint = type && !/json/i.test(type) ? ` (Content-Type was '${type}'; send application/json)` : '';
    throw new ApiError('invalid_json', `the request body is not valid JSON: ${(err as Error).message}${hint}`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const param = issue.path.map(String).join('.') || null;
    throw new ApiError(
      'invalid_request',
      param ? `invalid '${param}': ${issue.message}` : `invalid request body: ${issue.message}`,
      { param },
    );
  }
  return parsed.data;
}

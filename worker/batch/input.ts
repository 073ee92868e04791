/**
 * A batch's input file, read once when the batch is validated: JSONL, one request a line, as OpenAI's Batch API
 * takes them (`{"custom_id","method":"POST","url","body"}`). The file is refused as a whole, with each problem's
 * line number, as OpenAI refuses it; a line's body is checked against its endpoint only when the line runs (a bad
 * body is that line's 400 in the error file).
 */
import { MAX_LINES } from './config.ts';

export interface InputLine {
  customId: string;
  body: string;
  model: string | undefined;
}

export interface InputError {
  code: string;
  message: string;
  param?: string;
  line?: number;
}

/** A line body is kept in one SQLite row of the desk, whose values Cloudflare caps at 2 MB. */
const LINE_MAX_BYTES = 1024 * 1024;
/** Problems reported before giving up on a file. */
const MAX_ERRORS = 20;

export function parseInput(text: string, endpoint: string): { lines: InputLine[] } | { errors: InputError[] } {
  const lines: InputLine[] = [];
  const errors: InputError[] = [];
  const seen = new Set<string>();
  const raw = text.split('\n');
  for (let i = 0; i < raw.length && errors.length < MAX_ERRORS; i++) {
    const src = raw[i]!.trim();
    if (src === '') continue;
    const line = i + 1;
    const fail = (code: string, message: string, param?: string) =>
      errors.push({ code, message, line, ...(param ? { param } : {}) });
    if (src.length > LINE_MAX_BYTES) {
      fail('line_too_large', `line ${line} is longer than ${LINE_MAX_BYTES} bytes`);
      continue;
    }
    let json: unknown;
    try {
      json = JSON.parse(src);
    } catch {
      fail('invalid_json_line', `line ${line} is not valid JSON`);
      continue;
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      fail('invalid_json_line', `line ${line} is not a JSON object`);
      continue;
    }
    const { custom_id: customId, method, url, body } = json as Record<string, unknown>;
    if (typeof customId !== 'string' || customId === '' || customId.length > 512) {
      fail('missing_custom_id', `line ${line}: custom_id must be a string of 1 to 512 characters`, 'custom_id');
      continue;
    }
    if (seen.has(customId)) {
      fail(
        'duplicate_custom_id',
        `line ${line}: custom_id '${customId.slice(0, 64)}' is used by an earlier line`,
        'custom_id',
      );
      continue;
    }
    seen.add(customId);
    if (method !== 'POST') {
      fail('invalid_method', `line ${line}: method must be 'POST'`, 'method');
      continue;
    }
    if (url !== endpoint) {
      fail('mismatched_endpoint', `line ${line}: url must be the batch's endpoint '${endpoint}'`, 'url');
      continue;
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      fail('invalid_request', `line ${line}: body must be a JSON object`, 'body');
      continue;
    }
    const model = (body as { model?: unknown }).model;
    lines.push({ customId, body: JSON.stringify(body), model: typeof model === 'string' ? model : undefined });
    if (lines.length > MAX_LINES) {
      return { errors: [{ code: 'too_many_requests', message: `a batch takes at most ${MAX_LINES} lines` }] };
    }
  }
  if (errors.length > 0) return { errors };
  if (lines.length === 0) return { errors: [{ code: 'empty_file', message: 'the input file has no requests' }] };
  return { lines };
}

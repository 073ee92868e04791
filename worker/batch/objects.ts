/** Files and batches as OpenAI's API shows them (its `OpenAIFile` and `Batch` schemas); absent fields are left out. */
import type { BatchRow, Counts, FileRow } from './store.ts';

export function fileObject(f: FileRow) {
  return {
    id: f.id,
    object: 'file' as const,
    bytes: f.bytes,
    created_at: f.created_at,
    filename: f.filename,
    purpose: f.purpose,
    status: 'processed' as const,
  };
}
export type FileObject = ReturnType<typeof fileObject>;

interface BatchErrors {
  object: 'list';
  data: Array<{ code: string; message: string; param: string | null; line: number | null }>;
}

const TIMES = [
  'in_progress_at',
  'finalizing_at',
  'completed_at',
  'failed_at',
  'expired_at',
  'cancelling_at',
  'cancelled_at',
] as const;

export function batchObject(b: BatchRow, counts: Counts) {
  const times = Object.fromEntries(TIMES.flatMap((t) => (b[t] !== null ? [[t, b[t]]] : [])));
  return {
    id: b.id,
    object: 'batch' as const,
    endpoint: b.endpoint,
    ...(b.model !== null ? { model: b.model } : {}),
    ...(b.errors !== null ? { errors: JSON.parse(b.errors) as BatchErrors } : {}),
    input_file_id: b.input_file_id,
    completion_window: b.completion_window,
    status: b.status,
    ...(b.output_file_id !== null ? { output_file_id: b.output_file_id } : {}),
    ...(b.error_file_id !== null ? { error_file_id: b.error_file_id } : {}),
    created_at: b.created_at,
    expires_at: b.expires_at,
    ...times,
    request_counts: { total: counts.total || b.total, completed: counts.completed, failed: counts.failed },
    usage: {
      input_tokens: counts.inputTokens,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: counts.outputTokens,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: counts.inputTokens + counts.outputTokens,
    },
    metadata: b.metadata !== null ? (JSON.parse(b.metadata) as Record<string, string>) : null,
  };
}
export type BatchObject = ReturnType<typeof batchObject>;

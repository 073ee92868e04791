/** How a request ended in the hub (exchange.ts reports it): what its usage row, the cache and its twins need. */
import type { FinishReason, Usage } from '../../shared/protocol/frames.ts';
import type { AnswerChunk } from '../dialects/core/format.ts';

export interface Settlement {
  status: number;
  outcome: 'ok' | 'error' | 'cancelled';
  errorCode: string | null;
  finishReason: FinishReason | null;
  usage: Usage;
  device: string | null;
  ttftMs: number | null;
  durationMs: number;
  /** Milliseconds the request waited in the agent's queue, as the agent reported it. */
  queueMs?: number;
  /** The answer as it was chunked (text, reasoning, tool-call pieces), for the cache. */
  chunks: AnswerChunk[];
  /** The vectors of an embeddings request, for the cache. */
  embeddings?: number[][];
}

/**
 * Whether the answer came to its end (stop, length or tool calls), even if the leader's own client had left: what
 * twins that followed it may be served and billed.
 */
export function answered(s: Settlement): s is Settlement & { finishReason: Exclude<FinishReason, 'cancelled'> } {
  return s.finishReason !== null && s.finishReason !== 'cancelled';
}

/**
 * The agent's error root. Every failure the agent reports to the edge is an `AgentError` with a stable protocol
 * code; `toErrorCode` is the one place that maps anything thrown to such a code.
 */
import type { ErrorCode } from '../shared/protocol/codes.ts';

export class AgentError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AgentError';
    this.code = code;
  }
}

/** A failure inside an engine: a model that will not load, or a fault during inference. */
export class EngineError extends AgentError {
  constructor(message: string, options?: ErrorOptions) {
    super('engine_error', message, options);
    this.name = 'EngineError';
  }
}

export class UnknownModelError extends AgentError {
  constructor(model: string, available: readonly string[]) {
    super('unknown_model', `model '${model}' is not served by this agent (it has: ${available.join(', ') || 'none'})`);
    this.name = 'UnknownModelError';
  }
}

export function toErrorCode(err: unknown): ErrorCode {
  return err instanceof AgentError ? err.code : 'internal';
}

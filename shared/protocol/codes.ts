/**
 * Stable error codes carried by `error` frames and surfaced to API clients. A code never changes meaning once
 * released; add a new one instead.
 */
export const ERROR_CODES = [
  'bad_frame', // the peer sent something that is not a valid frame
  'unsupported_protocol', // the agent speaks a protocol version the edge does not
  'unauthorized', // agent token missing or wrong
  'unknown_model', // no connected agent serves the requested model
  'wrong_model_kind', // e.g. a chat request for an embedding model
  'no_agent', // no agent connected
  'agent_gone', // the agent disconnected while the request was in flight
  'overloaded', // the agent's queue is full
  'cancelled', // the client went away or asked to stop
  'timeout', // inference took longer than allowed
  'invalid_request', // the request is well-formed JSON but its content cannot be served
  'engine_error', // the inference engine failed
  'internal', // a bug: anything not covered above
  'agent_id_in_use', // another live agent process already holds this agent id (connection refused)
  'too_many_bad_frames', // the connection sent too many bad frames or frames for unknown requests (connection closed)
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/**
 * Values the edge fills in when a request leaves them out. They are part of the canonical request (and so of
 * cache keys): change one and previously cached answers stop matching, which is what should happen.
 */
export const DEFAULT_MAX_TOKENS = 1024;
export const DEFAULT_TEMPERATURE = 1;
export const DEFAULT_TOP_P = 1;
/** OpenAI accepts at most four stop sequences. */
export const MAX_STOP_SEQUENCES = 4;

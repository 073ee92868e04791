/**
 * The API dialect a request spoke, from the endpoint its usage row names: what a log line and the metrics group by.
 * Derived from the row (not stored in it) so the metrics, computed from the usage rows, and the log lines agree.
 */
export type Dialect = 'openai' | 'anthropic' | 'ollama';

export function dialectOf(endpoint: string): Dialect {
  if (endpoint.startsWith('api.')) return 'ollama';
  if (endpoint === 'messages' || endpoint.startsWith('messages.')) return 'anthropic';
  return 'openai';
}

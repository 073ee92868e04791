/** Tunnel protocol versions this build speaks. An agent's hello names one; the edge refuses any other. */
export const PROTOCOL_VERSION = 1;
export const SUPPORTED_PROTOCOL_VERSIONS: readonly number[] = [1];

/**
 * Largest frame either side accepts, in UTF-16 code units of the JSON text. A chat request carries the whole
 * conversation, so this bounds the request body too (the edge's body limit sits below it).
 */
export const MAX_FRAME_CHARS = 4 * 1024 * 1024;

/**
 * Largest frame an agent sends, in bytes of UTF-8. A Worker receives WebSocket messages of at most 1 MiB (local
 * workerd closes the socket with 1009 past it; Cloudflare's Workers limits say 1 MiB), so nothing the agent says may
 * be larger, whatever MAX_FRAME_CHARS lets the agent accept from the edge.
 */
export const MAX_AGENT_FRAME_BYTES = 1024 * 1024;

/** The path on the edge that agents dial. */
export const AGENT_CONNECT_PATH = '/agent/connect';

/**
 * Heartbeat frames are fixed strings so the Durable Object can answer them with `setWebSocketAutoResponse`
 * without waking from hibernation (auto-responses match the whole message text exactly).
 */
export const PING_FRAME = '{"type":"ping"}';
export const PONG_FRAME = '{"type":"pong"}';

/**
 * A pool's name, as an agent gives it on the connect URL (`?pool=`): each pool of agents has its own hub on the
 * edge. Agents that name none join `default`.
 */
export const POOL_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;
export const DEFAULT_POOL = 'default';

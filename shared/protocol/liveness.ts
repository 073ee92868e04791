/**
 * How both ends of the tunnel decide the other is alive. One definition, so the agent's ping interval and the
 * edge's silence bound cannot drift apart.
 *
 * A ping costs the edge nothing while it hibernates (the Durable Object answers `{"type":"ping"}` with an automatic
 * response without waking), so the agent can ping often and the edge can notice a hung agent quickly.
 */

/** The agent pings the edge this often; while requests are in flight the edge pings the agent as often. */
export const AGENT_PING_MS = 2_000;

/**
 * The edge takes an agent it has heard nothing from (no frame of any kind, no ping) for this long for dead: three
 * missed pings. Its in-flight requests then end with `agent_gone` and it gets no new ones.
 */
export const AGENT_SILENT_MS = 6_000;

/**
 * The agent redials when, for this long, nothing arrived from the edge and none of what it had queued for the edge
 * was taken. Longer than the edge's bound: under load the edge's answers queue behind the agent's own data.
 */
export const EDGE_SILENT_MS = 20_000;

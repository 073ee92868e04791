/** What a hub reports of its present state for `/admin/metrics` (the live gauges; the counters come from libSQL). */
export interface HubGauges {
  /** Agents connected to this hub that have said hello. */
  agents: number;
  /** Requests this hub is relaying now (an agent working on them, or waiting for one). */
  inFlight: number;
  /** Of those, requests waiting at the edge for an agent (theirs went away; see NPU_RELAY_PARK_MS, tunnel/sent-requests.ts). */
  waitingForAgent: number;
  /** Requests waiting in the agents' queues, as their last status reports said. */
  queuedAtAgents: number;
  /** Usage rows queued in this hub for libSQL: above a few hundred, libSQL is down or slow (tunnel/usage-outbox.ts). */
  usagePending: number;
}

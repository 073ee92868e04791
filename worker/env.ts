/** The Worker's bindings, as declared in `wrangler.jsonc`. Read only by `config.ts` and the entry point. */
import type { AgentHub } from './tunnel/hub.ts';

export interface Env {
  HUB: DurableObjectNamespace<AgentHub>;
  /** The client API key (development mode, until per-key storage). */
  NPU_RELAY_API_KEY?: string;
  /** The secret agents present to attach. */
  NPU_RELAY_AGENT_TOKEN?: string;
  /** Largest accepted request body in bytes. */
  NPU_RELAY_MAX_BODY_BYTES?: string;
}

/**
 * The Durable Object class the runtime builds (`AgentHub` in wrangler.jsonc): the hub (tunnel/hub.ts) with what the
 * dialects plug into it. Here, at the top, so the hub itself imports no dialect's routes or storage.
 */
import { storedResponses } from './dialects/openai-responses/memory.ts';
import type { Env } from './env.ts';
import { Hub } from './tunnel/hub.ts';

export class AgentHub extends Hub {
  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env, { responses: storedResponses });
  }
}

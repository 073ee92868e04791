/** The npu-relay edge: a Cloudflare Worker in front of the agents' tunnel. */
import type { Env } from './env.ts';
import { router } from './router.ts';

export { AgentHub } from './tunnel/hub.ts';

export default {
  fetch: (request, env, ctx) => router.fetch(request, env, ctx),
} satisfies ExportedHandler<Env>;

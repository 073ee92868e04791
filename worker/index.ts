/** The npu-relay edge: a Cloudflare Worker in front of the agents' tunnel. */
import { corsOrigins } from './config.ts';
import type { Env } from './env.ts';
import { preflight, withCors } from './http/cors.ts';
import { router } from './router.ts';

export { AgentHub } from './tunnel/hub.ts';
export { BatchDesk } from './batch/desk.ts';

export default {
  fetch: async (request, env, ctx) => {
    const origins = corsOrigins(env);
    return preflight(request, origins) ?? withCors(request, await router.fetch(request, env, ctx), origins);
  },
} satisfies ExportedHandler<Env>;

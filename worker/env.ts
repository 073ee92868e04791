/**
 * The Worker's bindings, as declared in `wrangler.jsonc`: the hub's namespace and the variables (config.ts). The hub's
 * namespace is typed by its RPC surface (tunnel/hub-api.ts), not its class, so nothing here imports the hub.
 */
import type { EdgeVars } from './config.ts';
import type { HubApi } from './tunnel/hub-api.ts';

export interface Env extends EdgeVars {
  HUB: DurableObjectNamespace<HubApi>;
}

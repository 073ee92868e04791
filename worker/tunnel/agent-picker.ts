/**
 * Which agent gets a request: among the agents serving the model that can do what the request asks (features) and
 * are not draining, the least busy one with room left. Throws the error a client should see when there is none.
 */
import type { ModelInfo, Task } from '../../shared/protocol/frames.ts';
import { ApiError, type Flavor } from '../http/errors.ts';
import type { ConnectedAgent } from './agent-registry.ts';
import { capableAgents } from './features.ts';

const RETRY_AFTER_NO_AGENT_S = 5;
const RETRY_AFTER_FULL_S = 1;

export interface Pick {
  ws: WebSocket;
  connId: string;
  agentId: string;
  model: ModelInfo;
}

export function unknownModel(model: string): ApiError {
  return new ApiError('unknown_model', `model '${model}' does not exist; GET /v1/models lists the models you can use`, { param: 'model' });
}

export function pickAgent(agents: readonly ConnectedAgent[], task: Task, flavor: Flavor, inFlight: (connId: string) => number): Pick {
  if (agents.length === 0) {
    throw new ApiError('no_agent', 'no agent is connected to this relay, so no model can run; start one (`npm run agent`) and retry', {
      retryAfter: RETRY_AFTER_NO_AGENT_S,
    });
  }
  const serving = agents.filter((a) => a.hello.models.some((m) => m.id === task.model));
  if (serving.length === 0) throw unknownModel(task.model);
  const want = task.task === 'embed' ? 'embedding' : 'chat';
  const model = serving[0]!.hello.models.find((m) => m.id === task.model)!;
  if (model.kind !== want) {
    throw new ApiError('wrong_model_kind', `model '${task.model}' is an ${model.kind} model and cannot serve ${task.task} requests`, { param: 'model' });
  }
  const open = capableAgents(serving, task, flavor).filter((a) => !a.status?.draining);
  if (open.length === 0) {
    throw new ApiError('no_agent', `every agent serving '${task.model}' is shutting down; retry shortly`, { retryAfter: RETRY_AFTER_NO_AGENT_S });
  }
  // Room left on each agent: what it said it can take (running + queued) minus what the edge has sent it.
  const capacity = (a: ConnectedAgent) => a.status?.capacity ?? a.hello.capacity;
  const room = (a: ConnectedAgent) => {
    const c = capacity(a);
    return c ? c.concurrency + c.queueLimit - inFlight(a.connId) : Infinity;
  };
  const load = (a: ConnectedAgent) => inFlight(a.connId) / (capacity(a)?.concurrency ?? 1);
  const candidates = open.filter((a) => room(a) > 0);
  if (candidates.length === 0) {
    throw new ApiError('overloaded', `the agents serving '${task.model}' are at capacity (their queues are full); retry shortly`, { retryAfter: RETRY_AFTER_FULL_S });
  }
  let best = candidates[0]!;
  for (const a of candidates.slice(1)) if (load(a) < load(best)) best = a;
  return { ws: best.ws, connId: best.connId, agentId: best.hello.agentId, model: best.hello.models.find((m) => m.id === task.model)! };
}

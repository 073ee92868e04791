/**
 * Which agent gets a request. Among the agents serving the model that can do what the request asks (features), are
 * not draining, and whose model takes a prompt this long: those with room left for this model (what the model's
 * device runs at once plus its queue, as the agent advertises per model — an NPU runs one request at a time — and
 * the agent's own limit over all its models), the one where the request would wait least; a batch-class request
 * (docs/fair-shares.md) leaves the last place for interactive ones and prefers an idle agent. Throws the error a
 * client should see when there is none.
 */
import type { Capacity, ModelInfo, Priority, Task } from '../../shared/protocol/frames.ts';
import { ApiError, type Flavor } from '../http/errors.ts';
import { holderWithinMargin } from './affinity.ts';
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

/** What the edge knows of the requests it has sent and not seen end. */
export interface InFlightCounts {
  inFlight(connId: string): number;
  inFlightFor(connId: string, model: string): number;
  /** Of `inFlightFor`, the batch-class requests. */
  batchFor(connId: string, model: string): number;
}

/** Places of an agent's queue a batch request may not take: they stay for interactive requests (as on the agent). */
const INTERACTIVE_RESERVE = 1;

export function unknownModel(model: string): ApiError {
  return new ApiError('unknown_model', `model '${model}' does not exist; GET /v1/models lists the models you can use`, {
    param: 'model',
  });
}

/**
 * `tooLong(model)` returns the error for a prompt the model certainly cannot take (see admission.ts), or undefined:
 * such an agent is passed over for one that can take it, and the error is thrown only when none can. `holder` is the
 * agent that holds the KV cache of the conversation the task continues (affinity.ts): it gets the task unless it
 * would make it wait longer than the margin there.
 */
export function pickAgent(
  agents: readonly ConnectedAgent[],
  task: Task,
  flavor: Flavor,
  counts: InFlightCounts,
  tooLong: (model: ModelInfo) => ApiError | undefined,
  holder?: string,
  priority: Priority = 'interactive',
): Pick {
  if (agents.length === 0) {
    throw new ApiError(
      'no_agent',
      'no agent is connected to this relay, so no model can run; start one (`npm run agent`) and retry',
      {
        retryAfter: RETRY_AFTER_NO_AGENT_S,
      },
    );
  }
  const serving = agents.flatMap((a) => {
    const model = a.hello.models.find((m) => m.id === task.model);
    return model ? [{ ...a, model }] : [];
  });
  if (serving.length === 0) throw unknownModel(task.model);
  const want = task.task === 'embed' ? 'embedding' : task.task === 'rerank' ? 'rerank' : 'chat';
  const first = serving[0]!.model;
  if (first.kind !== want) {
    throw new ApiError(
      'wrong_model_kind',
      `model '${task.model}' is ${first.kind === 'embedding' ? 'an' : 'a'} ${first.kind} model and cannot serve ${task.task} requests`,
      { param: 'model' },
    );
  }
  const open = capableAgents(serving, task, flavor).filter((a) => !a.status?.draining);
  if (open.length === 0) {
    throw new ApiError('no_agent', `every agent serving '${task.model}' is shutting down; retry shortly`, {
      retryAfter: RETRY_AFTER_NO_AGENT_S,
    });
  }
  let refusal: ApiError | undefined;
  const fitting = open.filter((a) => {
    const err = tooLong(a.model);
    refusal ??= err;
    return err === undefined;
  });
  if (fitting.length === 0) throw refusal!;

  const agentCapacity = (a: ConnectedAgent): Capacity | undefined => a.status?.capacity ?? a.hello.capacity;
  const modelCapacity = (a: (typeof fitting)[number]): Capacity | undefined => a.model.capacity ?? agentCapacity(a);
  // A batch request never takes the last place an interactive one could use.
  const reserve = priority === 'batch' ? INTERACTIVE_RESERVE : 0;
  const hasRoom = (a: (typeof fitting)[number]) => {
    const agent = agentCapacity(a);
    const model = modelCapacity(a);
    const agentRoom = agent ? agent.concurrency + agent.queueLimit - counts.inFlight(a.connId) : Infinity;
    const modelRoom = model
      ? model.concurrency + model.queueLimit - counts.inFlightFor(a.connId, task.model)
      : Infinity;
    return agentRoom > reserve && modelRoom > reserve;
  };
  const candidates = fitting.filter(hasRoom);
  if (candidates.length === 0) {
    throw new ApiError(
      'overloaded',
      `the agents serving '${task.model}' are at capacity (their queues are full); retry shortly`,
      { retryAfter: RETRY_AFTER_FULL_S },
    );
  }
  // Expected wait in rounds of the model's device: requests ahead of this one over what it runs at once. Ties go
  // to the agent with less in flight over all its models. An interactive request waits only for the batch requests
  // already running (at most what the device runs at once), not for those queued behind it; a batch request goes to
  // an idle agent when there is one, else where the least is ahead of it (it then waits there behind interactive work).
  const wait = (a: (typeof candidates)[number]) => {
    const concurrency = modelCapacity(a)?.concurrency ?? 1;
    const all = counts.inFlightFor(a.connId, task.model);
    if (priority === 'batch') return counts.inFlight(a.connId) === 0 ? -1 : all / concurrency;
    const batch = counts.batchFor(a.connId, task.model);
    return (all - batch + Math.min(batch, concurrency)) / concurrency;
  };
  let best = candidates[0]!;
  for (const a of candidates.slice(1)) {
    const [wa, wb] = [wait(a), wait(best)];
    if (wa < wb || (wa === wb && counts.inFlight(a.connId) < counts.inFlight(best.connId))) best = a;
  }
  const kept = holder === undefined ? undefined : candidates.find((a) => a.hello.agentId === holder);
  if (kept && holderWithinMargin(wait(kept), wait(best))) best = kept;
  return { ws: best.ws, connId: best.connId, agentId: best.hello.agentId, model: best.model };
}

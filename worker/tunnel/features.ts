/**
 * Optional agent abilities (AGENT_FEATURES) a task needs, and which connected agents have them. An agent from before
 * a feature would ignore the fields it does not know and answer wrongly (plain text instead of a tool call, prose
 * instead of JSON), so such a task goes only to agents that announced the feature, or is refused by name.
 */
import type { AgentFeature, ModelInfo, Task } from '../../shared/protocol/frames.ts';
import { ApiError, type Flavor } from '../http/errors.ts';

interface Need {
  feature: AgentFeature;
  /** The request parameter that needs it, as the caller's API names it. */
  param: Record<Flavor, string>;
  /** What the client asked for, when it is the endpoint rather than a parameter. */
  what?: string;
}

const TOOLS: Need = { feature: 'tools', param: { openai: 'tools', ollama: 'tools', anthropic: 'tools' } };
const TOOL_HISTORY: Need = {
  feature: 'tools',
  param: { openai: 'messages', ollama: 'messages', anthropic: 'messages' },
};
const STRUCTURED: Need = {
  feature: 'structured-output',
  param: { openai: 'response_format', ollama: 'format', anthropic: 'output_config.format' },
};
const REASONING: Need = {
  feature: 'reasoning',
  param: { openai: 'reasoning_effort', ollama: 'think', anthropic: 'thinking' },
};
const CONTEXT: Need = { feature: 'context', param: { openai: 'context', ollama: 'context', anthropic: 'context' } };
const COUNT: Need = {
  feature: 'count-tokens',
  param: { openai: 'model', ollama: 'model', anthropic: 'model' },
  what: 'counting tokens',
};

/** What `task` needs beyond the protocol's core, in the order a client would read the parameters. */
export function featuresNeeded(task: Task): Need[] {
  if (task.task === 'embed' || task.task === 'rerank') return [];
  const needs: Need[] = task.task === 'count' ? [COUNT] : [];
  if (task.task === 'chat' || task.task === 'count') {
    if (task.tools?.length) needs.push(TOOLS);
    else if (task.messages.some((m) => m.role === 'tool' || m.toolCalls?.length)) needs.push(TOOL_HISTORY);
  }
  if (task.task !== 'count' && task.responseFormat) needs.push(STRUCTURED);
  if ((task.task === 'chat' || task.task === 'count') && task.think !== undefined) needs.push(REASONING);
  // Only context given changes the answer; an older agent asked to return it just leaves it out.
  if (task.task !== 'count' && task.context?.length) needs.push(CONTEXT);
  return needs;
}

/**
 * The agents among `serving` that have every feature `task` needs; throws `invalid_request` naming the first
 * parameter none of them can honour.
 */
export function capableAgents<A extends { hello: { features?: string[] | undefined; models?: ModelInfo[] } }>(
  serving: A[],
  task: Task,
  flavor: Flavor,
): A[] {
  checkThinking(serving, task, flavor);
  let able = serving;
  for (const need of featuresNeeded(task)) {
    const next = able.filter((a) => a.hello.features?.includes(need.feature));
    if (next.length === 0) {
      const param = need.param[flavor];
      const what = need.what ?? (param === 'messages' ? 'tool calls and tool results in messages' : param);
      const who =
        serving.length === 1 ? `the agent serving '${task.model}' is` : `the agents serving '${task.model}' are`;
      throw new ApiError(
        'invalid_request',
        `${who} too old for ${what} (it does not announce the '${need.feature}' feature); update ${serving.length === 1 ? 'it' : 'them'}`,
        { param },
      );
    }
    able = next;
  }
  return able;
}

/** How to ask for no thinking, in each API's words. */
const THINKING_OFF: Record<Flavor, string> = {
  openai:
    "leave out the reasoning effort (reasoning_effort; reasoning.effort in the Responses API) or set it to 'none'",
  ollama: 'leave out think or set it to false',
  anthropic: "leave out thinking or set it to {type: 'disabled'}",
};

/**
 * Thinking asked of a model that does not think would be silently ignored (the answer is the same as without it),
 * so it is refused by name, as Ollama and Anthropic refuse it. Only where the agents announce the model's
 * capabilities: an older agent's silence says nothing either way.
 */
function checkThinking(serving: Array<{ hello: { models?: ModelInfo[] } }>, task: Task, flavor: Flavor): void {
  if (!('think' in task) || task.think !== true) return;
  const infos = serving.map((a) => a.hello.models?.find((m) => m.id === task.model)?.capabilities);
  if (infos.some((c) => c === undefined || c.includes('thinking'))) return;
  throw new ApiError(
    'invalid_request',
    `model '${task.model}' does not support thinking (its chat template marks no reasoning block): ${THINKING_OFF[flavor]}`,
    {
      param: REASONING.param[flavor],
    },
  );
}

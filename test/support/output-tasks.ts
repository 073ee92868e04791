/** Tasks and model traits the output tests plan for. */
import type { ChatTask, ToolDef } from '../../shared/protocol/frames.ts';
import type { OutputTraits } from '../../node/output/traits.ts';

export const WEATHER: ToolDef = {
  name: 'get_weather',
  description: 'Current weather in a city',
  parameters: {
    type: 'object',
    properties: { city: { type: 'string' }, unit: { enum: ['C', 'F'] } },
    required: ['city'],
    additionalProperties: false,
  },
};
export const SEARCH: ToolDef = {
  name: 'search',
  parameters: {
    type: 'object',
    properties: { q: { type: 'string' }, limit: { type: 'integer', minimum: 1 } },
    required: ['q'],
  },
};

export function chat(extra: Partial<ChatTask> = {}): ChatTask {
  return {
    task: 'chat',
    model: 'm',
    messages: [{ role: 'user', content: 'Weather in Paris?' }],
    sampling: { maxTokens: 64, temperature: 0, topP: 1, stop: [] },
    ...extra,
  };
}

export const TRAITS = {
  qwen3: {
    toolFormat: 'hermes',
    templateTools: true,
    thinkingSwitch: true,
    reasoning: { open: '<think>', close: '</think>', openedByPrompt: false },
  },
  qwen25: { toolFormat: 'hermes', templateTools: true, thinkingSwitch: false },
  r1Distill: {
    toolFormat: 'hermes',
    templateTools: false,
    thinkingSwitch: false,
    reasoning: { open: '<think>', close: '</think>', openedByPrompt: true },
  },
  llama3: { toolFormat: 'llama3-json', templateTools: true, thinkingSwitch: false },
  mistral: { toolFormat: 'mistral', templateTools: true, thinkingSwitch: false },
  mistralV11: { toolFormat: 'mistral-v11', templateTools: true, thinkingSwitch: false },
  phi4: { toolFormat: 'phi4', templateTools: true, toolsInSystemMessage: true, thinkingSwitch: false },
  plain: { toolFormat: 'hermes', templateTools: false, thinkingSwitch: false },
} satisfies Record<string, OutputTraits>;

/**
 * Decides how one generation's output is shaped and read (see OutputPlan), from the task and the model's traits.
 *
 * Tool choice, as OpenAI documents it: `auto` lets the model answer or call (a call, once its trigger is written, is
 * constrained to a tool's schema); `required` makes it call at least one tool; a named function makes it call that one,
 * once; `none` makes it answer in text: the tools are then not given to the template at all and the output is not
 * read for calls, so the model is neither tempted nor able to call.
 */
import type { ChatTask, GenerateTask, ResponseFormat, ToolDef } from '../../shared/protocol/frames.ts';
import { AgentError } from '../errors.ts';
import { templateMessages, toolLayout } from './history.ts';
import type { Constraint, PlanOutput, StructuralTagFormat } from './plan.ts';
import { toolFormat } from './tool-formats/index.ts';
import type { OutputTraits } from './traits.ts';

/** The plan for `task` on a model with `traits`. Throws `invalid_request` for what the edge cannot check. */
export const planOutput: PlanOutput = (task, traits) => {
  if (task.task === 'complete') {
    const constraint = task.responseFormat ? answerFormat(task.responseFormat) : undefined;
    return {
      traits,
      templateContext: {},
      parseTools: false,
      parseReasoning: false,
      ...(constraint ? { constraint } : {}),
    };
  }
  const tools = task.tools?.length ? task.tools : undefined;
  const choice = task.toolChoice ?? 'auto';
  checkChoice(task, tools);
  const useTools = tools !== undefined && choice !== 'none';
  // Without tool support in the template the agent describes the tools itself, in the hermes format.
  const planTraits: OutputTraits = traits.templateTools ? traits : { ...traits, toolFormat: 'hermes' };
  const layout = toolLayout(planTraits);
  const parseReasoning = traits.reasoning !== undefined && !(task.think === false && traits.thinkingSwitch);
  const templateContext: Record<string, unknown> =
    traits.thinkingSwitch && task.think !== undefined ? { enable_thinking: task.think } : {};

  let answer: Constraint | undefined;
  if (useTools) answer = toolConstraint(planTraits, tools, task);
  else if (task.responseFormat) answer = answerFormat(task.responseFormat);
  const constraint =
    answer && parseReasoning && planTraits.reasoning ? afterThinking(planTraits.reasoning, answer) : answer;

  return {
    traits: planTraits,
    messages: templateMessages(task.messages, planTraits, useTools ? tools : undefined),
    ...(useTools && layout === 'template'
      ? { tools: tools.map((t) => ({ type: 'function' as const, function: t })) }
      : {}),
    templateContext,
    ...(constraint ? { constraint } : {}),
    parseTools: useTools,
    parseReasoning,
  };
};

function checkChoice(task: ChatTask, tools: ToolDef[] | undefined): void {
  const choice = task.toolChoice;
  if (choice === undefined || choice === 'auto' || choice === 'none') return;
  if (!tools) {
    const what = choice === 'required' ? "tool_choice 'required'" : `tool_choice naming '${choice.name}'`;
    throw new AgentError(
      'invalid_request',
      `${what} needs tools, but the request has none; add the function to tools or drop tool_choice`,
    );
  }
  if (choice !== 'required' && !tools.some((t) => t.name === choice.name)) {
    throw new AgentError(
      'invalid_request',
      `tool_choice names '${choice.name}', which is not among the tools (${tools.map((t) => t.name).join(', ')})`,
    );
  }
}

/** The grammar of the calls the tool choice allows. */
function toolConstraint(traits: OutputTraits, tools: ToolDef[], task: ChatTask): Constraint {
  const format = toolFormat(traits.toolFormat);
  const choice = task.toolChoice ?? 'auto';
  if (typeof choice === 'object') {
    const tool = tools.find((t) => t.name === choice.name) as ToolDef;
    return {
      type: 'tags_with_separator',
      tags: [format.callTag(tool)],
      separator: format.separator,
      at_least_one: true,
      stop_after_first: true,
    };
  }
  const tags = tools.map((t) => format.callTag(t));
  const stopAfterFirst = task.parallelToolCalls === false;
  if (choice === 'required')
    return {
      type: 'tags_with_separator',
      tags,
      separator: format.separator,
      at_least_one: true,
      stop_after_first: stopAfterFirst,
    };
  const calls: Constraint = {
    type: 'triggered_tags',
    triggers: [...format.triggers],
    tags,
    stop_after_first: stopAfterFirst,
  };
  if (!task.responseFormat) return calls;
  // Either a call or an answer in the requested format. xgrammar (0.1.x) takes tag lists only at the end of a
  // grammar, not inside an `or`, so this branch allows one call per turn.
  return { type: 'or', elements: [...tags, answerFormat(task.responseFormat)] };
}

function answerFormat(format: ResponseFormat): StructuralTagFormat {
  return { type: 'json_schema', json_schema: format.type === 'json_object' ? { type: 'object' } : format.schema };
}

/**
 * The reasoning block, free text, then the answer's grammar. The models leave a blank line after the block, and a
 * JSON grammar accepts no whitespace before the value, so whitespace is allowed in between.
 */
function afterThinking(markers: NonNullable<OutputTraits['reasoning']>, answer: Constraint): Constraint {
  return {
    type: 'sequence',
    elements: [
      {
        type: 'tag',
        begin: markers.openedByPrompt ? '' : markers.open,
        content: { type: 'any_text' },
        end: markers.close,
      },
      { type: 'regex', pattern: '\\s*' },
      answer,
    ],
  };
}

/** What a plan's constraint came from, for the message a client reads when it cannot be compiled. */
export function constraintSubject(task: GenerateTask): string {
  return task.responseFormat ? 'response_format schema' : 'tool parameter schema';
}

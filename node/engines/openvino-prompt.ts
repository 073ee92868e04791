/**
 * The prompt as OpenVINO GenAI reads it: the conversation as a ChatHistory for its chat template, rendered and
 * encoded to count it as the model sees it, or rendered to text after Ollama's decoded context. GenAI tokenizes the
 * prompt itself, so these use the model's own GenAI tokenizer.
 */
import type * as GenAI from 'openvino-genai-node';
import type { ChatMessage, GenerateTask } from '../../shared/protocol/frames.ts';
import { AgentError } from '../errors.ts';
import type { OutputPlan } from '../output/plan.ts';

/**
 * The conversation as GenAI's chat template takes it: the plan's messages, with the plan's tools for the template's
 * `tools` variable and its template variables (`enable_thinking`) as extra context.
 */
export function chatHistory(
  genai: typeof GenAI,
  plan: OutputPlan,
  messages: readonly ChatMessage[],
): GenAI.ChatHistory {
  const history = new genai.ChatHistory((plan.messages ?? messages) as GenAI.ChatMessage[]);
  if (plan.tools) history.setTools(plan.tools);
  if (Object.keys(plan.templateContext).length) history.setExtraContext(plan.templateContext);
  return history;
}

/**
 * The chat rendered by the model's template as GenAI renders it (a raw prompt as it is). Templates raise on
 * conversations they do not support: that is the client's request, not an engine fault.
 */
function rendered(
  tokenizer: GenAI.Tokenizer,
  task: GenerateTask,
  plan: OutputPlan,
  input: GenAI.ChatHistory | string,
): string {
  if (typeof input === 'string') return input;
  try {
    return tokenizer.applyChatTemplate(
      input,
      true,
      undefined,
      plan.tools as unknown as Record<string, unknown>[] | undefined,
      plan.templateContext,
    );
  } catch (err) {
    throw new AgentError(
      'invalid_request',
      `the chat template of '${task.model}' rejected these messages: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** Renders and encodes the prompt as GenAI does, so the count is what the model sees. */
export function countPrompt(
  tokenizer: GenAI.Tokenizer,
  task: GenerateTask,
  plan: OutputPlan,
  input: GenAI.ChatHistory | string,
): number {
  const prompt = rendered(tokenizer, task, plan, input);
  // A rendered chat template already holds the special tokens.
  return (
    tokenizer
      .encode(prompt, { add_special_tokens: typeof input === 'string' })
      .input_ids.getShape()
      .at(-1) ?? 0
  );
}

/**
 * The prompt as text: Ollama's context decoded, then the chat rendered by its template (or the raw prompt). GenAI
 * encodes a string it does not template with the special tokens added, so a BOS the text starts with (a decoded
 * context's, a Llama template's) is left to GenAI, or the model would read two.
 */
export function contextPrompt(
  tokenizer: GenAI.Tokenizer,
  task: GenerateTask,
  plan: OutputPlan,
  input: GenAI.ChatHistory | string,
): string {
  const prefix = task.context?.length ? tokenizer.decode(task.context, { skip_special_tokens: false }) : '';
  const text = prefix + rendered(tokenizer, task, plan, input);
  const bos = tokenizer.getBosToken();
  return bos && text.startsWith(bos) && idsOf(tokenizer, bos, true).length > idsOf(tokenizer, bos, false).length
    ? text.slice(bos.length)
    : text;
}

/** Token ids of `text` (a rendered template already holds its special tokens). */
export function idsOf(tokenizer: GenAI.Tokenizer, text: string, addSpecialTokens: boolean): number[] {
  return Array.from(
    tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).input_ids.data as ArrayLike<number | bigint>,
    Number,
  );
}

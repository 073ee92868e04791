/**
 * The prompt as an ONNX Runtime chat model reads it: rendered by the chat template with the output plan's messages,
 * tools and template variables, the client's marked special-token texts tokenized as text, Ollama's context put
 * before it. Generation and counting both encode through here, so a count is what a generation feeds.
 */
import { type PreTrainedModel, Tensor } from '@huggingface/transformers';
import type { GenerateTask } from '../../shared/protocol/frames.ts';
import { AgentError } from '../errors.ts';
import type { OutputPlan } from '../output/plan.ts';
import type { ChatModel } from './ort-models.ts';
import { encodeMarked, innerTokenizer } from './special-split.ts';
import { MARK } from './user-text.ts';

/**
 * The prompt as the model reads it: a chat through the chat template with the plan's messages, tools and template
 * variables, a raw completion as it is. `generate` and `countPrompt` both use this, so a count is what a generation
 * would see.
 */
export function encodePrompt(
  task: GenerateTask,
  plan: OutputPlan,
  { tokenizer, chatTemplate }: Pick<ChatModel, 'tokenizer' | 'chatTemplate'>,
): { input_ids: Tensor; attention_mask: Tensor } {
  type Inputs = { input_ids: Tensor; attention_mask: Tensor };
  if (task.task !== 'chat') return tokenizer(task.prompt) as Inputs;
  let rendered: string;
  try {
    rendered = tokenizer.apply_chat_template(plan.messages ?? task.messages, {
      // The plan's variables first, so none of them can turn off the generation prompt or the text output.
      ...plan.templateContext,
      ...(plan.tools ? { tools: plan.tools } : {}),
      add_generation_prompt: true,
      tokenize: false,
      ...(chatTemplate ? { chat_template: chatTemplate } : {}),
    }) as string;
  } catch (err) {
    // Templates raise on conversations they do not support (roles out of order, a tool turn they cannot place):
    // that is the client's request, not a fault of the engine.
    throw new AgentError(
      'invalid_request',
      `the chat template of '${task.model}' rejected these messages: ${(err as Error).message}`,
      { cause: err },
    );
  }
  // The client's special-token texts were marked before the template ran (user-text.ts): tokenized as text here.
  const inner = innerTokenizer(tokenizer);
  const input = inner
    ? BigInt64Array.from(encodeMarked(inner, rendered), (id) => BigInt(id))
    : ((tokenizer(rendered.replaceAll(MARK, ''), { add_special_tokens: false }) as Inputs).input_ids
        .data as BigInt64Array);
  return {
    input_ids: new Tensor('int64', input, [1, input.length]),
    attention_mask: new Tensor('int64', new BigInt64Array(input.length).fill(1n), [1, input.length]),
  };
}

/**
 * Ollama's `context`: the ids of an earlier prompt and answer, put before this prompt as they are. Ids the model's
 * vocabulary does not have are the client's mistake (a context from another model), not the engine's.
 */
export function withContext(
  inputs: { input_ids: Tensor; attention_mask: Tensor },
  context: readonly number[],
  model: PreTrainedModel,
  name: string,
): { input_ids: Tensor; attention_mask: Tensor } {
  const vocab = (model.config as { vocab_size?: number }).vocab_size ?? Infinity;
  const bad = context.find((id) => id >= vocab);
  if (bad !== undefined)
    throw new AgentError(
      'invalid_request',
      `context holds token id ${bad}, but '${name}' has a vocabulary of ${vocab} tokens: send back the context this model returned`,
    );
  const prompt = inputs.input_ids.data as BigInt64Array;
  const ids = new BigInt64Array(context.length + prompt.length);
  ids.set(context.map((id) => BigInt(id)));
  ids.set(prompt, context.length);
  return {
    input_ids: new Tensor('int64', ids, [1, ids.length]),
    attention_mask: new Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]),
  };
}

/** Counts a prompt's tokens with a loaded chat model, as `generate` would feed it (see `Engine.countTokens`). */
export function countPrompt(task: GenerateTask, plan: OutputPlan, chat: ChatModel): number {
  return encodePrompt(task, plan, chat).input_ids.dims.at(-1) ?? 0;
}

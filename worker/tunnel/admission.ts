/**
 * What the edge can check about a request before it runs, without a tokenizer: the most it can cost in tokens
 * (reserved against the key's limits), whether the key may do what it asks, and whether it fits the model and the
 * tunnel. Each check throws the error the client should see.
 */
import type { ModelInfo, Task, ToolDef } from '../../shared/protocol/frames.ts';
import { MAX_AGENT_FRAME_BYTES } from '../../shared/protocol/version.ts';
import { ApiError } from '../http/errors.ts';
import type { Dispatch } from './dispatch.ts';
import type { Admission, KeyRecord, TokenNeed } from './ledger.ts';
import { unknownModel } from './agent-picker.ts';
import { residencyChange } from './residency.ts';

/**
 * Without a tokenizer, the edge bounds a prompt's tokens from above by its bytes (every token of a byte-level BPE
 * or byte-fallback tokenizer covers at least one byte) plus what a chat template adds per message and in all (the
 * test model's Llama 2 template adds 7–8 per message; templates that inject a long default system prompt add more,
 * and only for those can a request use more than it reserved).
 */
const TEMPLATE_TOKENS_PER_MESSAGE = 8;
const TEMPLATE_TOKENS_FIXED = 4;
/**
 * What the model reads of tools besides their JSON: the instructions a template (or the agent's generic layout,
 * node/output/history.ts `describeHermesTools`, ~500 bytes) wraps around them, bounded by its bytes.
 */
const TOOLS_PREAMBLE_BYTES = 1024;
/** Per tool and per call or result in history: the markup around it (`{"type": "function", …}`, `<tool_call>`…). */
const MARKUP_BYTES_PER_TOOL = 48;
/** Special tokens an embedding model adds per input ([CLS], [SEP], …). */
const SPECIAL_TOKENS_PER_INPUT = 4;

/**
 * The edge refuses only prompts that are certainly too long: no tokenizer in use spends fewer than one token per 8
 * bytes of UTF-8 on real text. The agent checks the exact count before running anything.
 */
const MAX_BYTES_PER_TOKEN = 8;

/** Characters a vector element takes in JSON at most (`-0.012345678918766975,`): float32 values printed as doubles. */
const CHARS_PER_ELEMENT = 23;

const encoder = new TextEncoder();
const bytes = (s: string) => encoder.encode(s).byteLength;

/** An upper bound of a text task's prompt tokens from its bytes (before any learned allowance, prompt-allowance.ts). */
export function promptEstimate(task: Extract<Task, { task: 'chat' | 'complete' }>): number {
  // Ollama's `context`: token ids put before the prompt as they are.
  return (
    (task.task === 'chat' ? chatBytes(task) : bytes(task.prompt) + TEMPLATE_TOKENS_FIXED) + (task.context?.length ?? 0)
  );
}

/**
 * The most this task can cost in tokens, as far as the edge can tell before it runs; `allowance`: what the model's
 * template has been seen to add beyond the byte bound (prompt-allowance.ts).
 */
export function tokenNeed(task: Task, model: ModelInfo | undefined, allowance = 0): TokenNeed {
  if (task.task === 'embed')
    return { prompt: task.input.reduce((n, i) => n + bytes(i) + SPECIAL_TOKENS_PER_INPUT, 0), completion: 0 };
  // A cross-encoder reads the query again with every document: each pair is a prompt.
  if (task.task === 'rerank') {
    const query = bytes(task.query) + SPECIAL_TOKENS_PER_INPUT;
    return { prompt: task.documents.reduce((n, d) => n + query + bytes(d), 0), completion: 0 };
  }
  // Counting a prompt is not charged, so it reserves nothing.
  if (task.task === 'count') return { prompt: 0, completion: 0 };
  const prompt = promptEstimate(task) + allowance;
  const context = Math.min(model?.contextLength ?? Infinity, task.sampling.contextLimit ?? Infinity);
  return {
    prompt: Math.min(prompt, context),
    completion: task.sampling.maxTokens,
    ...(Number.isFinite(context) ? { total: context } : {}),
  };
}

/**
 * Everything of a chat the template renders, in bytes: each message's text, reasoning and tool calls or result, the
 * tools (as JSON, each with a wrapper, after a preamble), and the template's own tokens per message and in all —
 * so a request with tools or a long stored conversation reserves what the model will read, not just its new text.
 * The agent's count is the truth; this never falls below it for templates without a long built-in system prompt.
 */
function chatBytes(task: Extract<Task, { task: 'chat' }>): number {
  let n = TEMPLATE_TOKENS_FIXED;
  for (const m of task.messages) {
    n += bytes(m.content) + TEMPLATE_TOKENS_PER_MESSAGE + (m.reasoning ? bytes(m.reasoning) : 0);
    for (const call of m.toolCalls ?? []) n += bytes(call.name) + bytes(call.arguments) + MARKUP_BYTES_PER_TOOL;
    if (m.role === 'tool') n += MARKUP_BYTES_PER_TOOL + (m.toolName ? bytes(m.toolName) : 0);
  }
  if (task.tools?.length) {
    n += TOOLS_PREAMBLE_BYTES + task.tools.reduce((sum, t) => sum + toolBytes(t) + MARKUP_BYTES_PER_TOOL, 0);
  }
  return n;
}

/**
 * A tool as a template renders it: its JSON, where Jinja's `tojson` puts a space after each `:` and `,` (counting
 * every `:` and `,`, those inside strings too, bounds that from above).
 */
function toolBytes(tool: ToolDef): number {
  const json = JSON.stringify({ type: 'function', function: tool });
  let separators = 0;
  for (const c of json) if (c === ':' || c === ',') separators++;
  return bytes(json) + separators;
}

/** What the key may do: its models, and changing a model's residency for every key (a privilege). */
export function checkScope(key: KeyRecord, dispatch: Dispatch): void {
  // The same answer as for a model that does not exist: a key learns nothing about other keys' models.
  if (key.models && !key.models.includes(dispatch.task.model)) throw unknownModel(dispatch.task.model);
  const change = residencyChange(dispatch.keepAliveMs);
  if (change !== undefined && !key.manageModels) {
    // Unloading a model, or pinning it in memory, changes what every other key gets: a privilege, not a request option.
    throw new ApiError(
      'forbidden',
      `${change} changes the model for every key; this API key may not do that: ` +
        'use a key created with --manage-models (or "manageModels": true through POST /admin/keys), or leave keep_alive out',
      { param: 'keep_alive' },
    );
  }
}

/** The client's error for a request its key's limits refused. */
export function refusal(
  key: KeyRecord,
  need: TokenNeed,
  refused: Extract<Admission, { refused: unknown }>['refused'],
): ApiError {
  const retryAfter = Math.max(1, Math.ceil(refused.retryAfterMs / 1000));
  const short =
    refused.left > 0
      ? ` for this request: it needs about ${need.prompt} tokens for its prompt, and ${refused.left} are left`
      : '';
  if (refused.limit === 'budget') {
    const state = refused.left > 0 ? `is nearly used up${short}` : 'is used up';
    return new ApiError(
      'insufficient_quota',
      `the monthly token budget of this API key (${key.monthlyTokenBudget} tokens) ${state}; it renews at the start of next month (UTC)`,
      { retryAfter },
    );
  }
  const limit = refused.limit === 'rpm' ? `${key.rpm} requests per minute` : `${key.tpm} tokens per minute`;
  return new ApiError(
    'rate_limited',
    `rate limit reached for this API key: ${limit}${short}; retry after ${retryAfter} s`,
    { retryAfter },
  );
}

/** How many vectors of `dimensions` fit in one agent frame, with room for the frame's other fields. */
function maxEmbedInputs(dimensions: number): number {
  return Math.max(1, Math.floor((MAX_AGENT_FRAME_BYTES - 4096) / (dimensions * CHARS_PER_ELEMENT + 2)));
}

/**
 * The bytes of the prompt; of an embedding batch, of its longest input (each input is a prompt of its own); of a
 * rerank, of its longest (query, document) pair.
 */
function promptBytes(task: Task): number {
  if (task.task === 'embed') return Math.max(...task.input.map(bytes));
  if (task.task === 'rerank') return bytes(task.query) + Math.max(...task.documents.map(bytes));
  return bytes(task.task === 'complete' ? task.prompt : task.messages.map((m) => m.content).join(''));
}

/** The error for a prompt `model` certainly cannot take (on its device), or undefined. */
export function promptTooLong(task: Task, model: ModelInfo): ApiError | undefined {
  if (model.maxPromptTokens === undefined || promptBytes(task) <= model.maxPromptTokens * MAX_BYTES_PER_TOKEN)
    return undefined;
  return new ApiError(
    'invalid_request',
    `the prompt is far longer than model '${model.id}' on ${model.device} takes (at most ${model.maxPromptTokens} tokens)`,
    { param: 'messages' },
  );
}

/** Whether the request fits the model the picked agent serves, and the tunnel's message limit. */
export function checkFits(dispatch: Dispatch, model: ModelInfo): void {
  const { task } = dispatch;
  if (task.task === 'embed' && model.dimensions !== undefined) {
    // The vectors come back in one frame, and a Worker takes WebSocket messages of at most 1 MiB: refuse a batch
    // whose answer could not fit, rather than have the agent's frame refused.
    const most = maxEmbedInputs(model.dimensions);
    if (task.input.length > most) {
      throw new ApiError(
        'invalid_request',
        `model '${model.id}' returns ${model.dimensions}-dimensional vectors, so one request takes at most ${most} inputs (the tunnel's 1 MiB message limit); got ${task.input.length}: split them into batches`,
        { param: 'input' },
      );
    }
  }
  if (dispatch.dimensions !== undefined && model.dimensions !== undefined && dispatch.dimensions !== model.dimensions) {
    throw new ApiError(
      'invalid_request',
      `model '${model.id}' produces ${model.dimensions}-dimensional vectors; other sizes are not supported`,
      { param: 'dimensions' },
    );
  }
}

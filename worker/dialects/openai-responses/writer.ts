/**
 * OpenAI Responses API output: the `response` object and its stream of typed, numbered events. The answer becomes
 * output items in order of appearance: a `reasoning` item, a `message` with one `output_text` part, and a
 * `function_call` item per call. Reasoning here is the model's raw chain of thought, so it travels as OpenAI sends
 * gpt-oss's: `reasoning_text` content and `response.reasoning_text.*` events, with an empty `summary` (nothing
 * summarised it).
 */
import type { FinishReason, ToolCall, Usage } from '../../../shared/protocol/frames.ts';
import type { ApiError } from '../../http/errors.ts';
import type { Answer, AnswerPart, Outcome, ResponseFormat, ResponseMeta, StreamWriter } from '../core/format.ts';
import { SSE_CONTENT_TYPE, sseComment, sseEvent } from '../core/sse.ts';

/** OpenAI's ids are a prefix and an opaque string; the request's UUID without dashes keeps them unique. */
export const responseId = (requestId: string) => `resp_${requestId.replaceAll('-', '')}`;

/** Item ids derived from the response's, so a stream, its body and a stored copy name items alike. */
function itemIds(meta: ResponseMeta) {
  const base = meta.id.replace(/^resp_/, '');
  return { reasoning: `rs_${base}`, message: `msg_${base}`, call: (index: number) => `fc_${base}_${index}` };
}

type Status = 'completed' | 'incomplete' | 'cancelled';

/** `length` is OpenAI's `incomplete` for max_output_tokens; a cancelled generation only reaches a client that left. */
function statusOf(reason: FinishReason): Status {
  return reason === 'length' ? 'incomplete' : reason === 'cancelled' ? 'cancelled' : 'completed';
}

export function responseUsage(u: Usage) {
  return {
    input_tokens: u.promptTokens,
    input_tokens_details: { cached_tokens: 0, cache_write_tokens: 0 },
    output_tokens: u.completionTokens,
    output_tokens_details: { reasoning_tokens: u.reasoningTokens ?? 0 },
    total_tokens: u.promptTokens + u.completionTokens,
  };
}

/** What a response repeats of its request when the route passed nothing (OpenAI's defaults). */
const ECHO_DEFAULTS = {
  instructions: null,
  max_output_tokens: null,
  parallel_tool_calls: true,
  previous_response_id: null,
  reasoning: { effort: null, summary: null },
  store: true,
  temperature: 1,
  text: { format: { type: 'text' } },
  tool_choice: 'auto',
  tools: [],
  top_p: 1,
  truncation: 'disabled',
  metadata: {},
};

function responseObject(
  meta: ResponseMeta,
  status: Status | 'in_progress' | 'failed',
  output: unknown[],
  extra: { usage?: Usage; error?: ApiError } = {},
) {
  return {
    id: meta.id,
    object: 'response',
    created_at: meta.created,
    status,
    background: false,
    completed_at: status === 'completed' ? Math.floor(Date.now() / 1000) : null,
    error: extra.error
      ? { code: extra.error.status === 429 ? 'rate_limit_exceeded' : 'server_error', message: extra.error.message }
      : null,
    incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    model: meta.model,
    output,
    ...ECHO_DEFAULTS,
    ...meta.echo,
    service_tier: 'default',
    ...(extra.usage ? { usage: responseUsage(extra.usage) } : {}),
  };
}

const reasoningItem = (id: string, text: string, status: string) => ({
  id,
  type: 'reasoning',
  summary: [],
  content: [{ type: 'reasoning_text', text }],
  status,
});
const outputText = (text: string) => ({ type: 'output_text', text, annotations: [], logprobs: [] });
const messageItem = (id: string, text: string, status: string) => ({
  id,
  type: 'message',
  status,
  role: 'assistant',
  content: [outputText(text)],
});
const callItem = (id: string, call: ToolCall, status: string) => ({
  id,
  type: 'function_call',
  status,
  call_id: call.id,
  name: call.name,
  arguments: call.arguments,
});

/** The output items of a whole answer, in the order a stream announces them. */
export function outputItems(meta: ResponseMeta, answer: Answer, status: Status): unknown[] {
  const ids = itemIds(meta);
  const itemStatus = status === 'completed' ? 'completed' : 'incomplete';
  const out: unknown[] = [];
  if (answer.reasoning) out.push(reasoningItem(ids.reasoning, answer.reasoning, itemStatus));
  // A message even when empty, unless the model only called tools: a client reading `output_text` finds ''.
  if (answer.text || answer.toolCalls.length === 0) out.push(messageItem(ids.message, answer.text, itemStatus));
  for (const [i, c] of answer.toolCalls.entries()) out.push(callItem(ids.call(i), c, itemStatus));
  return out;
}

/** An output item being streamed. */
type Open =
  | { kind: 'reasoning'; index: number; id: string; text: string }
  | { kind: 'message'; index: number; id: string; text: string }
  | { kind: 'call'; index: number; id: string; call: ToolCall };

class ResponseEventWriter implements StreamWriter {
  readonly contentType = SSE_CONTENT_TYPE;
  readonly #meta: ResponseMeta;
  readonly #ids: ReturnType<typeof itemIds>;
  #sequence = 0;
  /** Every item announced so far, in output order; `#current` is the text or reasoning item still growing. */
  readonly #items: Open[] = [];
  readonly #done = new Set<Open>();
  #current: Open | undefined;
  /** Calls by their index in the agent's tool-call deltas. */
  readonly #calls = new Map<number, Open & { kind: 'call' }>();

  constructor(meta: ResponseMeta) {
    this.#meta = meta;
    this.#ids = itemIds(meta);
  }

  /** OpenAI names each event twice, in `event:` and in the data's `type`; clients read either. */
  #event(type: string, fields: Record<string, unknown>): string {
    return sseEvent({ type, sequence_number: this.#sequence++, ...fields }, type);
  }

  open() {
    const response = responseObject(this.#meta, 'in_progress', []);
    return this.#event('response.created', { response }) + this.#event('response.in_progress', { response });
  }

  #snapshot(item: Open, status: string) {
    if (item.kind === 'reasoning') return reasoningItem(item.id, item.text, status);
    if (item.kind === 'message') return messageItem(item.id, item.text, status);
    return callItem(item.id, item.call, status);
  }

  #add(item: Open): string {
    this.#items.push(item);
    const shown =
      item.kind === 'reasoning'
        ? { ...reasoningItem(item.id, '', 'in_progress'), content: [] }
        : item.kind === 'message'
          ? { ...messageItem(item.id, '', 'in_progress'), content: [] }
          : this.#snapshot(item, 'in_progress');
    let out = this.#event('response.output_item.added', { output_index: item.index, item: shown });
    const part =
      item.kind === 'reasoning'
        ? { type: 'reasoning_text', text: '' }
        : item.kind === 'message'
          ? outputText('')
          : undefined;
    if (part)
      out += this.#event('response.content_part.added', {
        item_id: item.id,
        output_index: item.index,
        content_index: 0,
        part,
      });
    return out;
  }

  #finish(item: Open, status: string): string {
    if (this.#done.has(item)) return '';
    this.#done.add(item);
    const at = { item_id: item.id, output_index: item.index };
    let out = '';
    if (item.kind === 'reasoning') {
      out += this.#event('response.reasoning_text.done', { ...at, content_index: 0, text: item.text });
      out += this.#event('response.content_part.done', {
        ...at,
        content_index: 0,
        part: { type: 'reasoning_text', text: item.text },
      });
    } else if (item.kind === 'message') {
      out += this.#event('response.output_text.done', { ...at, content_index: 0, text: item.text, logprobs: [] });
      out += this.#event('response.content_part.done', { ...at, content_index: 0, part: outputText(item.text) });
    } else {
      out += this.#event('response.function_call_arguments.done', {
        ...at,
        name: item.call.name,
        arguments: item.call.arguments,
      });
    }
    return (
      out + this.#event('response.output_item.done', { output_index: item.index, item: this.#snapshot(item, status) })
    );
  }

  /** The reasoning or message item a piece of that kind goes to: the growing one, or a new one after it. */
  #grow(kind: 'reasoning' | 'message'): { item: Open & { kind: typeof kind }; out: string } {
    if (this.#current?.kind === kind) return { item: this.#current as Open & { kind: typeof kind }, out: '' };
    const out = this.#current ? this.#finish(this.#current, 'completed') : '';
    // Reasoning after an answer began (rare) is a new item; ids stay unique with the output index.
    const index = this.#items.length;
    const base = kind === 'reasoning' ? this.#ids.reasoning : this.#ids.message;
    const item = {
      kind,
      index,
      id: this.#items.some((i) => i.kind === kind) ? `${base}_${index}` : base,
      text: '',
    } as Open & { kind: typeof kind };
    this.#current = item;
    return { item, out: out + this.#add(item) };
  }

  delta(part: AnswerPart) {
    let out = '';
    if (part.reasoning) {
      const g = this.#grow('reasoning');
      g.item.text += part.reasoning;
      out +=
        g.out +
        this.#event('response.reasoning_text.delta', {
          item_id: g.item.id,
          output_index: g.item.index,
          content_index: 0,
          delta: part.reasoning,
        });
    }
    if (part.text) {
      const g = this.#grow('message');
      g.item.text += part.text;
      out +=
        g.out +
        this.#event('response.output_text.delta', {
          item_id: g.item.id,
          output_index: g.item.index,
          content_index: 0,
          delta: part.text,
          logprobs: [],
        });
    }
    for (const d of part.toolCalls ?? []) {
      let item = this.#calls.get(d.index);
      if (!item) {
        if (this.#current) out += this.#finish(this.#current, 'completed');
        this.#current = undefined;
        item = {
          kind: 'call',
          index: this.#items.length,
          id: this.#ids.call(this.#calls.size),
          call: { id: d.id ?? `call_${d.index}`, name: d.name ?? '', arguments: '' },
        };
        this.#calls.set(d.index, item);
        out += this.#add(item);
      }
      if (d.arguments) {
        item.call.arguments += d.arguments;
        out += this.#event('response.function_call_arguments.delta', {
          item_id: item.id,
          output_index: item.index,
          delta: d.arguments,
        });
      }
    }
    return out;
  }

  close(outcome: Outcome) {
    const status = statusOf(outcome.finishReason);
    const itemStatus = status === 'completed' ? 'completed' : 'incomplete';
    // An answer with no text and no call still has its (empty) message, as the non-streaming body does.
    let out = this.#items.some((i) => i.kind !== 'reasoning') ? '' : this.#grow('message').out;
    out += this.#items.map((i) => this.#finish(i, itemStatus)).join('');
    const output = this.#items.map((i) => this.#snapshot(i, itemStatus));
    const response = responseObject(this.#meta, status, output, { usage: outcome.usage });
    out += this.#event(status === 'completed' ? 'response.completed' : 'response.incomplete', { response });
    return out;
  }

  /**
   * A failure mid-stream: `response.failed` carries the response as far as it got; the `error` event before it is
   * what the openai clients raise, with the relay's code and message.
   */
  error(err: ApiError) {
    const output = this.#items.map((i) => this.#snapshot(i, 'incomplete'));
    return (
      this.#event('error', { code: err.code, message: err.message, param: err.param }) +
      this.#event('response.failed', { response: responseObject(this.#meta, 'failed', output, { error: err }) })
    );
  }

  keepAlive(note?: string) {
    return sseComment(note);
  }
}

export const openaiResponses: ResponseFormat = {
  flavor: 'openai',
  responseId,
  stream: (meta) => new ResponseEventWriter(meta),
  body: (meta, answer, outcome) => {
    const status = statusOf(outcome.finishReason);
    return responseObject(meta, status, outputItems(meta, answer, status), { usage: outcome.usage });
  },
};

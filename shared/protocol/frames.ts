/**
 * Tunnel protocol v1: every frame that crosses the agent's WebSocket, defined once for both sides.
 *
 * Frames are JSON text messages with a `type` discriminator. Frames for one request share its `id`, chosen by the
 * edge (a UUID, so ids stay unique across Durable Object restarts). A stream for one request is
 * `request` → `chunk`* → exactly one terminal frame (`end` or `error`); `cancel` may cut it short, and the agent
 * still answers a cancel with the terminal frame so the edge learns how many tokens were produced.
 */
import * as z from 'zod';
import { ERROR_CODES } from './codes.ts';
import { checkSchemaLimits } from './schema-limits.ts';

const Id = z.string().min(1).max(128);

/**
 * A request id a client may send as `X-Request-Id` and see again in the edge's and the agent's logs: 1–128 of
 * letters, digits and `. _ : -`. Nothing else is taken as it comes (a log line must not carry a client's newline or
 * quote); an id outside the rule is replaced by one the edge makes.
 */
export const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const Count = z.number().int().nonnegative();

/** `rerank`: a cross-encoder (a sequence-classification model) that scores (query, document) pairs. */
export const ModelKind = z.enum(['chat', 'embedding', 'rerank']);
export type ModelKind = z.infer<typeof ModelKind>;

/** What the agent can take: requests running plus requests waiting, beyond which the edge refuses new ones. */
export const Capacity = z.object({
  /** Requests that may run at once, over all devices. */
  concurrency: z.number().int().positive(),
  /** Requests that may wait in the agent's queue. */
  queueLimit: Count,
});
export type Capacity = z.infer<typeof Capacity>;

/** A model as the agent advertises it. `id` is the name clients use. */
export const ModelInfo = z.object({
  id: z.string().min(1).max(256),
  kind: ModelKind,
  /** Device the model runs on (or will, once loaded), e.g. `CPU`, `NPU`. */
  device: z.string().min(1).max(64),
  /** Longest prompt, in tokens, the agent accepts for this model. */
  maxPromptTokens: Count.optional(),
  /** Context window in tokens, when the model's config says. */
  contextLength: Count.optional(),
  /** Vector size, for embedding models. */
  dimensions: Count.optional(),
  /** Architecture family from the model's config, e.g. `llama`, `bert`. */
  family: z.string().max(64).optional(),
  /** Weight format and precision, e.g. `onnx fp32`, `openvino int4`. */
  format: z.string().max(64).optional(),
  ownedBy: z.string().max(128).optional(),
  /**
   * What the model can do, in Ollama's words (`/api/show`): `completion`, `tools`, `thinking`, `embedding`; and
   * `rerank` for a cross-encoder (no Ollama word yet: ollama#3368).
   */
  capabilities: z
    .array(z.enum(['completion', 'tools', 'thinking', 'embedding', 'rerank']))
    .max(8)
    .optional(),
  /** Bytes of the model's files on disk (Ollama's `size` in `/api/tags`). */
  sizeBytes: Count.optional(),
  /** A digest of the model's files, `sha256:<64 hex>`: it changes when the files change. */
  digest: z.string().max(80).optional(),
  /** When the model's files last changed, epoch milliseconds. */
  modifiedAt: Count.optional(),
  /** Parameter count as Ollama writes it, e.g. `1.1B`, `135M`. */
  parameterSize: z.string().max(16).optional(),
  /** Weight precision as Ollama writes it, e.g. `F32`, `F16`, `Q4_0`, `INT4`. */
  quantizationLevel: z.string().max(32).optional(),
  /** The exact parameter count behind `parameterSize` (Ollama's `general.parameter_count` in `/api/show`). */
  parameterCount: Count.optional(),
  /** Width of the model's hidden states (`hidden_size`; Ollama's `<arch>.embedding_length`). */
  embeddingLength: Count.optional(),
  /** Chat models: the chat template's text (Ollama's `/api/show` `template`), when at most 32 KiB. */
  template: z
    .string()
    .max(32 * 1024)
    .optional(),
  /**
   * What the model's device takes at once for this model: requests running together and waiting in the agent's
   * queue. The edge admits and routes by it (an NPU runs one request at a time). Absent: the agent's capacity.
   */
  capacity: Capacity.optional(),
});
export type ModelInfo = z.infer<typeof ModelInfo>;

export const DeviceInfo = z.object({
  name: z.string().min(1).max(64),
  description: z.string().max(256).optional(),
});
export type DeviceInfo = z.infer<typeof DeviceInfo>;

/**
 * A JSON Schema, as clients send it (an object; its validity is the grammar compiler's to judge), within the limits
 * that keep its compile bounded (schema-limits.ts).
 */
export const JsonSchema = z.record(z.string(), z.unknown()).superRefine(checkSchemaLimits);
export type JsonSchema = z.infer<typeof JsonSchema>;

/** A function the model may call: OpenAI `tools[].function`, Ollama `tools[].function`, Anthropic `tools[]`. */
export const ToolDef = z.object({
  name: z.string().min(1).max(128),
  description: z.string().max(16_384).optional(),
  /** JSON Schema of the arguments object. */
  parameters: JsonSchema,
});
export type ToolDef = z.infer<typeof ToolDef>;

/** A call the model made: `arguments` is the JSON text of the arguments object, as OpenAI carries it. */
export const ToolCall = z.object({
  id: z.string().min(1).max(128),
  name: z.string().min(1).max(128),
  arguments: z.string(),
});
export type ToolCall = z.infer<typeof ToolCall>;

export const ChatMessage = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool']),
  content: z.string(),
  /** Assistant turns: the calls the model made in that turn. */
  toolCalls: z.array(ToolCall).max(128).optional(),
  /** Tool turns: the call this result answers. */
  toolCallId: z.string().max(128).optional(),
  /** Tool turns: the function's name (Ollama's `tool_name`), when the client gave it. */
  toolName: z.string().max(128).optional(),
  /** Assistant turns: the reasoning the model gave before its answer (most templates drop it from history). */
  reasoning: z.string().optional(),
});
export type ChatMessage = z.infer<typeof ChatMessage>;

/**
 * Which tool the model must use: `auto` (it decides), `none` (answer in text), `required` (at least one call), or
 * one named function.
 */
export const ToolChoice = z.union([
  z.enum(['auto', 'none', 'required']),
  z.object({ name: z.string().min(1).max(128) }),
]);
export type ToolChoice = z.infer<typeof ToolChoice>;

/**
 * The shape the answer must have: any JSON object, or JSON valid against a schema. Enforced by constrained
 * decoding on the agent (a grammar), never by retrying.
 */
export const ResponseFormat = z.discriminatedUnion('type', [
  z.object({ type: z.literal('json_object') }),
  z.object({
    type: z.literal('json_schema'),
    schema: JsonSchema,
    name: z.string().max(128).optional(),
    strict: z.boolean().optional(),
  }),
]);
export type ResponseFormat = z.infer<typeof ResponseFormat>;

/**
 * Sampling settings after the edge has filled in defaults: the agent never guesses. `temperature: 0` means greedy
 * decoding; a `seed` makes sampling reproducible on the same agent build and model.
 */
export const Sampling = z.object({
  maxTokens: z.number().int().positive(),
  temperature: z.number().min(0).max(2),
  topP: z.number().gt(0).max(1),
  topK: Count.optional(),
  stop: z.array(z.string().min(1)).max(16),
  seed: z.number().int().optional(),
  /** OpenAI semantics: subtract per token already generated (presence) or per occurrence (frequency). */
  presencePenalty: z.number().min(-2).max(2).optional(),
  frequencyPenalty: z.number().min(-2).max(2).optional(),
  /** Multiplicative repetition penalty over prompt and output (Ollama's `repeat_penalty`); 1 is off. */
  repetitionPenalty: z.number().gt(0).max(10).optional(),
  /** Context window to use, in tokens, when smaller than the model's (Ollama's `num_ctx`). */
  contextLimit: z.number().int().positive().optional(),
});
export type Sampling = z.infer<typeof Sampling>;

/**
 * Ollama's `/api/generate` `context`: token ids of an earlier prompt and answer, put before this prompt as they are
 * (the agent renders the new prompt, then prepends them), and whether the `end` should carry the ids of this prompt
 * and answer. Only for agents announcing `context`.
 */
const ContextFields = {
  context: z.array(Count).max(262_144).optional(),
  returnContext: z.boolean().optional(),
};

export const ChatTask = z.object({
  task: z.literal('chat'),
  model: z.string().min(1),
  messages: z.array(ChatMessage).min(1),
  sampling: Sampling,
  /** Functions the model may call (see ToolChoice); absent or empty: none. */
  tools: z.array(ToolDef).max(128).optional(),
  /** Absent means `auto` when there are tools. */
  toolChoice: ToolChoice.optional(),
  /** False: at most one call per turn. Absent means true, as in OpenAI's API. */
  parallelToolCalls: z.boolean().optional(),
  responseFormat: ResponseFormat.optional(),
  /**
   * Reasoning for models that think: `true` thinks (where the template can switch it on), `false` asks the template
   * to switch thinking off, absent leaves the model's default. Whatever the model thinks is always returned apart
   * from the answer.
   */
  think: z.boolean().optional(),
  ...ContextFields,
});
export type ChatTask = z.infer<typeof ChatTask>;

/** A raw completion: the prompt is used as is, without the chat template. */
export const CompleteTask = z.object({
  task: z.literal('complete'),
  model: z.string().min(1),
  prompt: z.string(),
  sampling: Sampling,
  responseFormat: ResponseFormat.optional(),
  ...ContextFields,
});
export type CompleteTask = z.infer<typeof CompleteTask>;

export const EmbedTask = z.object({
  task: z.literal('embed'),
  model: z.string().min(1),
  input: z.array(z.string()).min(1).max(2048),
});
export type EmbedTask = z.infer<typeof EmbedTask>;

/**
 * Scores each document against the query with a cross-encoder (a `rerank` model): one relevance score per document,
 * 0..1 (the sigmoid of the model's one logit; with two labels, the softmax's second), answered by an `embeddings`
 * frame whose `data` holds one `[score]` per document, in document order. An agent that lists a `rerank` model takes
 * these tasks.
 */
export const RerankTask = z.object({
  task: z.literal('rerank'),
  model: z.string().min(1),
  query: z.string().min(1),
  documents: z.array(z.string().min(1)).min(1).max(2047),
});
export type RerankTask = z.infer<typeof RerankTask>;

/**
 * Counts the tokens of a chat prompt, rendered exactly as a `chat` task with the same fields would be (template,
 * tools, think switch), without generating: Anthropic's `count_tokens`. Sampling and the response format change
 * what is generated, not the prompt, so they are not part of it. Answered with an `end` frame whose usage holds the
 * prompt's tokens and no completion tokens. Only for agents announcing `count-tokens`.
 */
export const CountTask = ChatTask.omit({
  task: true,
  sampling: true,
  responseFormat: true,
  context: true,
  returnContext: true,
}).extend({ task: z.literal('count') });
export type CountTask = z.infer<typeof CountTask>;

/** Tasks that generate text. */
export type GenerateTask = ChatTask | CompleteTask;

export const Task = z.discriminatedUnion('task', [ChatTask, CompleteTask, EmbedTask, RerankTask, CountTask]);
export type Task = z.infer<typeof Task>;

/** `tool_calls`: the model ended its turn with one or more tool calls. */
export const FinishReason = z.enum(['stop', 'length', 'tool_calls', 'cancelled']);
export type FinishReason = z.infer<typeof FinishReason>;

export const Usage = z.object({
  promptTokens: Count,
  /** Every generated token, reasoning included. */
  completionTokens: Count,
  /** Of the completion tokens, those spent on reasoning, when the model reasoned. */
  reasoningTokens: Count.optional(),
  /**
   * Of the prompt tokens, those the engine took from its cache of earlier sequences instead of prefilling them
   * (OpenAI's `prompt_tokens_details.cached_tokens`); absent from an engine that keeps no such cache.
   */
  cachedPromptTokens: Count.optional(),
});
export type Usage = z.infer<typeof Usage>;

// --- agent → edge -------------------------------------------------------------------------------------------

/** A model held in memory by the agent. */
export const LoadedModel = z.object({
  id: z.string().min(1).max(256),
  device: z.string().max(64),
  /** Memory the loaded model holds, bytes (Ollama's `size`; `size_vram` when the device is a GPU or NPU). */
  bytes: Count,
  /** When keep-alive unloads it, epoch milliseconds; null while it is pinned or in use for ever (`keep_alive: -1`). */
  expiresAt: Count.nullable(),
  /** Context window it was loaded with, tokens. */
  contextLength: Count.optional(),
  loadedAt: Count.optional(),
});
export type LoadedModel = z.infer<typeof LoadedModel>;

/** A model being loaded or compiled for its device (NPU compilation of a 1–8B model takes minutes). */
export const LoadProgress = z.object({
  model: z.string().min(1).max(256),
  device: z.string().max(64),
  phase: z.enum(['load', 'compile']),
  startedAt: Count,
  /** 0..1 where the engine reports it. */
  fraction: z.number().min(0).max(1).optional(),
});
export type LoadProgress = z.infer<typeof LoadProgress>;

export const HelloFrame = z.object({
  type: z.literal('hello'),
  protocol: z.number().int().positive(),
  agentId: z.string().min(1).max(128),
  agentVersion: z.string().max(64),
  engine: z.string().min(1).max(64),
  models: z.array(ModelInfo).max(1024),
  devices: z.array(DeviceInfo).max(64),
  capacity: Capacity.optional(),
  /** What this agent supports beyond the protocol's core (see AGENT_FEATURES); the edge routes by it. */
  features: z.array(z.string().max(64)).max(64).optional(),
  /**
   * Random per agent process. The same instance reconnecting replaces its old connection; another instance with the
   * same `agentId` (a cloned machine) is refused while the first is alive. Absent from older agents.
   */
  instanceId: z.string().min(1).max(64).optional(),
});

/**
 * Optional abilities an agent announces in its hello. An edge sends a request that needs one only to agents that
 * announce it, and answers 400 when none does, rather than letting an older agent answer wrongly.
 * - `tools`: tasks with `tools`/`toolChoice`, tool calls in history, `toolCalls` deltas;
 * - `structured-output`: tasks with `responseFormat` (constrained decoding);
 * - `reasoning`: tasks with `think`, `reasoning` deltas;
 * - `count-tokens`: `count` tasks;
 * - `manage`: `manage` frames (load, unload, pull, delete, copy), answered with `progress`* then `managed` or
 *   `error`; the agent sends `models` when its model list changes;
 * - `context`: tasks with `context` (token ids put before the prompt) and `returnContext`;
 * - `lookup-vector`: a request's `lookup` (the semantic cache's text to embed), answered with one `vector` frame.
 */
export const AGENT_FEATURES = [
  'tools',
  'structured-output',
  'reasoning',
  'count-tokens',
  'manage',
  'context',
  'lookup-vector',
] as const;
export type AgentFeature = (typeof AGENT_FEATURES)[number];

/** Heartbeat with the agent's load, sent periodically and whenever it changes state (e.g. starts draining). */
export const StatusFrame = z.object({
  type: z.literal('status'),
  running: Count,
  queued: Count,
  capacity: Capacity,
  /** True once the agent is shutting down: it finishes what it has and takes nothing new. */
  draining: z.boolean(),
  devices: z
    .array(
      z.object({
        name: z.string().max(64),
        running: Count,
        queued: Count,
        loadedModels: z.array(z.string().max(256)).max(1024),
      }),
    )
    .max(64),
  /** Models loaded in memory now (Ollama's `/api/ps`), on either engine. */
  loaded: z.array(LoadedModel).max(1024).optional(),
  /** Loads and compilations under way, so waiting clients and the dashboard can say what is happening. */
  loading: z.array(LoadProgress).max(64).optional(),
  /** Requests waiting per model (the agent's queue), so the edge can route by expected wait. */
  queuedByModel: z.record(z.string().max(256), Count).optional(),
});
export type StatusFrame = z.infer<typeof StatusFrame>;

/**
 * The agent's model list changed (a pull finished, a model was deleted or copied, the models folder changed): the
 * whole new list, replacing the hello's. Only from agents announcing `manage`.
 */
export const ModelsFrame = z.object({
  type: z.literal('models'),
  models: z.array(ModelInfo).max(1024),
});
export type ModelsFrame = z.infer<typeof ModelsFrame>;

/** A step of a `manage` operation (Ollama's pull progress lines): what is happening, and bytes done of bytes total. */
export const ProgressFrame = z.object({
  type: z.literal('progress'),
  id: Id,
  status: z.string().max(256),
  digest: z.string().max(128).optional(),
  total: Count.optional(),
  completed: Count.optional(),
});
export type ProgressFrame = z.infer<typeof ProgressFrame>;

/** The successful end of a `manage` operation (a failure ends with an `error` frame carrying the id). */
export const ManagedFrame = z.object({
  type: z.literal('managed'),
  id: Id,
  /** load: milliseconds the load took (0 when the model was already loaded). */
  loadDurationMs: z.number().nonnegative().optional(),
  /** unload: whether the model was loaded. */
  wasLoaded: z.boolean().optional(),
});
export type ManagedFrame = z.infer<typeof ManagedFrame>;

/**
 * A piece of a tool call as it streams: the first piece of a call has its `id` and `name`, later pieces carry
 * fragments of the arguments' JSON text. `index` numbers the calls of one answer from 0.
 */
export const ToolCallDelta = z.object({
  index: z.number().int().nonnegative().max(127),
  id: z.string().min(1).max(128).optional(),
  name: z.string().min(1).max(128).optional(),
  arguments: z.string().optional(),
});
export type ToolCallDelta = z.infer<typeof ToolCallDelta>;

/** What a chunk may carry besides answer text: reasoning text and tool-call pieces, each in generation order. */
const TypedParts = {
  /** Reasoning text (inside the model's think block), apart from the answer. */
  reasoning: z.string().optional(),
  toolCalls: z.array(ToolCallDelta).max(128).optional(),
};

export const ChunkFrame = z.object({
  type: z.literal('chunk'),
  id: Id,
  /** Answer text (never reasoning or tool-call markup). */
  text: z.string(),
  /** Tokens generated since the previous chunk (a chunk may hold several, or none while UTF-8 is incomplete). */
  tokens: Count,
  /**
   * The prompt's tokens, once counted: on the request's first chunk, or on a chunk of its own (no text, no tokens)
   * when the first token is slow to come (a long prefill), so the edge knows them even if the agent then dies.
   */
  promptTokens: Count.optional(),
  ...TypedParts,
});

export const EndFrame = z.object({
  type: z.literal('end'),
  id: Id,
  finishReason: FinishReason,
  usage: Usage,
  device: z.string().max(64),
  /** Milliseconds from the agent receiving the request to its first token; absent when none was produced. */
  ttftMs: z.number().nonnegative().optional(),
  durationMs: z.number().nonnegative(),
  /** Milliseconds of `durationMs` spent waiting for the model to load (about 0 when it was loaded already). */
  loadDurationMs: z.number().nonnegative().optional(),
  /** Milliseconds of `durationMs` spent waiting in the agent's queue for a device slot. */
  queueMs: z.number().nonnegative().optional(),
  /**
   * The token ids of the prompt and the answer, when the task asked for them (`returnContext`; Ollama's `context`),
   * to be sent back as the next task's `context`.
   */
  context: z.array(Count).max(262_144).optional(),
  /**
   * Text generated since the last chunk, sent with the end rather than as a chunk of its own, and the tokens it
   * holds: one frame fewer per answer. Only to an edge whose welcome listed `end-text` (an older edge would drop it).
   */
  text: z.string().optional(),
  tokens: Count.optional(),
  ...TypedParts,
});

/**
 * Terminal frame of an `embed` request: one vector per input, in input order; of a `rerank` request: one `[score]`
 * per document, in document order.
 */
export const EmbeddingsFrame = z.object({
  type: z.literal('embeddings'),
  id: Id,
  data: z.array(z.array(z.number())).max(2048),
  usage: Usage,
  device: z.string().max(64),
  durationMs: z.number().nonnegative(),
  /** Milliseconds of `durationMs` spent waiting for the model to load. */
  loadDurationMs: z.number().nonnegative().optional(),
  /** Milliseconds of `durationMs` spent waiting in the agent's queue for a device slot. */
  queueMs: z.number().nonnegative().optional(),
});

/**
 * The vector of a request's `lookup` text (the semantic cache's question), sent as soon as it is computed, whether
 * before, between or after the request's chunks; without `data` when it could not be computed (the lookup is then a
 * miss). Exactly one per request that carried a `lookup`, from agents announcing `lookup-vector`.
 */
export const VectorFrame = z.object({
  type: z.literal('vector'),
  id: Id,
  data: z.array(z.number()).max(16_384).optional(),
  /** Milliseconds from the request's arrival to the vector (the embedding model's load included). */
  durationMs: z.number().nonnegative(),
});

// --- both directions ----------------------------------------------------------------------------------------

export const ErrorFrame = z.object({
  type: z.literal('error'),
  /** The request this error ends; absent for an error about the connection itself. */
  id: Id.optional(),
  code: z.enum(ERROR_CODES),
  message: z.string().max(4096),
  /** Tokens produced before the failure, so usage records stay truthful. */
  usage: Usage.optional(),
});

export const PingFrame = z.object({ type: z.literal('ping') });
export const PongFrame = z.object({ type: z.literal('pong') });

// --- edge → agent -------------------------------------------------------------------------------------------

/** Optional behaviours an edge supports within its protocol version, announced in its welcome. */
export const EDGE_FEATURES = ['end-text'] as const;

export const WelcomeFrame = z.object({
  type: z.literal('welcome'),
  protocol: z.number().int().positive(),
  agentId: z.string(),
  /** What this edge supports beyond the protocol's core (see EDGE_FEATURES); unknown names are ignored. */
  features: z.array(z.string().max(64)).max(64).optional(),
});

/**
 * A request's class in the agent's queue: `interactive` (the default) is shared between keys by weight; `batch` (the
 * Batch API's lines, `service_tier: "flex"`) runs only when no interactive request waits. See docs/fair-shares.md.
 */
export const PRIORITIES = ['interactive', 'batch'] as const;
export const Priority = z.enum(PRIORITIES);
export type Priority = z.infer<typeof Priority>;

/** An API key's share of a device relative to other keys' (`npm run keys -- create --weight`). */
export const MAX_KEY_WEIGHT = 1000;
export const KeyWeight = z.number().int().min(1).max(MAX_KEY_WEIGHT);

export const RequestFrame = z.object({
  type: z.literal('request'),
  id: Id,
  body: Task,
  /** The API key's id, so the agent can share its queue fairly between keys. */
  keyId: z.string().max(128).optional(),
  /**
   * The request's id for logs: the client's `X-Request-Id` (REQUEST_ID), else the one the edge made and echoed.
   * Unlike `id` (one exchange on this connection, unique), two requests may share it. Absent from an older edge.
   */
  requestId: z.string().regex(REQUEST_ID).optional(),
  /** The key's weight in that sharing; absent: 1. */
  weight: KeyWeight.optional(),
  /** How long the model should stay loaded after this request (Ollama's `keep_alive`); -1 for ever. */
  keepAliveMs: z.number().int().min(-1).optional(),
  /**
   * `keepAliveMs` came from a key without the `manage` scope: it may lengthen the model's keep-alive, never shorten
   * it or lift a pin another key set. Absent: it sets the keep-alive (the `manage` scope, or an older edge).
   */
  keepAliveExtends: z.literal(true).optional(),
  /**
   * The request's class: `batch` for the Batch API's lines (worker/batch/) and `service_tier: "flex"`, which the
   * agent's queue serves only when no interactive request waits. Absent: interactive. An older agent ignores the
   * field (frames are not strict).
   */
  priority: Priority.optional(),
  /**
   * The semantic cache's lookup riding on a generation (docs/DESIGN.md, "Semantic cache"): the agent embeds `text`
   * with `model` beside the generation, without waiting for a device slot, and sends the vector in a `vector` frame,
   * so the edge searches its index while the model works. Only to agents announcing `lookup-vector` and serving
   * `model`; an older agent ignores it (the lookup is then a miss).
   */
  lookup: z
    .object({
      model: z.string().min(1).max(256),
      text: z.string(),
      /**
       * Embed it once the generation has ended, not beside it: the edge does not race this lookup (the model's first
       * token comes sooner than a lookup takes) and wants the vector only to file the answer under.
       */
      after: z.literal(true).optional(),
    })
    .optional(),
});

/**
 * Per-stream flow control: the edge pauses a stream whose client reads too slowly and resumes it once the client
 * has caught up, so neither side buffers without bound.
 */
export const FlowFrame = z.object({
  type: z.literal('flow'),
  id: Id,
  pause: z.boolean(),
});

export const CancelFrame = z.object({
  type: z.literal('cancel'),
  id: Id,
  reason: z.string().max(256).optional(),
});

/**
 * Model management (Ollama's load/unload by an empty request, `/api/pull`, `/api/delete`, `/api/copy`), sent to
 * agents announcing `manage`. The agent answers with `progress` frames, then `managed` or an `error` with the id.
 * `cancel` with the id stops a pull.
 */
export const ManageOp = z.discriminatedUnion('action', [
  z.object({
    action: z.literal('load'),
    model: z.string().min(1).max(256),
    keepAliveMs: z.number().int().min(-1).optional(),
    keepAliveExtends: z.literal(true).optional(),
  }),
  z.object({ action: z.literal('unload'), model: z.string().min(1).max(256) }),
  /** `model`: what to fetch (a Hugging Face repo id, or a default model's name); `name`: the id to serve it as. */
  z.object({
    action: z.literal('pull'),
    model: z.string().min(1).max(256),
    name: z.string().min(1).max(256).optional(),
  }),
  z.object({ action: z.literal('delete'), model: z.string().min(1).max(256) }),
  z.object({ action: z.literal('copy'), source: z.string().min(1).max(256), destination: z.string().min(1).max(256) }),
]);
export type ManageOp = z.infer<typeof ManageOp>;

export const ManageFrame = z.object({
  type: z.literal('manage'),
  id: Id,
  op: ManageOp,
});
export type ManageFrame = z.infer<typeof ManageFrame>;

export const AgentFrame = z.discriminatedUnion('type', [
  HelloFrame,
  StatusFrame,
  ChunkFrame,
  EndFrame,
  EmbeddingsFrame,
  VectorFrame,
  ErrorFrame,
  PingFrame,
  PongFrame,
  ModelsFrame,
  ProgressFrame,
  ManagedFrame,
]);
export const EdgeFrame = z.discriminatedUnion('type', [
  WelcomeFrame,
  RequestFrame,
  CancelFrame,
  FlowFrame,
  ErrorFrame,
  PingFrame,
  PongFrame,
  ManageFrame,
]);

export type HelloFrame = z.infer<typeof HelloFrame>;
export type ChunkFrame = z.infer<typeof ChunkFrame>;
export type EndFrame = z.infer<typeof EndFrame>;
export type EmbeddingsFrame = z.infer<typeof EmbeddingsFrame>;
export type VectorFrame = z.infer<typeof VectorFrame>;
export type ErrorFrame = z.infer<typeof ErrorFrame>;
export type WelcomeFrame = z.infer<typeof WelcomeFrame>;
export type RequestFrame = z.infer<typeof RequestFrame>;
export type CancelFrame = z.infer<typeof CancelFrame>;
export type FlowFrame = z.infer<typeof FlowFrame>;
/** A frame the agent sends and the edge receives. */
export type AgentFrame = z.infer<typeof AgentFrame>;
/** A frame the edge sends and the agent receives. */
export type EdgeFrame = z.infer<typeof EdgeFrame>;

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

const Id = z.string().min(1).max(128);
const Count = z.number().int().nonnegative();

export const ModelKind = z.enum(['chat', 'embedding']);
export type ModelKind = z.infer<typeof ModelKind>;

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
});
export type ModelInfo = z.infer<typeof ModelInfo>;

export const DeviceInfo = z.object({
  name: z.string().min(1).max(64),
  description: z.string().max(256).optional(),
});
export type DeviceInfo = z.infer<typeof DeviceInfo>;

export const ChatMessage = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool']),
  content: z.string(),
});
export type ChatMessage = z.infer<typeof ChatMessage>;

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

export const ChatTask = z.object({
  task: z.literal('chat'),
  model: z.string().min(1),
  messages: z.array(ChatMessage).min(1),
  sampling: Sampling,
});
export type ChatTask = z.infer<typeof ChatTask>;

/** A raw completion: the prompt is used as is, without the chat template. */
export const CompleteTask = z.object({
  task: z.literal('complete'),
  model: z.string().min(1),
  prompt: z.string(),
  sampling: Sampling,
});
export type CompleteTask = z.infer<typeof CompleteTask>;

export const EmbedTask = z.object({
  task: z.literal('embed'),
  model: z.string().min(1),
  input: z.array(z.string()).min(1).max(2048),
});
export type EmbedTask = z.infer<typeof EmbedTask>;

/** Tasks that generate text. */
export type GenerateTask = ChatTask | CompleteTask;

export const Task = z.discriminatedUnion('task', [ChatTask, CompleteTask, EmbedTask]);
export type Task = z.infer<typeof Task>;

export const FinishReason = z.enum(['stop', 'length', 'cancelled']);
export type FinishReason = z.infer<typeof FinishReason>;

export const Usage = z.object({ promptTokens: Count, completionTokens: Count });
export type Usage = z.infer<typeof Usage>;

// --- agent → edge -------------------------------------------------------------------------------------------

/** What the agent can take: requests running plus requests waiting, beyond which the edge refuses new ones. */
export const Capacity = z.object({
  /** Requests that may run at once, over all devices. */
  concurrency: z.number().int().positive(),
  /** Requests that may wait in the agent's queue. */
  queueLimit: Count,
});
export type Capacity = z.infer<typeof Capacity>;

export const HelloFrame = z.object({
  type: z.literal('hello'),
  protocol: z.number().int().positive(),
  agentId: z.string().min(1).max(128),
  agentVersion: z.string().max(64),
  engine: z.string().min(1).max(64),
  models: z.array(ModelInfo).max(1024),
  devices: z.array(DeviceInfo).max(64),
  capacity: Capacity.optional(),
  /**
   * Random per agent process. The same instance reconnecting replaces its old connection; another instance with the
   * same `agentId` (a cloned machine) is refused while the first is alive. Absent from older agents.
   */
  instanceId: z.string().min(1).max(64).optional(),
});

/** Heartbeat with the agent's load, sent periodically and whenever it changes state (e.g. starts draining). */
export const StatusFrame = z.object({
  type: z.literal('status'),
  running: Count,
  queued: Count,
  capacity: Capacity,
  /** True once the agent is shutting down: it finishes what it has and takes nothing new. */
  draining: z.boolean(),
  devices: z
    .array(z.object({ name: z.string().max(64), running: Count, queued: Count, loadedModels: z.array(z.string().max(256)).max(1024) }))
    .max(64),
});
export type StatusFrame = z.infer<typeof StatusFrame>;

export const ChunkFrame = z.object({
  type: z.literal('chunk'),
  id: Id,
  text: z.string(),
  /** Tokens generated since the previous chunk (a chunk may hold several, or none while UTF-8 is incomplete). */
  tokens: Count,
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
  /**
   * Text generated since the last chunk, sent with the end rather than as a chunk of its own, and the tokens it
   * holds: one frame fewer per answer. Only to an edge whose welcome listed `end-text` (an older edge would drop it).
   */
  text: z.string().optional(),
  tokens: Count.optional(),
});

/** Terminal frame of an `embed` request: one vector per input, in input order. */
export const EmbeddingsFrame = z.object({
  type: z.literal('embeddings'),
  id: Id,
  data: z.array(z.array(z.number())).max(2048),
  usage: Usage,
  device: z.string().max(64),
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

export const RequestFrame = z.object({
  type: z.literal('request'),
  id: Id,
  body: Task,
  /** The API key's id, so the agent can share its queue fairly between keys. */
  keyId: z.string().max(128).optional(),
  /** How long the model should stay loaded after this request (Ollama's `keep_alive`); -1 for ever. */
  keepAliveMs: z.number().int().min(-1).optional(),
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

export const AgentFrame = z.discriminatedUnion('type', [HelloFrame, StatusFrame, ChunkFrame, EndFrame, EmbeddingsFrame, ErrorFrame, PingFrame, PongFrame]);
export const EdgeFrame = z.discriminatedUnion('type', [WelcomeFrame, RequestFrame, CancelFrame, FlowFrame, ErrorFrame, PingFrame, PongFrame]);

export type HelloFrame = z.infer<typeof HelloFrame>;
export type ChunkFrame = z.infer<typeof ChunkFrame>;
export type EndFrame = z.infer<typeof EndFrame>;
export type EmbeddingsFrame = z.infer<typeof EmbeddingsFrame>;
export type ErrorFrame = z.infer<typeof ErrorFrame>;
export type WelcomeFrame = z.infer<typeof WelcomeFrame>;
export type RequestFrame = z.infer<typeof RequestFrame>;
export type CancelFrame = z.infer<typeof CancelFrame>;
export type FlowFrame = z.infer<typeof FlowFrame>;
/** A frame the agent sends and the edge receives. */
export type AgentFrame = z.infer<typeof AgentFrame>;
/** A frame the edge sends and the agent receives. */
export type EdgeFrame = z.infer<typeof EdgeFrame>;

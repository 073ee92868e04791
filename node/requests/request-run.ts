/**
 * One request's run on the agent: it waits for a device slot (a count takes none), runs the task in the engine and
 * streams the result back as frames. Every request ends with exactly one terminal frame (`end`, `embeddings` or
 * `error`), also when it was cancelled, so the edge always learns how many tokens were produced.
 */
import type { RequestFrame, RerankTask } from '../../shared/protocol/frames.ts';
import type { EmbeddingResult, Engine } from '../engines/engine.ts';
import { AgentError, toErrorCode, UnknownModelError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { PreemptibleGeneration } from '../preemption.ts';
import type { Scheduler, Slot } from '../scheduler.ts';
import type { TunnelClient } from '../tunnel/client.ts';
import { ChunkBatch } from './chunk-batch.ts';
import type { Flow } from './flow.ts';

/** What one finished request did, as the agent's `onRequestDone` observes it (for metrics). */
export interface RequestRecord {
  model: string;
  device: string;
  /** `ok`, `cancelled`, or the error code the request failed with. */
  outcome: string;
  promptTokens: number;
  completionTokens: number;
  cachedPromptTokens?: number;
  ttftMs?: number;
  durationMs: number;
}

/** A request admitted and not yet finished: how the edge's `cancel` and `flow` frames reach its run. */
export interface RunningRequest {
  controller: AbortController;
  flow: Flow;
}

/** What a run uses of the agent that admitted it. */
export interface RequestRunContext {
  engine: Engine;
  scheduler: Scheduler;
  tunnel: TunnelClient;
  log: Logger;
  onRequestDone?: ((done: RequestRecord) => void) | undefined;
}

/** How long the agent waits for a first token before sending the prompt's count on a chunk of its own. */
const PROMPT_NOTICE_MS = 200;

function deviceOf(engine: Engine, model: string): string {
  return engine.models().find((m) => m.id === model)?.device ?? engine.devices[0]?.name ?? 'CPU';
}

/** A rerank's scores as its `embeddings` frame carries them: one `[score]` per document (shared/protocol). */
async function rerank(engine: Engine, task: RerankTask, signal: AbortSignal): Promise<EmbeddingResult> {
  if (!engine.rerank) throw new UnknownModelError(task.model, []);
  const { scores, ...rest } = await engine.rerank(task, signal);
  return { vectors: scores.map((s) => [s]), ...rest };
}

/**
 * Runs `frame` to its one terminal frame (a failure becomes an `error` frame, a cancellation an `end`) and reports
 * it to `onRequestDone`. Aborting `controller` cancels the run; `flow` pauses its stream.
 */
export async function runRequest(
  ctx: RequestRunContext,
  frame: RequestFrame,
  { controller, flow }: RunningRequest,
): Promise<void> {
  const { engine, scheduler, tunnel } = ctx;
  const { id, body } = frame;
  const signal = controller.signal;
  const device = deviceOf(engine, body.model);
  // requestId: what the client saw in X-Request-Id (its own, or the edge's); exchangeId: the tunnel's id, which is
  // also the request's usage row id at the edge.
  const log = ctx.log.child({
    requestId: frame.requestId ?? id,
    exchangeId: id,
    model: body.model,
    task: body.task,
    device,
  });
  const started = performance.now();
  let ttftMs: number | undefined;
  let promptTokens = 0;
  let completionTokens = 0;
  let cachedPromptTokens: number | undefined;
  let outcome: RequestRecord['outcome'] = 'ok';
  let release: ((tokens?: number) => void) | undefined;
  let queueMs: number | undefined;
  // The prompt's count rides on the first chunk; when that is slow to come (a long prefill) it goes on its own,
  // so the edge has it for the usage row even if this process dies before the first token.
  let promptNotice: { tokens: number; timer: ReturnType<typeof setTimeout> } | undefined;
  const takePromptNotice = () => {
    if (!promptNotice) return {};
    clearTimeout(promptNotice.timer);
    const promptTokens = promptNotice.tokens;
    promptNotice = undefined;
    return { promptTokens };
  };
  const batch = new ChunkBatch((parts) => tunnel.send({ type: 'chunk', id, ...parts, ...takePromptNotice() }));
  try {
    if (body.task === 'count') {
      // Tokenising takes no device slot: waiting in the queue behind whole generations would make a count slow.
      const counted = await engine.countTokens(body, signal);
      promptTokens = counted.promptTokens;
      const durationMs = performance.now() - started;
      tunnel.send({
        type: 'end',
        id,
        finishReason: 'stop',
        usage: { promptTokens, completionTokens: 0 },
        device: counted.device,
        durationMs,
      });
      log.info({ promptTokens, durationMs: Math.round(durationMs) }, 'prompt counted');
      return;
    }
    const ticket = { keyId: frame.keyId ?? 'anonymous', weight: frame.weight, priority: frame.priority };
    const queued = performance.now();
    const slot: Slot = await scheduler.acquire(device, ticket, signal);
    release = slot;
    queueMs = performance.now() - queued;
    if (body.task === 'embed' || body.task === 'rerank') {
      const result = body.task === 'embed' ? await engine.embed(body, signal) : await rerank(engine, body, signal);
      promptTokens = result.promptTokens;
      const durationMs = performance.now() - started;
      const load = result.loadDurationMs !== undefined ? { loadDurationMs: result.loadDurationMs } : {};
      tunnel.send({
        type: 'embeddings',
        id,
        data: result.vectors,
        usage: { promptTokens, completionTokens: 0 },
        device: result.device,
        durationMs,
        queueMs,
        ...load,
      });
      const inputs = body.task === 'embed' ? body.input.length : body.documents.length;
      log.info({ inputs, promptTokens, durationMs: Math.round(durationMs) }, 'request finished');
      return;
    }
    // A batch request gives its slot up to an interactive one that waits for it (preemption.ts).
    const preemptible = frame.priority === 'batch' ? new PreemptibleGeneration(engine, slot, signal) : undefined;
    if (preemptible) release = (tokens) => preemptible.release(tokens);
    const events = preemptible ? preemptible.events(body) : engine.generate(body, signal);
    for await (const event of events) {
      if (event.type === 'prompt') {
        promptTokens = event.promptTokens;
        const timer = setTimeout(
          () => tunnel.send({ type: 'chunk', id, text: '', tokens: 0, ...takePromptNotice() }),
          PROMPT_NOTICE_MS,
        );
        promptNotice = { tokens: event.promptTokens, timer };
      } else if (event.type === 'delta') {
        ttftMs ??= performance.now() - started;
        completionTokens += event.tokens;
        // A paused stream waits here; the engine's own backlog limit then pauses generation.
        await flow.ready(signal);
        batch.add(event);
        // A tunnel the edge is not draining fast enough pauses generation too, rather than queue without bound.
        const writable = tunnel.whenWritable(signal);
        if (writable) await writable;
      } else {
        // The last parts ride with the end when the edge takes them there: one frame fewer for every answer.
        let tail: ReturnType<ChunkBatch['take']>;
        if (tunnel.edgeFeatures.has('end-text')) tail = batch.take();
        else batch.flush();
        const durationMs = performance.now() - started;
        promptTokens = event.usage.promptTokens;
        completionTokens = event.usage.completionTokens;
        cachedPromptTokens = event.usage.cachedPromptTokens;
        if (event.finishReason === 'cancelled') outcome = 'cancelled';
        // Time it waited for its slot back after giving it up counts as queue time too.
        if (preemptible) queueMs = (queueMs ?? 0) + preemptible.waitedMs;
        const extra = {
          ...(event.loadDurationMs !== undefined ? { loadDurationMs: event.loadDurationMs } : {}),
          ...(event.context ? { context: event.context } : {}),
        };
        tunnel.send({
          type: 'end',
          id,
          finishReason: event.finishReason,
          usage: event.usage,
          device: event.device,
          durationMs,
          ...(queueMs !== undefined ? { queueMs } : {}),
          ...(ttftMs !== undefined ? { ttftMs } : {}),
          ...extra,
          ...tail,
        });
        log.info(
          {
            finishReason: event.finishReason,
            ...event.usage,
            ttftMs,
            durationMs: Math.round(durationMs),
            ...(preemptible?.preemptions ? { preemptions: preemptible.preemptions } : {}),
          },
          'request finished',
        );
      }
    }
  } catch (err) {
    batch.flush();
    const code = signal.aborted && !(err instanceof AgentError) ? 'cancelled' : toErrorCode(err);
    outcome = code;
    if (code === 'cancelled') {
      // Cancelled before or between tokens: still a normal end, with what was produced.
      tunnel.send({
        type: 'end',
        id,
        finishReason: 'cancelled',
        usage: { promptTokens, completionTokens },
        device,
        durationMs: performance.now() - started,
      });
    } else {
      const message = err instanceof AgentError ? err.message : `the agent failed: ${(err as Error).message}`;
      if (code === 'internal') log.error({ err }, 'unexpected failure');
      else log.warn({ code, err: (err as Error).message }, 'request failed');
      tunnel.send({ type: 'error', id, code, message, usage: { promptTokens, completionTokens } });
    }
  } finally {
    if (promptNotice) clearTimeout(promptNotice.timer);
    // Its key's share is charged what the device served it: the answer's tokens (an embedding's, its input's).
    release?.(body.task === 'embed' || body.task === 'rerank' ? promptTokens : completionTokens);
    if (frame.keepAliveMs !== undefined)
      engine.touch(body.model, frame.keepAliveMs === -1 ? Infinity : frame.keepAliveMs, frame.keepAliveExtends);
    const durationMs = performance.now() - started;
    ctx.onRequestDone?.({
      model: body.model,
      device,
      outcome,
      promptTokens,
      completionTokens,
      durationMs,
      ...(ttftMs !== undefined ? { ttftMs } : {}),
      ...(cachedPromptTokens !== undefined ? { cachedPromptTokens } : {}),
    });
  }
}

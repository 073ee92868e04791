/**
 * The semantic cache's lookup riding on a generation (RequestFrame.lookup): the agent embeds the question beside
 * the generation and sends its vector as soon as it has it, so the edge can search its index while the model is
 * still reading the prompt. It takes no device slot: one short text through a small embedding model is cheaper than
 * the queue it would otherwise wait in behind the very generation it runs beside (docs/DESIGN.md, "Semantic cache").
 */
import type { RequestFrame, VectorFrame } from '../shared/protocol/frames.ts';
import type { Engine } from './engines/engine.ts';
import type { Logger } from './log.ts';

/**
 * Embeds `frame.lookup` and sends exactly one `vector` frame for it: with the vector, or without when it could not
 * be computed (an unknown model, a failed load, the request cancelled first), so the edge stops waiting at once.
 */
export async function sendLookupVector(
  engine: Engine,
  frame: RequestFrame,
  signal: AbortSignal,
  send: (frame: VectorFrame) => void,
  log: Logger,
): Promise<void> {
  const lookup = frame.lookup;
  if (!lookup) return;
  const started = performance.now();
  let data: number[] | undefined;
  try {
    const result = await engine.embed({ task: 'embed', model: lookup.model, input: [lookup.text] }, signal);
    data = result.vectors[0];
  } catch (err) {
    log.debug({ exchangeId: frame.id, model: lookup.model, err: String(err) }, 'no lookup vector');
  }
  send({ type: 'vector', id: frame.id, ...(data ? { data } : {}), durationMs: performance.now() - started });
}

/**
 * The runtime validator both sides run on every frame they receive. It never throws anything but a
 * `FrameError`, whatever the input, so a hostile or buggy peer cannot crash the receiver.
 */
import type { z } from 'zod';
import { AgentFrame, EdgeFrame } from './frames.ts';
import { MAX_FRAME_CHARS } from './version.ts';

/** A frame that could not be decoded. `code` is always `bad_frame`; `message` says what was wrong. */
export class FrameError extends Error {
  readonly code = 'bad_frame' as const;
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

function decode<S extends z.ZodType>(schema: S, data: unknown, side: string): z.infer<S> {
  if (typeof data !== 'string') {
    throw new FrameError(`bad frame: ${side} frames are JSON text messages, got a binary message`);
  }
  if (data.length > MAX_FRAME_CHARS) {
    throw new FrameError(`bad frame: ${data.length} characters exceeds the ${MAX_FRAME_CHARS}-character frame limit`);
  }
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch (err) {
    throw new FrameError(`bad frame: not JSON (${(err as Error).message})`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length ? issue.path.join('.') : 'frame';
    const type =
      typeof json === 'object' && json !== null && 'type' in json
        ? ` (type ${JSON.stringify((json as { type: unknown }).type)})`
        : '';
    throw new FrameError(`bad frame${type}: ${where}: ${issue.message}`);
  }
  return parsed.data;
}

/** Decodes a message the edge received from an agent. */
export function decodeAgentFrame(data: unknown): AgentFrame {
  return decode(AgentFrame, data, 'agent');
}

/** Decodes a message the agent received from the edge. */
export function decodeEdgeFrame(data: unknown): EdgeFrame {
  return decode(EdgeFrame, data, 'edge');
}

/** Serialises a frame. Outgoing frames are built from typed values, so encoding does not re-validate. */
export function encodeFrame(frame: AgentFrame | EdgeFrame): string {
  return JSON.stringify(frame);
}

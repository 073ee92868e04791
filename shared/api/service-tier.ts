/**
 * OpenAI's `service_tier` request field, and the queue class it puts a request in: `flex` (OpenAI's cheaper,
 * slower tier for work that can wait) runs as `batch` — only when no interactive request waits — and every other
 * value as `interactive`. See docs/fair-shares.md.
 */
import * as z from 'zod';
import type { Priority } from '../protocol/frames.ts';

/** The values OpenAI's API documents; we serve `flex` as the batch class and the others alike. */
export const ServiceTier = z.enum(['auto', 'default', 'flex', 'scale', 'priority']).nullable().optional();

/** The queue class of a validated request body: `batch` for `service_tier: "flex"`, else `interactive`. */
export function priorityOf(body: unknown): Priority {
  const tier =
    typeof body === 'object' && body !== null ? (body as { service_tier?: unknown }).service_tier : undefined;
  return tier === 'flex' ? 'batch' : 'interactive';
}

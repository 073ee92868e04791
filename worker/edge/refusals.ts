/**
 * Requests refused in the Worker for a missing or unknown API key, counted in this isolate and handed to the hub
 * at most once a second as per-minute counters. A stranger's request thus costs no hub call, no storage write and
 * no libSQL row of its own, while the dashboard still shows how many there were (see `AgentHub.countRefusals`).
 */
import type { Env } from '../env.ts';
import type { ApiError } from '../http/errors.ts';
import type { RefusalCount } from '../tunnel/ledger.ts';
import { hub } from './context.ts';

const FLUSH_MS = 1000;

const pending = new Map<string, RefusalCount>();
let flushing: Promise<void> | undefined;

export function countRefusal(env: Env, ctx: ExecutionContext, endpoint: string, err: ApiError): void {
  const now = Date.now();
  const minute = now - (now % 60_000);
  const id = `${minute} ${endpoint} ${err.code} ${err.status}`;
  const c = pending.get(id);
  if (c) {
    c.n++;
    c.lastAt = now;
  } else {
    pending.set(id, { minute, endpoint, code: err.code, status: err.status, n: 1, lastAt: now });
  }
  if (flushing) return;
  flushing = (async () => {
    await new Promise((r) => setTimeout(r, FLUSH_MS));
    const counts = [...pending.values()];
    pending.clear();
    flushing = undefined;
    await hub(env).countRefusals(counts);
  })().catch((e: unknown) => console.error('could not hand refusal counts to the hub', e));
  // The isolate stays alive for the flush after the response has gone.
  ctx.waitUntil(flushing);
}

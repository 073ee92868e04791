/**
 * When the hub last heard from each agent connection, and when it last pinged it. Kept in memory: recording every
 * frame in the socket's attachment would cost a serialisation per token. After hibernation the map is empty and the
 * hub falls back on what survives (the automatic ping answers' timestamp, the last status), which is enough because
 * a hub with requests in flight is not evicted.
 */
import { AGENT_PING_MS, AGENT_SILENT_MS } from '../../shared/protocol/liveness.ts';
import { logWarn } from '../observability/log.ts';

/** A busy hub's tick this overdue (it runs every 250 ms) means the hub itself was stopped, not its agents silent. */
const HUB_FROZEN_MS = AGENT_PING_MS;

export class AgentLiveness {
  readonly #heard = new Map<string, number>();
  readonly #pinged = new Map<string, number>();
  /** When the hub last discarded a frame from a connection it had cut off (see `discarding`), or woke from a freeze. */
  #discardedAt = 0;
  /** When the hub's own tick last ran while agents had requests in flight (0: none in flight; see `ticked`). */
  #tickedAt = 0;

  /** Any frame is life: under load a ping queues behind the agent's tokens, so pings alone would arrive late. */
  heard(connId: string, now: number): void {
    this.#heard.set(connId, now);
  }

  /** When a frame last arrived on this connection since the hub woke (0: none). */
  lastHeard(connId: string): number {
    return this.#heard.get(connId) ?? 0;
  }

  /**
   * True when a connection with requests in flight is due a ping from the edge: the agent then hears from the edge
   * every AGENT_PING_MS even while its own pings' answers queue behind its tokens.
   */
  pingDue(connId: string, now: number): boolean {
    if (now - (this.#pinged.get(connId) ?? 0) < AGENT_PING_MS) return false;
    this.#pinged.set(connId, now);
    return true;
  }

  /**
   * The hub is working through frames a cut-off connection sent before it was cut off. Other agents' frames and
   * pings wait in the same queue behind those, so until the backlog is gone their silence proves nothing: nobody
   * is judged silent meanwhile, or one flooding connection would get every honest agent dropped.
   */
  discarding(now: number): void {
    this.#discardedAt = now;
  }

  /**
   * The hub's tick ran (every 250 ms while agents have requests in flight; `busy`: they still do). A hub that was not
   * running — its process stopped or the machine asleep — heard nothing from anyone meanwhile, though the agents'
   * frames wait in its sockets: silence is counted only from when it runs again (see `checkAwake`).
   */
  ticked(now: number, busy: boolean): void {
    this.checkAwake(now);
    this.#tickedAt = busy ? now : 0;
  }

  /**
   * Before judging anyone silent: a tick overdue by more than HUB_FROZEN_MS means the hub itself was not running
   * (it ticks every 250 ms while busy), so nobody is counted silent from before now. Checked on every look, because
   * after a freeze a request may ask who is alive before the overdue tick runs.
   */
  checkAwake(now: number): void {
    if (this.#tickedAt !== 0 && now - this.#tickedAt > HUB_FROZEN_MS) {
      logWarn(
        "the hub did not run for a while (its process stopped, or the machine slept); counting agents' silence from now",
        {
          pausedMs: now - this.#tickedAt,
        },
      );
      this.#discardedAt = now;
      this.#tickedAt = now;
    }
  }

  /** The earliest time silence may be counted from: a connection is never "silent" since before the hub caught up. */
  get caughtUpAt(): number {
    return this.#discardedAt;
  }

  forget(connId: string): void {
    this.#heard.delete(connId);
    this.#pinged.delete(connId);
  }
}

/**
 * Agents from before instanceId ping every 15 s; for them the old bound of three missed pings holds, so that
 * upgrading the edge first does not drop every idle older agent.
 */
const LEGACY_SILENT_MS = 45_000;

/** True when an agent last seen at `lastSeen` has been silent too long to be trusted with requests. */
export function isSilent(lastSeen: number, now: number, hello: { instanceId?: string | undefined }): boolean {
  return now - lastSeen > (hello.instanceId !== undefined ? AGENT_SILENT_MS : LEGACY_SILENT_MS);
}

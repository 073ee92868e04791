/**
 * What one agent connection may cost the hub in frames that do it no good: frames that fail validation, and frames
 * about requests the hub does not have on that connection. A working agent sends a few of those (a stream still
 * running when its request timed out sends tokens until the cancel lands); a broken or hostile peer sends them
 * without end, and each costs a parse and, without this, an answer. A token bucket per connection allows bursts of
 * BURST and PER_SECOND after that; a connection that spends it all is cut off.
 */
export const BAD_FRAME_BURST = 1_000;
export const BAD_FRAMES_PER_SECOND = 100;
const BURST = BAD_FRAME_BURST;
const PER_SECOND = BAD_FRAMES_PER_SECOND;
/** Unknown ids already sent a cancel, per connection: one cancel per id is enough, the agent answers each. */
const CANCELLED_REMEMBERED = 1_024;

interface Account {
  tokens: number;
  at: number;
  cancelled: Set<string>;
  cutOff: boolean;
}

export class FrameBudget {
  readonly #accounts = new Map<string, Account>();

  #account(connId: string, now: number): Account {
    let a = this.#accounts.get(connId);
    if (!a) this.#accounts.set(connId, (a = { tokens: BURST, at: now, cancelled: new Set(), cutOff: false }));
    return a;
  }

  /** Charges one useless frame; false once the connection has used up its budget. */
  charge(connId: string, now: number): boolean {
    const a = this.#account(connId, now);
    a.tokens = Math.min(BURST, a.tokens + ((now - a.at) * PER_SECOND) / 1000);
    a.at = now;
    a.tokens -= 1;
    return a.tokens >= 0;
  }

  /** True the first time this unknown request id is seen on the connection (it gets a cancel; repeats do not). */
  firstSighting(connId: string, id: string, now: number): boolean {
    const { cancelled } = this.#account(connId, now);
    if (cancelled.has(id)) return false;
    if (cancelled.size >= CANCELLED_REMEMBERED) cancelled.delete(cancelled.values().next().value!);
    cancelled.add(id);
    return true;
  }

  cutOff(connId: string, now: number): void {
    this.#account(connId, now).cutOff = true;
  }

  /** True once the connection was cut off: whatever it still sends is dropped unread. */
  isCutOff(connId: string): boolean {
    return this.#accounts.get(connId)?.cutOff ?? false;
  }

  forget(connId: string): void {
    this.#accounts.delete(connId);
  }
}

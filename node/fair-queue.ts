/**
 * Weighted fair queuing over API keys for one device and one priority class, measured in tokens served rather than
 * requests: each key has a virtual time, the tokens it has been served divided by its weight, and the waiting key
 * with the least goes next (first-in first-out within a key). A key of weight 3 is thus served three tokens for
 * every one of a key of weight 1 while both wait, however long their requests are.
 *
 * A request's tokens are known only once it ends, so it is charged an estimate when it starts (the device's recent
 * average, so two slots of one device do not both go to the same key before either has been charged) and corrected
 * when it ends. A key that was idle joins at the queue's virtual time (where the last request to start stood,
 * which no waiting key is behind), so time spent idle is not saved up as credit to starve others with later, and it
 * goes next unless a key is further behind; a key served more than its share keeps that debt until the queue's
 * virtual time catches up.
 */

export interface FairWaiter {
  keyId: string;
  /** The key's share relative to other keys' (1 when not set); at least a small positive number. */
  weight: number;
  start: () => void;
}

interface Flow {
  weight: number;
  /** Tokens served divided by weight: who is furthest behind its share goes next. */
  vtime: number;
  waiting: FairWaiter[];
  running: number;
  /** Arrival order of the flow's first waiter, to break ties between equal virtual times in arrival order. */
  since: number;
}

/** What a request is charged when it starts, until the device has served one (tokens). */
const FIRST_ESTIMATE = 64;
/** Weight of the newest request in the device's running average of tokens per request. */
const AVERAGE_WEIGHT = 0.2;
const MIN_WEIGHT = 1e-3;

export class FairQueue {
  readonly #flows = new Map<string, Flow>();
  #waiting = 0;
  #arrivals = 0;
  /** Waiters put ahead of the rest (pushFront), oldest first. */
  readonly #first: FairWaiter[] = [];
  #average = FIRST_ESTIMATE;
  /** The virtual time the last request to start had: no waiting key is behind it. */
  #now = 0;

  get waiting(): number {
    return this.#waiting;
  }

  /** Waiting requests per key, for status pages and tests. */
  waitingByKey(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [key, flow] of this.#flows) if (flow.waiting.length > 0) out.set(key, flow.waiting.length);
    return out;
  }

  push(waiter: FairWaiter): void {
    this.#enter(waiter).waiting.push(waiter);
    this.#waiting++;
  }

  /**
   * Puts a waiter ahead of every other in this queue, whatever its key's virtual time: a request that gave its slot
   * up for a more urgent one (a preempted batch request) gets it back before anything new starts. In order among such.
   */
  pushFront(waiter: FairWaiter): void {
    this.#enter(waiter).waiting.unshift(waiter);
    this.#first.push(waiter);
    this.#waiting++;
  }

  #enter(waiter: FairWaiter): Flow {
    let flow = this.#flows.get(waiter.keyId);
    const weight = Math.max(MIN_WEIGHT, waiter.weight);
    if (!flow) {
      flow = { weight, vtime: this.#now, waiting: [], running: 0, since: 0 };
      this.#flows.set(waiter.keyId, flow);
    } else if (flow.waiting.length === 0 && flow.running === 0) {
      flow.vtime = Math.max(flow.vtime, this.#now);
    }
    // The newest weight wins: a key whose weight was changed takes it from its next request on.
    flow.weight = weight;
    if (flow.waiting.length === 0) flow.since = this.#arrivals++;
    return flow;
  }

  /** Removes a waiter that gave up; false when it was not waiting (it had started). */
  remove(waiter: FairWaiter): boolean {
    const flow = this.#flows.get(waiter.keyId);
    const at = flow?.waiting.indexOf(waiter) ?? -1;
    if (at === -1) return false;
    flow!.waiting.splice(at, 1);
    const first = this.#first.indexOf(waiter);
    if (first !== -1) this.#first.splice(first, 1);
    this.#waiting--;
    this.#forgetIfIdle(waiter.keyId, flow!);
    return true;
  }

  /**
   * Takes the next waiter (the waiting key furthest behind its share) and charges it the estimate; returns it with
   * the function that settles its charge once its tokens are known. Undefined when none waits.
   */
  next(): { waiter: FairWaiter; settle: (tokens: number | undefined) => void } | undefined {
    let best: [string, Flow] | undefined;
    const first = this.#first.shift();
    if (first) {
      const flow = this.#flows.get(first.keyId)!;
      flow.waiting.splice(flow.waiting.indexOf(first), 1);
      flow.waiting.unshift(first);
      best = [first.keyId, flow];
    }
    for (const entry of best ? [] : this.#flows) {
      const flow = entry[1];
      if (flow.waiting.length === 0) continue;
      if (!best || flow.vtime < best[1].vtime || (flow.vtime === best[1].vtime && flow.since < best[1].since))
        best = entry;
    }
    if (!best) return undefined;
    const [keyId, flow] = best;
    const waiter = flow.waiting.shift()!;
    this.#waiting--;
    if (flow.waiting.length > 0) flow.since = this.#arrivals++;
    flow.running++;
    this.#now = Math.max(this.#now, flow.vtime);
    const estimate = this.#average;
    flow.vtime += estimate / flow.weight;
    let settled = false;
    // Undefined tokens (a request that failed before it was counted): the estimate stands.
    const settle = (tokens: number | undefined) => {
      if (settled) return;
      settled = true;
      if (tokens !== undefined) {
        const served = Math.max(1, tokens);
        flow.vtime += (served - estimate) / flow.weight;
        this.#average += AVERAGE_WEIGHT * (served - this.#average);
      }
      flow.running--;
      this.#forgetIfIdle(keyId, flow);
    };
    return { waiter, settle };
  }

  /**
   * An idle key at or behind the queue's virtual time would rejoin there anyway: it is forgotten, so the map holds
   * only keys that are busy or still paying off a debt. When nothing is busy, the queue starts afresh.
   */
  #forgetIfIdle(keyId: string, flow: Flow): void {
    if (flow.waiting.length > 0 || flow.running > 0) return;
    if (flow.vtime <= this.#now) this.#flows.delete(keyId);
    for (const f of this.#flows.values()) if (f.waiting.length > 0 || f.running > 0) return;
    this.#flows.clear();
    this.#now = 0;
  }
}

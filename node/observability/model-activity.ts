/**
 * What the engine's model events add up to, for people: one log line per load, failure and unload, and the state
 * `/health/devices` shows (which model is loaded on which device, and the latest failures).
 */
import type { Logger } from '../log.ts';
import type { ModelEvent } from '../models/pool.ts';

/** Failures kept for `/health/devices`. */
const KEPT_ERRORS = 20;

export interface LoadedModelStatus {
  id: string;
  device: string | undefined;
  bytes: number;
  loadedAt: string;
}

export interface ErrorStatus {
  at: string;
  model?: string | undefined;
  message: string;
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

export class ModelActivity {
  readonly #log: Logger;
  readonly #loaded = new Map<string, LoadedModelStatus>();
  readonly #errors: ErrorStatus[] = [];

  constructor(log: Logger) {
    this.#log = log;
  }

  record(event: ModelEvent): void {
    const log = this.#log.child({ model: event.model });
    switch (event.type) {
      case 'load-start':
        log.debug({ device: event.device, estimatedBytes: event.estimatedBytes }, `loading model '${event.model}'`);
        break;
      case 'load-end': {
        const ms = Math.round(event.durationMs);
        this.#loaded.set(event.model, {
          id: event.model,
          device: event.device,
          bytes: event.bytes,
          loadedAt: new Date().toISOString(),
        });
        log.info(
          { device: event.device, loadMs: ms, bytes: event.bytes },
          `loaded model '${event.model}' on ${event.device ?? 'an unknown device'} in ${ms} ms (${mib(event.bytes)})`,
        );
        break;
      }
      case 'load-failed':
        this.#error(event.model, event.error.message);
        log.warn(
          { device: event.device, loadMs: Math.round(event.durationMs), err: event.error.message },
          `could not load model '${event.model}'`,
        );
        break;
      case 'unload':
        this.#loaded.delete(event.model);
        if (event.error) {
          this.#error(event.model, `unloading failed: ${event.error.message}`);
          log.warn(
            { device: event.device, reason: event.reason, err: event.error.message },
            `unloading model '${event.model}' failed`,
          );
        } else {
          log.info(
            { device: event.device, reason: event.reason, bytes: event.bytes },
            `unloaded model '${event.model}' (${event.reason})`,
          );
        }
        break;
      case 'waiting-for-memory':
        log.info(
          {
            neededBytes: event.neededBytes,
            usedBytes: event.usedBytes,
            budgetBytes: event.budgetBytes,
            inUse: event.inUse,
          },
          `model '${event.model}' waits for memory: it needs ${mib(event.neededBytes)}, ${mib(event.usedBytes)} of ${mib(event.budgetBytes)} are held by models in use (${event.inUse.join(', ')})`,
        );
        break;
    }
  }

  /** Models loaded now. */
  loaded(): LoadedModelStatus[] {
    return [...this.#loaded.values()];
  }

  /** The latest failures, newest last. */
  lastErrors(): ErrorStatus[] {
    return [...this.#errors];
  }

  #error(model: string, message: string): void {
    this.#errors.push({ at: new Date().toISOString(), model, message });
    if (this.#errors.length > KEPT_ERRORS) this.#errors.shift();
  }
}

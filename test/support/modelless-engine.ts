/**
 * The model lifecycle of a test engine that holds no model in memory (scripted, raw-text, flood and instant
 * engines): nothing to load ahead, keep alive or report. Each extends this instead of repeating it.
 */
import type { LoadedModel, LoadProgress } from '../../shared/protocol/frames.ts';

export abstract class ModellessEngine {
  async preload(_id: string): Promise<void> {}
  touch(_id: string, _keepAliveMs?: number, _extendOnly?: boolean): boolean {
    return false;
  }
  loaded(): LoadedModel[] {
    return [];
  }
  loading(): LoadProgress[] {
    return [];
  }
  async close(): Promise<void> {}
}

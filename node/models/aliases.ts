/**
 * Model aliases: other names for the models an agent serves (`{"llama3": "Llama-3.2-1B-Instruct"}`), so clients can
 * ask for a short or familiar name. They are read from `aliases.json` in the models folder, or from the file that
 * `NPU_RELAY_ALIASES` names, and checked at start-up: an alias that points to no served model stops the agent.
 * `AliasedEngine` wraps any engine, so every engine gets aliases the same way.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as z from 'zod';
import type {
  CountTask,
  EmbedTask,
  RerankTask,
  GenerateTask,
  LoadedModel,
  LoadProgress,
  ModelInfo,
} from '../../shared/protocol/frames.ts';
import { ConfigError } from '../config.ts';
import { UnknownModelError } from '../errors.ts';
import type {
  EmbeddingResult,
  Engine,
  GenerationEvent,
  GenerationHold,
  PromptCount,
  RerankScores,
} from '../engines/engine.ts';
import type { CatalogEntry } from './catalog.ts';

/** Model ids are folder names; an alias follows the same rules, so it can never be confused with a path. */
export const ModelName = z
  .string()
  .min(1)
  .max(256)
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._:-]*$/,
    'a name starts with a letter or digit and holds only letters, digits and . _ : -',
  );

export const AliasesFile = z.record(ModelName, ModelName);

export interface Aliases {
  /** The file they came from, for messages; undefined when there is none. */
  file: string | undefined;
  /** alias → model id */
  map: ReadonlyMap<string, string>;
}

/**
 * Reads the aliases: `file` when given (it must exist), else `<modelsDir>/aliases.json` when present, else none.
 */
export async function loadAliases(modelsDir: string, file?: string): Promise<Aliases> {
  const target = file ? path.resolve(file) : path.join(modelsDir, 'aliases.json');
  let text: string;
  try {
    text = await readFile(target, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !file) return { file: undefined, map: new Map() };
    throw new ConfigError(
      `cannot read the model aliases file ${target} (NPU_RELAY_ALIASES / --aliases): ${(err as Error).message}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`the model aliases file ${target} is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = AliasesFile.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues
      .map((i) => `${i.path.length ? `'${i.path.join('.')}'` : 'the file'}: ${i.message}`)
      .join('; ');
    throw new ConfigError(
      `the model aliases file ${target} must be a JSON object of "alias": "model id" pairs; ${issues}`,
    );
  }
  return { file: target, map: new Map(Object.entries(parsed.data)) };
}

/** The file aliases are written to: the one configured, else `aliases.json` in the models folder. */
export function aliasesPath(modelsDir: string, file?: string): string {
  return file ? path.resolve(file) : path.join(modelsDir, 'aliases.json');
}

/** Writes the aliases file whole (to a temporary file first, so a reader never sees half of it). */
export async function saveAliases(target: string, map: ReadonlyMap<string, string>): Promise<void> {
  const temporary = `${target}.${process.pid}.tmp`;
  await writeFile(
    temporary,
    `${JSON.stringify(Object.fromEntries([...map].sort(([a], [b]) => (a < b ? -1 : 1))), null, 2)}\n`,
  );
  await rename(temporary, target);
}

/** An engine that also answers to aliases: it lists them as models of their own and runs them as their target. */
export class AliasedEngine implements Engine {
  readonly #inner: Engine;
  #aliases: ReadonlyMap<string, string>;

  /** Throws a `ConfigError` naming the alias and its target when the target is not one of the engine's models. */
  constructor(inner: Engine, aliases: Aliases) {
    AliasedEngine.#check(inner, aliases);
    this.#inner = inner;
    this.#aliases = aliases.map;
  }

  static #check(inner: Engine, aliases: Aliases): void {
    const served = new Set(inner.models().map((m) => m.id));
    for (const [alias, target] of aliases.map) {
      if (served.has(alias))
        throw new ConfigError(
          `alias '${alias}' in ${aliases.file} is also the id of a model in the models folder; remove the alias or rename it`,
        );
      if (!served.has(target)) {
        const why = aliases.map.has(target)
          ? `'${target}' is itself an alias (point aliases at model ids)`
          : `'${target}' is not a model this agent serves (it has: ${[...served].join(', ') || 'none'})`;
        throw new ConfigError(`alias '${alias}' in ${aliases.file} points to model '${target}', but ${why}`);
      }
    }
  }

  /** The aliases now served, alias → model id. */
  get aliases(): ReadonlyMap<string, string> {
    return this.#aliases;
  }

  /** Serves another set of aliases (checked as at start-up: a `ConfigError` leaves the current ones in place). */
  setAliases(aliases: Aliases): void {
    AliasedEngine.#check(this.#inner, aliases);
    this.#aliases = aliases.map;
  }

  /** Serves a rescanned models folder; aliases whose model is gone are dropped. */
  async updateCatalog(entries: readonly CatalogEntry[]): Promise<void> {
    if (!this.#inner.updateCatalog)
      throw new ConfigError(`the ${this.name} engine cannot change its models while running; restart the agent`);
    await this.#inner.updateCatalog(entries);
    const served = new Set(this.#inner.models().map((m) => m.id));
    const dropped = [...this.#aliases].filter(([, target]) => !served.has(target)).map(([alias]) => alias);
    if (dropped.length) this.#aliases = new Map([...this.#aliases].filter(([alias]) => !dropped.includes(alias)));
  }

  get name(): string {
    return this.#inner.name;
  }

  get devices(): Engine['devices'] {
    return this.#inner.devices;
  }

  /** The model id an alias stands for; any other id unchanged. */
  resolve(id: string): string {
    return this.#aliases.get(id) ?? id;
  }

  models(): readonly ModelInfo[] {
    const models = this.#inner.models();
    const byId = new Map(models.map((m) => [m.id, m]));
    const aliased = [...this.#aliases].flatMap(([alias, target]) => {
      const model = byId.get(target);
      return model ? [{ ...model, id: alias }] : [];
    });
    return [...models, ...aliased];
  }

  get pausesBetweenTokens(): boolean | undefined {
    return this.#inner.pausesBetweenTokens;
  }

  generate(task: GenerateTask, signal: AbortSignal, hold?: GenerationHold): AsyncIterable<GenerationEvent> {
    return this.#inner.generate({ ...task, model: this.resolve(task.model) }, signal, hold);
  }

  countTokens(task: CountTask, signal: AbortSignal): Promise<PromptCount> {
    return this.#inner.countTokens({ ...task, model: this.resolve(task.model) }, signal);
  }

  embed(task: EmbedTask, signal: AbortSignal): Promise<EmbeddingResult> {
    return this.#inner.embed({ ...task, model: this.resolve(task.model) }, signal);
  }

  rerank(task: RerankTask, signal: AbortSignal): Promise<RerankScores> {
    const model = this.resolve(task.model);
    if (!this.#inner.rerank) return Promise.reject(new UnknownModelError(task.model, []));
    return this.#inner.rerank({ ...task, model }, signal);
  }

  /** Loads a model (or an alias's model) ahead of its first request. */
  preload(id: string): Promise<void> {
    return this.#inner.preload(this.resolve(id));
  }

  /** Unloads a model (or an alias's model) now; false when it was not loaded. */
  async unload(id: string): Promise<boolean> {
    return (await this.#inner.unload?.(this.resolve(id))) ?? false;
  }

  /** Extends a loaded model's keep-alive (a request's `keep_alive`). */
  touch(id: string, keepAliveMs?: number, extendOnly?: boolean): boolean {
    return this.#inner.touch(this.resolve(id), keepAliveMs, extendOnly);
  }

  loaded(): LoadedModel[] {
    return this.#inner.loaded();
  }

  loading(): LoadProgress[] {
    return this.#inner.loading();
  }

  onLoadedChange(listener: () => void): void {
    this.#inner.onLoadedChange?.(listener);
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}

/**
 * Model management on the agent, as the edge asks for it with `manage` frames (Ollama's load and unload by an empty
 * request, `/api/pull`, `/api/delete`, `/api/copy`): each operation answers with `progress` frames, then `managed`
 * or an `error` with its id. The manager also keeps the engine's models in step with the models folder: after a
 * pull, delete or copy, and whenever the folder changes on disk, it rescans the folder, hands the new catalog to the
 * engine and reports the whole new list (a `models` frame), so no restart is needed.
 */
import { watch, type FSWatcher } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { AgentFrame, ManageFrame, ManageOp, ModelInfo, ProgressFrame } from '../../shared/protocol/frames.ts';
import { AgentError, toErrorCode } from '../errors.ts';
import type { Logger } from '../log.ts';
import { type AliasedEngine, aliasesPath, loadAliases, ModelName, saveAliases } from './aliases.ts';
import { scanModels } from './catalog.ts';
import { DEFAULT_MODELS } from './defaults.ts';
import { modelFolderName, PullError, pullModel, type HubFile } from './pull.ts';

/** Changes on disk come in bursts (a pull renames a folder, an editor writes a file twice): one rescan per burst. */
const RESCAN_DEBOUNCE_MS = 300;
/** A large file's progress is reported at most this often: every report is a frame the edge must handle. */
const PROGRESS_INTERVAL_MS = 250;

export interface ModelManagerOptions {
  engine: AliasedEngine;
  modelsDir: string;
  /** The aliases file the agent was started with (`--aliases`); `<models>/aliases.json` otherwise. */
  aliasesFile?: string | undefined;
  /** The model hub pulls come from (`HF_ENDPOINT`) and its token (`HF_TOKEN`). */
  hub: { endpoint: string; token?: string | undefined };
  log: Logger;
}

type Send = (frame: AgentFrame) => void;

export class ModelManager {
  readonly #engine: AliasedEngine;
  readonly #modelsDir: string;
  readonly #aliasesFile: string | undefined;
  readonly #hub: ModelManagerOptions['hub'];
  readonly #log: Logger;
  /** Operations under way, by the edge's id, so a `cancel` can stop a pull. */
  readonly #running = new Map<string, AbortController>();
  readonly #listeners: Array<(models: ModelInfo[]) => void> = [];
  #announced: string;
  #watcher: FSWatcher | undefined;
  #closed = false;
  #debounce: NodeJS.Timeout | undefined;
  /** Rescans run one after another, so the engine never sees an older catalog after a newer one. */
  #rescans: Promise<void> = Promise.resolve();

  constructor(options: ModelManagerOptions) {
    this.#engine = options.engine;
    this.#modelsDir = options.modelsDir;
    this.#aliasesFile = options.aliasesFile;
    this.#hub = options.hub;
    this.#log = options.log;
    this.#announced = JSON.stringify(this.#engine.models());
  }

  /** Called with the whole model list whenever it changes. */
  onModelsChanged(listener: (models: ModelInfo[]) => void): void {
    this.#listeners.push(listener);
  }

  /**
   * Watches the models folder. A folder that does not exist yet is not created here (a first `npm start` reads a
   * missing folder as "nobody set this machine up"); it is watched from the first pull that creates it.
   */
  async watch(): Promise<void> {
    if (this.#watcher || this.#closed) return;
    try {
      // Recursive: an edit inside a model folder (a config, a template, new weights) must change its digest and what
      // is served, not only a folder added or removed. A pull's staging folder changes with every chunk written;
      // the rename that ends the pull is seen at the top.
      this.#watcher = watch(this.#modelsDir, { persistent: false, recursive: true }, (_event, file) => {
        if (file && (file === '.pull' || file.startsWith(`.pull${path.sep}`))) return;
        clearTimeout(this.#debounce);
        this.#debounce = setTimeout(
          () =>
            void this.rescan().catch((err: Error) =>
              this.#log.warn({ err: err.message }, 'rescanning the models folder failed'),
            ),
          RESCAN_DEBOUNCE_MS,
        );
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    this.#watcher.on('error', (err) =>
      this.#log.warn({ err: err.message, dir: this.#modelsDir }, 'stopped watching the models folder'),
    );
  }

  close(): void {
    this.#closed = true;
    this.#watcher?.close();
    clearTimeout(this.#debounce);
    for (const controller of this.#running.values()) controller.abort('agent stopping');
  }

  /** Stops an operation (a pull); it still ends with its terminal frame. */
  cancel(id: string, reason = 'cancelled by the edge'): void {
    this.#running.get(id)?.abort(reason);
  }

  /** Stops every operation: the edge has already failed them (the tunnel dropped). */
  cancelAll(reason: string): void {
    for (const controller of this.#running.values()) controller.abort(reason);
  }

  /** Runs one operation, answering through `send`; never throws. */
  handle(frame: ManageFrame, send: Send): void {
    if (this.#running.has(frame.id)) {
      send({ type: 'error', id: frame.id, code: 'bad_frame', message: `operation id ${frame.id} is already running` });
      return;
    }
    const controller = new AbortController();
    this.#running.set(frame.id, controller);
    const log = this.#log.child({ operation: frame.id, action: frame.op.action });
    void this.#run(frame, controller.signal, send)
      .then(
        (managed) => {
          send({ type: 'managed', id: frame.id, ...managed });
          log.info({ op: frame.op, ...managed }, 'model operation finished');
        },
        (err: unknown) => {
          const code = controller.signal.aborted && !(err instanceof AgentError) ? 'cancelled' : toErrorCode(err);
          const message =
            code === 'cancelled'
              ? `${frame.op.action} stopped: ${String(controller.signal.reason)}`
              : err instanceof Error
                ? err.message
                : String(err);
          if (code === 'internal') log.error({ err }, 'model operation failed unexpectedly');
          else log.warn({ code, err: message }, 'model operation failed');
          send({ type: 'error', id: frame.id, code, message });
        },
      )
      .finally(() => this.#running.delete(frame.id));
  }

  async #run(
    frame: ManageFrame,
    signal: AbortSignal,
    send: Send,
  ): Promise<{ loadDurationMs?: number; wasLoaded?: boolean }> {
    const { op, id } = frame;
    switch (op.action) {
      case 'load':
        return { loadDurationMs: await this.#load(op.model, op.keepAliveMs, op.keepAliveExtends) };
      case 'unload':
        this.#served(op.model);
        return { wasLoaded: await this.#engine.unload(op.model) };
      case 'pull':
        await this.#pull(op, signal, (progress) => send({ type: 'progress', id, ...progress }));
        return {};
      case 'delete':
        await this.#delete(op.model);
        return {};
      case 'copy':
        await this.#copy(op.source, op.destination);
        return {};
    }
  }

  #served(id: string): ModelInfo {
    const models = this.#engine.models();
    const model = models.find((m) => m.id === id);
    if (!model)
      throw new AgentError(
        'unknown_model',
        `model '${id}' is not served by this agent (it has: ${models.map((m) => m.id).join(', ') || 'none'})`,
      );
    return model;
  }

  /** Loads the model; the milliseconds it took, 0 when it was loaded already. */
  async #load(id: string, keepAliveMs: number | undefined, extendOnly: boolean | undefined): Promise<number> {
    this.#served(id);
    const keep = keepAliveMs === undefined ? undefined : keepAliveMs === -1 ? Infinity : keepAliveMs;
    // A touch finds a loaded model (and resets its idle time), so a second load costs nothing; one still loading is
    // waited for below, so the answer always comes once the model is ready.
    const wasLoaded = this.#engine.touch(id, keep, extendOnly);
    const started = performance.now();
    await this.#engine.preload(id);
    const ms = performance.now() - started;
    if (keep !== undefined) this.#engine.touch(id, keep, extendOnly);
    return wasLoaded ? 0 : ms;
  }

  async #pull(
    op: Extract<ManageOp, { action: 'pull' }>,
    signal: AbortSignal,
    progress: (p: Omit<ProgressFrame, 'type' | 'id'>) => void,
  ): Promise<void> {
    const { repo, revision } = this.#source(op.model);
    const name = op.name ?? modelFolderName(repo);
    if (!ModelName.safeParse(name).success)
      throw new AgentError(
        'invalid_request',
        `'${name}' cannot be a model id: it starts with a letter or digit and holds only letters, digits and . _ : -`,
      );
    if (this.#engine.aliases.has(name))
      throw new AgentError(
        'invalid_request',
        `'${name}' is already an alias on this agent; delete it first or pull under another name`,
      );
    progress({ status: 'pulling manifest' });
    const files = new Map<string, HubFile>();
    let last = 0;
    let trailing: NodeJS.Timeout | undefined;
    const send = (file: string, completed: number, total: number) => {
      last = performance.now();
      const sha = files.get(file)?.sha256;
      progress({ status: `pulling ${file}`, ...(sha ? { digest: `sha256:${sha}` } : {}), total, completed });
    };
    // Throttled, but the latest count always goes out: a transfer that stalls still shows how far it got.
    const report = (file: string, completed: number, total: number, force: boolean) => {
      clearTimeout(trailing);
      trailing = undefined;
      const wait = PROGRESS_INTERVAL_MS - (performance.now() - last);
      if (force || wait <= 0) send(file, completed, total);
      else trailing = setTimeout(() => send(file, completed, total), wait);
    };
    let upToDate = false;
    try {
      ({ upToDate } = await pullModel({
        endpoint: this.#hub.endpoint,
        repo,
        revision,
        modelsDir: this.#modelsDir,
        name,
        signal,
        ...(this.#hub.token ? { token: this.#hub.token } : {}),
        onEvent: (e) => {
          if (e.type === 'resolved') for (const f of e.files) files.set(f.path, f);
          else if (e.type === 'file-start') report(e.path, e.offset, e.size, true);
          else if (e.type === 'file-progress') report(e.path, e.received, e.size, false);
          else report(e.path, e.size, e.size, true);
        },
      }));
    } catch (err) {
      clearTimeout(trailing);
      if (signal.aborted) throw err;
      if (!(err instanceof PullError)) throw err;
      const status = err.hubStatus;
      const code =
        err.code === 'bad_repo_id'
          ? 'invalid_request'
          : status === 401 || status === 403 || status === 404
            ? 'unknown_model'
            : 'engine_error';
      throw new AgentError(code, err.message, { cause: err });
    }
    // Every file was checked against the hub's hashes as it arrived.
    progress({ status: 'verifying sha256 digest' });
    progress({ status: 'writing manifest' });
    // New files under the same name: the copy in memory is the old model.
    if (!upToDate) await this.#engine.unload(name);
    await this.rescan();
    if (!this.#engine.models().some((m) => m.id === name)) {
      throw new AgentError(
        'engine_error',
        `pulled ${repo} into ${path.join(this.#modelsDir, name)}, but the ${this.#engine.name} engine cannot serve it (no weights in a format it runs, or a config it cannot classify)`,
      );
    }
  }

  /** `owner/name[:revision]` (`:latest` is the default branch), or the short name of a default model. */
  #source(model: string): { repo: string; revision: string } {
    const at = model.lastIndexOf(':');
    const base = at > 0 ? model.slice(0, at) : model;
    const tag = at > 0 ? model.slice(at + 1) : 'latest';
    const revision = tag === 'latest' ? 'main' : tag;
    if (base.includes('/')) return { repo: base, revision };
    const defaults = this.#engine.name === 'openvino' ? DEFAULT_MODELS.openvino : DEFAULT_MODELS.onnx;
    const known = defaults.find((r) => modelFolderName(r) === base);
    if (known) return { repo: known, revision };
    throw new AgentError(
      'invalid_request',
      `'${model}' is not a Hugging Face repo id; pull owner/name (e.g. ${defaults[0]}), or the short name of a default model (${defaults.map(modelFolderName).join(', ')})`,
    );
  }

  async #delete(id: string): Promise<void> {
    const aliases = this.#engine.aliases;
    if (aliases.has(id)) {
      await this.#saveAliases(new Map([...aliases].filter(([alias]) => alias !== id)));
      await this.rescan();
      return;
    }
    // Only a model the catalog found, by the folder name it found it under: a name cannot reach outside the folder.
    const entry = (await scanModels(this.#modelsDir)).entries.find((e) => e.id === id);
    const dir = path.resolve(this.#modelsDir, id);
    if (
      !entry ||
      !ModelName.safeParse(id).success ||
      path.dirname(dir) !== path.resolve(this.#modelsDir) ||
      path.resolve(entry.dir) !== dir
    ) {
      throw new AgentError('unknown_model', `model '${id}' is not in this agent's models folder`);
    }
    await this.#engine.unload(id);
    await rm(dir, { recursive: true, force: true });
    const pointing = [...aliases].filter(([, target]) => target === id);
    if (pointing.length) await this.#saveAliases(new Map([...aliases].filter(([, target]) => target !== id)));
    await this.rescan();
  }

  async #copy(source: string, destination: string): Promise<void> {
    const target = this.#engine.resolve(this.#served(source).id);
    if (!ModelName.safeParse(destination).success) {
      throw new AgentError(
        'invalid_request',
        `'${destination}' cannot be a model name: it starts with a letter or digit and holds only letters, digits and . _ : -`,
      );
    }
    if (this.#engine.models().some((m) => m.id === destination && !this.#engine.aliases.has(destination))) {
      throw new AgentError(
        'invalid_request',
        `'${destination}' is a model in the models folder; delete it first or copy to another name`,
      );
    }
    await this.#saveAliases(new Map([...this.#engine.aliases, [destination, target]]));
    await this.rescan();
  }

  async #saveAliases(map: ReadonlyMap<string, string>): Promise<void> {
    await saveAliases(aliasesPath(this.#modelsDir, this.#aliasesFile), map);
  }

  /**
   * Reads the models folder and the aliases again, serves what is there now and, when the list changed, tells the
   * listeners. Rescans run one at a time.
   */
  rescan(): Promise<void> {
    const next = this.#rescans.then(() => this.#rescan());
    this.#rescans = next.catch(() => {});
    return next;
  }

  async #rescan(): Promise<void> {
    await this.watch();
    const catalog = await scanModels(this.#modelsDir);
    for (const s of catalog.skipped) this.#log.warn({ dir: s.dir }, `skipped a model folder: ${s.reason}`);
    await this.#engine.updateCatalog(catalog.entries);
    const aliases = await loadAliases(this.#modelsDir, this.#aliasesFile);
    const served = new Set(
      this.#engine
        .models()
        .filter((m) => !this.#engine.aliases.has(m.id))
        .map((m) => m.id),
    );
    // An alias file edited by hand may point at a model that is not there (yet): serve the rest of it.
    const usable = new Map([...aliases.map].filter(([alias, target]) => served.has(target) && !served.has(alias)));
    this.#engine.setAliases({ file: aliases.file, map: usable });
    const models = [...this.#engine.models()];
    const json = JSON.stringify(models);
    if (json === this.#announced) return;
    this.#announced = json;
    this.#log.info({ models: models.map((m) => m.id) }, 'the models changed');
    for (const listener of this.#listeners) listener(models);
  }
}

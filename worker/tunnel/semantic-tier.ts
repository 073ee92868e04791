/**
 * The cache's second tier: a request the exact cache missed may be answered by the cached answer to a question the
 * embedding model finds similar enough. The agent computes (an embed request over the tunnel, sent before the
 * generation so it runs first), the hub decides (libSQL's vector index, then the exact-cache entry it points at).
 * The generation is not held back: RequestFlow sends it right after the lookup's embed request and cancels it when
 * the lookup finds a verified hit (docs/DESIGN.md, "Semantic cache").
 */
import { isSemanticCandidate, semanticSettings, semanticText } from '../../shared/cache/semantic.ts';
import type { EmbedTask, Task } from '../../shared/protocol/frames.ts';
import { FORMATS } from '../dialects/formats.ts';
import type { CachedAnswer } from '../dialects/core/replay.ts';
import type { EdgeConfig } from '../config.ts';
import { pickAgent } from './agent-picker.ts';
import { type AgentRegistry, sendFrame } from './agent-registry.ts';
import type { AnswerCache } from './answer-cache.ts';
import { Exchange, type Settlement } from './exchange.ts';
import type { ExchangeTable } from './exchange-table.ts';
import type { KeyRecord } from './ledger.ts';
import { RERANK_VERDICT, rerankRelevance } from './rerank-verdict.ts';
import type { SemanticIndex, SemanticScope } from './semantic-index.ts';

export interface SemanticHit {
  answer: CachedAnswer;
  score: number;
}

/** One request's semantic lookup, started before its generation. */
export interface SemanticLookup {
  /** The verified hit, or undefined (a miss); never rejects. */
  readonly hit: Promise<SemanticHit | undefined>;
  /** After a miss is answered: files the question under the exact-cache entry now holding its answer. */
  file(cacheKey: string): Promise<void>;
}

export interface SemanticTierDeps {
  registry: AgentRegistry;
  exchanges: ExchangeTable;
  cache: AnswerCache;
  index: SemanticIndex;
  config: () => EdgeConfig;
}

export class SemanticTier {
  readonly #d: SemanticTierDeps;

  constructor(deps: SemanticTierDeps) {
    this.#d = deps;
  }

  /**
   * Starts the lookup of a request whose exact-cache entry would be allowed (the caller checked the key, no-cache
   * and the cache key), when the key opted in and the task is a candidate; undefined otherwise.
   */
  begin(key: KeyRecord, task: Task): SemanticLookup | undefined {
    const semantic = key.semantic;
    if (!semantic || !isSemanticCandidate(task)) return undefined;
    const embedModel = this.#embedModelFor(key, semantic.model);
    if (!embedModel) return undefined;
    const vector = this.#embed(embedModel, semanticText(task), key.id);
    const scope = semanticSettings(task).then(
      (settings): SemanticScope => ({ tenant: key.tenant, model: task.model, embedModel, settings }),
    );
    const hit = (async () => {
      const v = await vector;
      if (!v) return undefined;
      const match = await this.#d.index.nearest(await scope, v, semantic.threshold);
      if (!match) return undefined;
      // Verified: the entry it points at still holds an answer (it may have expired or been swept since).
      const answer = await this.#d.cache.lookup(match.cacheKey);
      if (!answer) return undefined;
      // A key with a reranker: its cross-encoder must also find the cached answer relevant to this question.
      if (semantic.reranker && !(await this.#relevant(semantic.reranker, semanticText(task), answer, key.id)))
        return undefined;
      return { answer, score: match.score };
    })().catch(() => undefined);
    return {
      hit,
      file: async (cacheKey) => {
        const v = await vector;
        if (v) await this.#d.index.add(await scope, v, cacheKey, Date.now() + this.#d.config().cacheTtlMs);
      },
    };
  }

  /**
   * The lookup's outcome, waiting at most 1 s (EdgeConfig.semanticWaitMs): a lookup slower than that (an agent busy with
   * something else) is a miss, so a miss never waits longer for it.
   */
  async settle(lookup: SemanticLookup): Promise<SemanticHit | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(resolve, this.#d.config().semanticWaitMs, undefined);
    });
    try {
      return await Promise.race([lookup.hit, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Whether the cross-encoder `model` judges `answer` relevant to `question` (rerank-verdict.ts). */
  async #relevant(model: string, question: string, answer: CachedAnswer, keyId: string): Promise<boolean> {
    const text = answer.chunks.map((c) => c.text ?? '').join('');
    const relevance = await rerankRelevance(this.#d, model, question, text, keyId);
    return relevance !== undefined && relevance >= RERANK_VERDICT;
  }

  /** The key's model, else NPU_RELAY_SEMANTIC_EMBED_MODEL, else the first embedding model the key may use. */
  #embedModelFor(key: KeyRecord, named: string | null): string | undefined {
    const allowed = (id: string) => key.models === null || key.models.includes(id);
    const wanted = named ?? this.#d.config().semanticEmbedModel;
    if (wanted) return allowed(wanted) ? wanted : undefined;
    for (const agent of this.#d.registry.list())
      for (const m of agent.hello.models) if (m.kind === 'embedding' && allowed(m.id)) return m.id;
    return undefined;
  }

  /**
   * The text's vector from an agent serving `model`: an embed request of the edge's own, not the client's (no
   * usage row, no tokens charged to the key). Undefined when no agent can take it or it fails.
   */
  #embed(model: string, text: string, keyId: string): Promise<number[] | undefined> {
    const task: EmbedTask = { task: 'embed', model, input: [text] };
    const d = this.#d;
    let picked: ReturnType<typeof pickAgent>;
    try {
      picked = pickAgent(d.registry.list(), task, 'openai', d.exchanges, () => undefined);
    } catch {
      return Promise.resolve(undefined);
    }
    const id = crypto.randomUUID();
    const settled = Promise.withResolvers<Settlement>();
    const exchange = new Exchange({
      id,
      connId: picked.connId,
      agentId: picked.agentId,
      format: FORMATS['openai.embeddings'],
      meta: { id, model, created: 0, includeUsage: false },
      stream: false,
      headers: {},
      onClientGone: (ex) => {
        const ws = d.registry.socketOf(ex.connId);
        if (ws) sendFrame(ws, { type: 'cancel', id: ex.id, reason: 'semantic lookup abandoned' });
      },
      onSettled: (s) => settled.resolve(s),
    });
    d.exchanges.add(exchange, model);
    sendFrame(picked.ws, { type: 'request', id, body: task, keyId });
    return settled.promise.then((s) => (s.outcome === 'ok' ? s.embeddings?.[0] : undefined));
  }
}

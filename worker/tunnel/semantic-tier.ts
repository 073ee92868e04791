/**
 * The cache's second tier: a request the exact cache missed may be answered by the cached answer to a question the
 * embedding model finds similar enough. The agent computes (the question's vector, embedded beside the generation:
 * lookup-vectors.ts), the hub decides (libSQL's vector index, then the exact-cache entry it points at). A miss does
 * not wait for the lookup: the generation starts with it, and its first token is held only while the lookup is
 * still running, and never longer than a few percent of the time that token took (docs/DESIGN.md, "Semantic cache").
 */
import { isSemanticCandidate, semanticSettings, semanticText } from '../../shared/cache/semantic.ts';
import type { RequestFrame, Task } from '../../shared/protocol/frames.ts';
import type { CachedAnswer } from '../dialects/core/replay.ts';
import type { EdgeConfig } from '../config.ts';
import type { AgentRegistry, ConnectedAgent } from './agent-registry.ts';
import type { AnswerCache } from './answer-cache.ts';
import type { KeyRecord } from './ledger.ts';
import type { ExchangeTable } from './exchange-table.ts';
import type { LookupVectors } from './lookup-vectors.ts';
import { RERANK_VERDICT, rerankRelevance } from './rerank-verdict.ts';
import type { SemanticIndex, SemanticScope } from './semantic-index.ts';
import type { SemanticOdds } from './semantic-odds.ts';

export interface SemanticHit {
  answer: CachedAnswer;
  score: number;
}

/** One request's semantic lookup, begun before its generation is sent. */
export interface SemanticLookup {
  /** The request's model, and whether its response streams: what its first output's time is learnt for. */
  readonly model: string;
  readonly stream: boolean;
  /**
   * Where the question's vector comes from, once the generation's agent is known (`undefined`: none yet, the request
   * waits for one): riding on the generation's request when that agent can embed it — the field to put on the
   * request frame is returned — else an embed request of the edge's own to an agent that can (undefined returned).
   */
  attach(id: string, agent: ConnectedAgent | undefined): RequestFrame['lookup'];
  /** The verified hit, or undefined (a miss); never rejects. */
  readonly hit: Promise<SemanticHit | undefined>;
  /** After a miss is answered: files the question under the exact-cache entry now holding its answer. */
  file(cacheKey: string): Promise<void>;
}

/** What the response's wait for the lookup watches of the generation running meanwhile (exchange.ts). */
export interface RunningGeneration {
  /** When the request began at the hub (ms since the epoch): the first token's time is measured from here. */
  startedAt: number;
  /** Resolves when the client's first piece of the answer is ready: a stream's first token, else the whole answer. */
  firstOutput: Promise<void>;
  /** Resolves when the generation has ended: its own answer then stands, a later hit would be of no use. */
  ended: Promise<void>;
}

export interface SemanticTierDeps {
  registry: AgentRegistry;
  /** For the reranker's verdict, an exchange of the edge's own (rerank-verdict.ts). */
  exchanges: ExchangeTable;
  cache: AnswerCache;
  index: SemanticIndex;
  vectors: LookupVectors;
  odds: SemanticOdds;
  config: () => EdgeConfig;
}

export class SemanticTier {
  readonly #d: SemanticTierDeps;

  constructor(deps: SemanticTierDeps) {
    this.#d = deps;
  }

  /**
   * Begins the lookup of a request whose exact-cache entry would be allowed (the caller checked the key, no-cache
   * and the cache key), when the key opted in and the task is a candidate; undefined otherwise. A lookup that cannot
   * win against the model's first output (semantic-odds.ts) is not raced: it only files the question afterwards.
   */
  begin(key: KeyRecord, task: Task, stream: boolean): SemanticLookup | undefined {
    const semantic = key.semantic;
    if (!semantic || !isSemanticCandidate(task)) return undefined;
    const embedModel = this.#embedModelFor(key, semantic.model);
    if (!embedModel) return undefined;
    const d = this.#d;
    const raced = d.odds.worthRacing(task.model, stream, embedModel);
    const text = semanticText(task);
    const vector = Promise.withResolvers<number[] | undefined>();
    /** The vector of a lookup that is not raced and cannot ride: asked for only when the answer is filed. */
    let later: (() => Promise<number[] | undefined>) | undefined;
    let sent = 0;
    const scope = semanticSettings(task).then(
      (settings): SemanticScope => ({ tenant: key.tenant, model: task.model, embedModel, settings }),
    );
    const hit = raced
      ? (async () => {
          const v = await vector.promise;
          const found = v ? await this.#verified(await scope, v, semantic, text, key.id) : undefined;
          d.odds.lookup(embedModel, Date.now() - sent);
          return found;
        })().catch(() => undefined)
      : Promise.resolve(undefined);
    return {
      model: task.model,
      stream,
      attach: (id, agent) => {
        sent = Date.now();
        if (agent && d.vectors.canRide(agent, embedModel)) {
          vector.resolve(d.vectors.expect(id, agent.connId));
          return { model: embedModel, text, ...(raced ? {} : { after: true as const }) };
        }
        if (raced) vector.resolve(d.vectors.embed(embedModel, text, key.id));
        else later = () => d.vectors.embed(embedModel, text, key.id);
        return undefined;
      },
      hit,
      file: async (cacheKey) => {
        if (later) vector.resolve(later());
        const v = await vector.promise;
        if (v) await d.index.add(await scope, v, cacheKey, Date.now() + d.config().cacheTtlMs);
      },
    };
  }

  /**
   * The nearest cached question in scope that reaches the threshold, verified: the exact-cache entry it points at
   * still holds an answer (it may have expired or been swept since), and, for a key with a reranker, its
   * cross-encoder finds that answer relevant to this question.
   */
  async #verified(
    scope: SemanticScope,
    vector: number[],
    semantic: NonNullable<KeyRecord['semantic']>,
    question: string,
    keyId: string,
  ): Promise<SemanticHit | undefined> {
    const match = await this.#d.index.nearest(scope, vector, semantic.threshold);
    if (!match) return undefined;
    const answer = await this.#d.cache.lookup(match.cacheKey);
    if (!answer) return undefined;
    if (semantic.reranker && !(await this.#relevant(semantic.reranker, question, answer, keyId))) return undefined;
    return { answer, score: match.score };
  }

  /** Whether the cross-encoder `model` judges `answer` relevant to `question` (rerank-verdict.ts). */
  async #relevant(model: string, question: string, answer: CachedAnswer, keyId: string): Promise<boolean> {
    const text = answer.chunks.map((c) => c.text ?? '').join('');
    const relevance = await rerankRelevance(this.#d, model, question, text, keyId);
    return relevance !== undefined && relevance >= RERANK_VERDICT;
  }

  /**
   * The lookup's outcome, or a miss once waiting longer would cost the client: when the generation's first output is
   * ready it waits at most EdgeConfig.semanticHoldPercent of the time that output took (a miss's time to first token
   * grows by at most that share), and never longer than EdgeConfig.semanticWaitMs in all (a model still loading).
   */
  async settle(lookup: SemanticLookup, generation: RunningGeneration): Promise<SemanticHit | undefined> {
    const { semanticHoldPercent, semanticWaitMs } = this.#d.config();
    const timers: Array<ReturnType<typeof setTimeout>> = [];
    let over = false;
    const after = (ms: number) =>
      new Promise<undefined>((resolve) => {
        if (over) resolve(undefined);
        else timers.push(setTimeout(resolve, Math.max(0, ms), undefined));
      });
    const held = generation.firstOutput.then(() =>
      after(((Date.now() - generation.startedAt) * semanticHoldPercent) / 100),
    );
    const ended = generation.ended.then(() => undefined);
    try {
      const hit = await Promise.race([lookup.hit, held, ended, after(semanticWaitMs)]);
      // A miss's generation runs on: its first output's time is the model's (a hit's was cut short).
      if (!hit)
        void generation.firstOutput.then(() =>
          this.#d.odds.firstOutput(lookup.model, lookup.stream, Date.now() - generation.startedAt),
        );
      return hit;
    } finally {
      over = true;
      for (const t of timers) clearTimeout(t);
    }
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
}

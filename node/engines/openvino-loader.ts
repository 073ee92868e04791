/**
 * Loading an OpenVINO model: its tokenizer files checked, its pipeline (LLM, embedding or rerank) compiled on the
 * first device that takes it (devices.ts), a chat model's tokenizer given a template when it ships none.
 */
import { access } from 'node:fs/promises';
import path from 'node:path';
import type * as GenAI from 'openvino-genai-node';
import { AgentError, EngineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { CatalogEntry } from '../models/catalog.ts';
import { PLAIN_CHAT_TEMPLATE } from '../models/chat-template.ts';
import { type DeviceChoice, selectDevice } from './devices.ts';
import { type GenAiSpelling, genaiSpellingOf } from './genai-vocabulary.ts';
import {
  buildEmbedder,
  buildReranker,
  ChatPipeline,
  type EmbeddingPipeline,
  type EmbeddingPipelineConstructor,
  Held,
  type LLMPipeline,
  llmProperties,
  type PipelineSettings,
  type RerankPipeline,
  TurnQueue,
} from './openvino-pipelines.ts';
import type { Loaded } from './pooled-engine.ts';

/** A loaded OpenVINO model: its pipeline, tokenizer, device, and the queue of calls it runs one at a time. */
export interface OpenVinoModel<P extends object = ChatPipeline | EmbeddingPipeline | RerankPipeline> {
  pipeline: Held<P>;
  tokenizer: GenAI.Tokenizer;
  device: string;
  turns: TurnQueue;
  /** How constraint literals are spelled for GenAI's grammar engine with this model's tokenizer. */
  spelling?: GenAiSpelling;
  /** Rerank models: the tokenizer encodes (query, document) pairs, as the pipeline's own does. */
  pairs?: boolean;
}

/** What loading needs from the engine: the packages, the devices and the pipelines' settings. */
export interface LoaderContext {
  genai: typeof GenAI;
  EmbeddingPipeline: EmbeddingPipelineConstructor;
  available: readonly string[];
  choice: DeviceChoice | undefined;
  settings: PipelineSettings;
  log: Logger;
}

function isLLM(pipeline: unknown): pipeline is LLMPipeline {
  return typeof (pipeline as LLMPipeline).getTokenizer === 'function';
}

/** Loads (compiles) `entry`; `onDevice` names each device tried. Errors other than the agent's own say which model. */
export async function loadOpenVinoModel(
  context: LoaderContext,
  entry: CatalogEntry,
  onDevice: (device: string) => void,
): Promise<Loaded<OpenVinoModel<ChatPipeline> | OpenVinoModel<EmbeddingPipeline> | OpenVinoModel<RerankPipeline>>> {
  const { genai, settings } = context;
  try {
    for (const file of ['openvino_tokenizer.xml', 'openvino_detokenizer.xml'].slice(0, entry.kind === 'chat' ? 2 : 1)) {
      await access(path.join(entry.dir, file)).catch(() => {
        throw new EngineError(
          `model '${entry.id}' has no ${file} in ${entry.dir}: export it with \`optimum-cli export openvino\`, which converts the tokenizer too`,
        );
      });
    }
    const compile = (d: string) => {
      onDevice(d);
      if (entry.kind === 'chat') return genai.LLMPipeline(entry.dir, d, llmProperties(d, settings));
      if (entry.kind === 'rerank') return buildReranker(genai, entry, d, settings);
      return buildEmbedder(context.EmbeddingPipeline, entry, d, settings);
    };
    const { device, compiled } = await selectDevice<LLMPipeline | EmbeddingPipeline | RerankPipeline>({
      available: context.available,
      choice: context.choice,
      what: `model '${entry.id}'`,
      compile,
      log: context.log,
    });
    const handle = { device, turns: new TurnQueue() };
    if (!isLLM(compiled)) {
      // The tokenizer counts prompt tokens; an embedding or rerank pipeline does not expose its own. The entry's kind
      // decided which pipeline this is.
      // A reranker's pipeline encodes pairs with a second tokenizer input, which GenAI adds to every tokenizer but
      // Qwen3's (text_rerank_pipeline.cpp); its prompt tokens are counted the same way.
      const pairs = entry.kind === 'rerank' && entry.family !== 'qwen3';
      const tokenizer = new genai.Tokenizer(entry.dir, pairs ? { add_second_input: true } : {});
      const model = { ...handle, pipeline: new Held(compiled), tokenizer, pairs };
      return { handle: model as OpenVinoModel<EmbeddingPipeline> | OpenVinoModel<RerankPipeline>, device };
    }
    const tokenizer = compiled.getTokenizer();
    // A model that ships no chat template chats in the plain layout it gets on ONNX Runtime (models/chat-template.ts);
    // GenAI refuses a ChatHistory without one. The pipeline shares this tokenizer, so it uses the template too.
    if (!tokenizer.getChatTemplate()) tokenizer.setChatTemplate(PLAIN_CHAT_TEMPLATE);
    return {
      handle: {
        ...handle,
        pipeline: new Held(new ChatPipeline(compiled), compiled),
        tokenizer,
        spelling: genaiSpellingOf(entry.dir),
      },
      device,
    };
  } catch (err) {
    throw err instanceof AgentError
      ? err
      : new EngineError(`could not load model '${entry.id}' from ${entry.dir}: ${(err as Error).message}`, {
          cause: err,
        });
  }
}

/** Every response format the edge can produce, by name; the name travels from the Worker to the Durable Object. */
import { anthropicCountTokens, anthropicMessages } from './anthropic/writer.ts';
import type { ResponseFormat } from './core/format.ts';
import { ollamaChat, ollamaEmbed, ollamaEmbeddings, ollamaGenerate } from './ollama/writer.ts';
import { openaiChat, openaiCompletion } from './openai-chat/writer.ts';
import { openaiEmbeddings } from './openai-chat/embeddings-writer.ts';
import { openaiResponses } from './openai-responses/writer.ts';

export const FORMATS = {
  'openai.chat': openaiChat,
  'openai.completion': openaiCompletion,
  'openai.embeddings': openaiEmbeddings,
  'openai.responses': openaiResponses,
  'ollama.chat': ollamaChat,
  'ollama.generate': ollamaGenerate,
  'ollama.embed': ollamaEmbed,
  'ollama.embeddings': ollamaEmbeddings,
  'anthropic.messages': anthropicMessages,
  'anthropic.count_tokens': anthropicCountTokens,
} satisfies Record<string, ResponseFormat>;

export type FormatName = keyof typeof FORMATS;

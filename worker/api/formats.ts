/** Every response format the edge can produce, by name; the name travels from the Worker to the Durable Object. */
import { anthropicCountTokens, anthropicMessages } from './anthropic/messages.ts';
import type { ResponseFormat } from './format.ts';
import { ollamaChat, ollamaEmbed, ollamaEmbeddings, ollamaGenerate } from './ollama.ts';
import { openaiChat, openaiCompletion } from './openai-chat.ts';
import { openaiEmbeddings } from './openai-embeddings.ts';
import { openaiResponses } from './openai-responses/response.ts';
import { rerank } from './rerank.ts';

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
  rerank,
} satisfies Record<string, ResponseFormat>;

export type FormatName = keyof typeof FORMATS;

/** Every response format the edge can produce, by name; the name travels from the Worker to the Durable Object. */
import type { ResponseFormat } from './format.ts';
import { openaiChat } from './openai-chat.ts';

export const FORMATS = {
  'openai.chat': openaiChat,
} satisfies Record<string, ResponseFormat>;

export type FormatName = keyof typeof FORMATS;

/**
 * Where a chat model's template comes from. transformers.js reads only `chat_template` in tokenizer_config.json,
 * but newer Hugging Face exports keep the template in `chat_template.jinja` (or, from processors, in
 * `chat_template.json`), and some small or base models have none at all. An Ollama user expects such a model to
 * answer chat requests anyway, so those get a plain "role: content" layout, and the agent says so when it starts.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';

/** Used when a model ships no template: one `role: content` line per message, then `assistant:` to answer. */
export const PLAIN_CHAT_TEMPLATE =
  "{% if bos_token %}{{ bos_token }}{% endif %}{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}";

export type ChatTemplateSource = 'tokenizer_config.json' | 'chat_template.jinja' | 'chat_template.json' | 'plain';

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * The template for the model in `dir`. `template` is undefined when the tokenizer's own (from tokenizer_config.json)
 * applies; otherwise it is the text to pass to `apply_chat_template`.
 */
export async function findChatTemplate(dir: string): Promise<{ source: ChatTemplateSource; template?: string }> {
  const config = await readOptional(path.join(dir, 'tokenizer_config.json'));
  if (config !== undefined) {
    try {
      if ((JSON.parse(config) as { chat_template?: unknown }).chat_template) return { source: 'tokenizer_config.json' };
    } catch {
      // an unreadable tokenizer config is the tokenizer loader's error to report, with its own message
    }
  }
  const jinja = await readOptional(path.join(dir, 'chat_template.jinja'));
  if (jinja?.trim()) return { source: 'chat_template.jinja', template: jinja };
  const json = await readOptional(path.join(dir, 'chat_template.json'));
  if (json !== undefined) {
    try {
      const template = (JSON.parse(json) as { chat_template?: unknown }).chat_template;
      if (typeof template === 'string' && template.trim()) return { source: 'chat_template.json', template };
    } catch {
      // not the processor format we know: fall through to the plain layout rather than refuse to serve
    }
  }
  return { source: 'plain', template: PLAIN_CHAT_TEMPLATE };
}

/** `chat_template` in tokenizer_config.json: one template, or a list of named ones (`default`, `tool_use`, …). */
function templatesIn(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) {
    return value.flatMap((t) =>
      t && typeof t === 'object' && typeof (t as { template?: unknown }).template === 'string'
        ? [(t as { template: string }).template]
        : [],
    );
  }
  return [];
}

function unescapeXml(text: string): string {
  return text.replace(/&(lt|gt|quot|apos|amp|#\d+|#x[0-9a-fA-F]+);/g, (_, e: string) => {
    if (e === 'lt') return '<';
    if (e === 'gt') return '>';
    if (e === 'quot') return '"';
    if (e === 'apos') return "'";
    if (e === 'amp') return '&';
    return String.fromCodePoint(e[1] === 'x' ? Number.parseInt(e.slice(2), 16) : Number.parseInt(e.slice(1), 10));
  });
}

/**
 * The text of every chat template the model in `dir` ships, joined (a tokenizer config may hold several named ones,
 * e.g. `default` and `tool_use`), to read the model's output traits from (node/output/traits.ts); undefined when it
 * ships none. OpenVINO IR keeps its template in openvino_tokenizer.xml's runtime info, which is read last.
 */
export async function chatTemplateText(dir: string): Promise<string | undefined> {
  const found = await findChatTemplate(dir);
  if (found.source !== 'plain') {
    if (found.template !== undefined) return found.template;
    const config = JSON.parse((await readOptional(path.join(dir, 'tokenizer_config.json'))) ?? '{}') as {
      chat_template?: unknown;
    };
    return templatesIn(config.chat_template).join('\n') || undefined;
  }
  const ir = await readOptional(path.join(dir, 'openvino_tokenizer.xml'));
  const value = ir && /<chat_template\s+value="([^"]*)"/.exec(ir)?.[1];
  return value ? unescapeXml(value) : undefined;
}

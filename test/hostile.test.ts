/**
 * A corpus of malformed and hostile requests against every inference endpoint: none may produce a 5xx or hang,
 * and every error must come in the caller's API shape. Property-based cases (fast-check) run on top.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { CHAT_MODEL, EMBED_MODEL } from './support/fixtures.ts';
import { relayStack } from './support/stack.ts';

interface Case {
  path: string;
  body: string;
  contentType?: string;
  what: string;
}

const chat = { model: CHAT_MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, temperature: 0 };
const ollamaChat = {
  model: CHAT_MODEL,
  messages: [{ role: 'user', content: 'hi' }],
  stream: false,
  options: { num_predict: 2, temperature: 0 },
};
const responses = {
  model: CHAT_MODEL,
  input: 'hi',
  instructions: 'Be brief.',
  max_output_tokens: 2,
  temperature: 0,
  store: false,
  metadata: {},
  text: { format: { type: 'text' } },
  reasoning: {},
  background: false,
};
const BASES: Record<string, Record<string, unknown>> = {
  '/v1/responses': responses,
  '/v1/chat/completions': chat,
  '/v1/completions': { model: CHAT_MODEL, prompt: 'hi', max_tokens: 2, temperature: 0 },
  '/v1/embeddings': { model: EMBED_MODEL, input: 'hi' },
  '/api/chat': ollamaChat,
  '/api/generate': { model: CHAT_MODEL, prompt: 'hi', stream: false, options: { num_predict: 2, temperature: 0 } },
  '/api/embed': { model: EMBED_MODEL, input: 'hi' },
  '/api/embeddings': { model: EMBED_MODEL, prompt: 'hi' },
  '/api/show': { model: CHAT_MODEL },
  '/v1/messages': { model: CHAT_MODEL, max_tokens: 2, temperature: 0, messages: [{ role: 'user', content: 'hi' }] },
  '/v1/messages/count_tokens': { model: CHAT_MODEL, messages: [{ role: 'user', content: 'hi' }] },
};

/** Anthropic's Messages API: whole bodies with one thing wrong, each a 400 in Anthropic's shape. */
const messages = BASES['/v1/messages']!;
const TOOL = { name: 'get_weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } };
const ANTHROPIC_CASES: Array<[string, Record<string, unknown>, string]> = [
  ['/v1/messages', { ...messages, max_tokens: undefined }, 'no max_tokens'],
  ['/v1/messages', { ...messages, temperature: 1.5 }, 'temperature above 1'],
  ['/v1/messages', { ...messages, top_k: -1 }, 'a negative top_k'],
  ['/v1/messages', { ...messages, stop_sequences: 'END' }, 'stop_sequences as a string'],
  ['/v1/messages', { ...messages, stop_sequences: [''] }, 'an empty stop sequence'],
  ['/v1/messages', { ...messages, system: 5 }, 'a numeric system'],
  ['/v1/messages', { ...messages, system: [{ type: 'image', source: {} }] }, 'an image in system'],
  ['/v1/messages', { ...messages, messages: [{ role: 'system', content: 'x' }] }, 'a system role in messages'],
  ['/v1/messages', { ...messages, messages: [{ role: 'user', content: [] }] }, 'empty content blocks'],
  [
    '/v1/messages',
    { ...messages, messages: [{ role: 'user', content: [{ type: 'text' }] }] },
    'a text block without text',
  ],
  ['/v1/messages', { ...messages, messages: [{ role: 'user', content: [{ text: 'x' }] }] }, 'a block without a type'],
  ['/v1/messages', { ...messages, messages: [{ role: 'user', content: [null] }] }, 'a null block'],
  [
    '/v1/messages',
    {
      ...messages,
      messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'url', url: 'https://x/y.png' } }] }],
    },
    'an image block',
  ],
  [
    '/v1/messages',
    { ...messages, messages: [{ role: 'user', content: [{ type: 'document', source: { type: 'text', data: 'x' } }] }] },
    'a document block',
  ],
  [
    '/v1/messages',
    {
      ...messages,
      messages: [{ role: 'user', content: [{ type: 'search_result', source: 'x', title: 't', content: [] }] }],
    },
    'a search_result block',
  ],
  [
    '/v1/messages',
    { ...messages, messages: [{ role: 'user', content: [{ type: 'tool_use', id: 'toolu_1', name: 'f', input: {} }] }] },
    'tool_use in a user turn',
  ],
  [
    '/v1/messages',
    {
      ...messages,
      messages: [
        { role: 'user', content: 'x' },
        { role: 'assistant', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'r' }] },
        { role: 'user', content: 'y' },
      ],
    },
    'tool_result in an assistant turn',
  ],
  [
    '/v1/messages',
    { ...messages, messages: [{ role: 'user', content: [{ type: 'tool_result', content: 'r' }] }] },
    'a tool_result without tool_use_id',
  ],
  [
    '/v1/messages',
    {
      ...messages,
      messages: [
        {
          role: 'user',
          content: [{ type: 'tool_result', tool_use_id: 't', content: [{ type: 'image', source: {} }] }],
        },
      ],
    },
    'an image inside a tool_result',
  ],
  [
    '/v1/messages',
    {
      ...messages,
      messages: [
        { role: 'user', content: 'x' },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'f', input: 5 }] },
        { role: 'user', content: 'y' },
      ],
    },
    'tool_use input as a number (text is taken back: a cut call)',
  ],
  [
    '/v1/messages',
    {
      ...messages,
      messages: [
        { role: 'user', content: 'x' },
        { role: 'assistant', content: [{ type: 'server_tool_use', id: 'srvtoolu_1', name: 'web_search', input: {} }] },
        { role: 'user', content: 'y' },
      ],
    },
    'a server_tool_use block',
  ],
  [
    '/v1/messages',
    {
      ...messages,
      messages: [
        { role: 'user', content: 'x' },
        { role: 'assistant', content: 'prefill' },
      ],
    },
    'a prefilled assistant turn',
  ],
  [
    '/v1/messages',
    { ...messages, tools: [{ description: 'no name', input_schema: { type: 'object' } }] },
    'a tool without a name',
  ],
  ['/v1/messages', { ...messages, tools: [{ name: 'f' }] }, 'a tool without input_schema'],
  [
    '/v1/messages',
    { ...messages, tools: [{ name: 'f', input_schema: { type: 'array' } }] },
    'a non-object input_schema',
  ],
  ['/v1/messages', { ...messages, tools: [TOOL, TOOL] }, 'two tools of one name'],
  [
    '/v1/messages',
    { ...messages, tools: [{ type: 'web_search_20250305', name: 'web_search', max_uses: 5 }] },
    'a web search server tool',
  ],
  ['/v1/messages', { ...messages, tools: [{ type: 'bash_20250124', name: 'bash' }] }, 'a bash server tool'],
  [
    '/v1/messages',
    { ...messages, tools: [{ type: 'text_editor_20250728', name: 'str_replace_based_edit_tool' }] },
    'a text editor server tool',
  ],
  [
    '/v1/messages',
    {
      ...messages,
      tools: [{ type: 'computer_20250124', name: 'computer', display_width_px: 1024, display_height_px: 768 }],
    },
    'a computer-use tool',
  ],
  [
    '/v1/messages',
    { ...messages, tools: [{ type: 'code_execution_20250825', name: 'code_execution' }] },
    'a code execution tool',
  ],
  [
    '/v1/messages',
    { ...messages, tools: [TOOL], tool_choice: { type: 'tool', name: 'unknown' } },
    'a tool_choice naming an unknown tool',
  ],
  ['/v1/messages', { ...messages, tool_choice: { type: 'any' } }, 'tool_choice any without tools'],
  ['/v1/messages', { ...messages, tools: [TOOL], tool_choice: 'auto' }, 'tool_choice as a string'],
  ['/v1/messages', { ...messages, tools: [TOOL], tool_choice: { type: 'sometimes' } }, 'an unknown tool_choice'],
  ['/v1/messages', { ...messages, thinking: { type: 'enabled' } }, 'thinking without budget_tokens'],
  ['/v1/messages', { ...messages, thinking: { type: 'enabled', budget_tokens: -5 } }, 'a negative thinking budget'],
  ['/v1/messages', { ...messages, thinking: true }, 'thinking as a boolean'],
  ['/v1/messages', { ...messages, metadata: { user_id: 5 } }, 'a numeric user_id'],
  [
    '/v1/messages',
    { ...messages, mcp_servers: [{ type: 'url', url: 'https://mcp.example/sse', name: 'm' }] },
    'mcp_servers',
  ],
  ['/v1/messages', { ...messages, container: 'container_011' }, 'a container'],
  [
    '/v1/messages',
    { ...messages, output_config: { format: { type: 'json_schema', schema: 'object' } } },
    'an output schema that is not an object',
  ],
  ['/v1/messages/count_tokens', { model: CHAT_MODEL }, 'count_tokens without messages'],
  [
    '/v1/messages/count_tokens',
    { model: CHAT_MODEL, messages: [{ role: 'user', content: [{ type: 'image', source: {} }] }] },
    'count_tokens with an image',
  ],
  [
    '/v1/messages/count_tokens',
    {
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'x' }],
      tools: [{ type: 'web_search_20250305', name: 'web_search' }],
    },
    'count_tokens with a server tool',
  ],
];

const isAnthropic = (path: string) => path === '/v1/messages' || path.startsWith('/v1/messages/');

const BAD_JSON = [
  '',
  ' ',
  '{',
  '}',
  '{"model":',
  '{"a":1,}',
  "{'model':'x'}",
  'null null',
  '\u0000',
  '{"model":"x"',
  '[',
  'undefined',
  'NaN',
  '{"model": 01}',
];
const NOT_OBJECTS = ['null', '[]', '1', '"text"', 'true', '[{"model":"x"}]'];
const WRONG_VALUES: Array<[string, unknown]> = [
  ['model', 1],
  ['model', null],
  ['model', ''],
  ['model', []],
  ['model', { id: 'x' }],
  ['model', 'x'.repeat(10_000)],
  ['messages', 'hi'],
  ['messages', []],
  ['messages', [1]],
  ['messages', [{ role: 'alien', content: 'x' }]],
  ['messages', [{ content: 'x' }]],
  ['messages', [{ role: 'user', content: 5 }]],
  ['messages', [{ role: 'user', content: [{ type: 'image_url', image_url: 'x' }] }]],
  ['max_tokens', -1],
  ['max_tokens', 0],
  ['max_tokens', 1.5],
  ['max_tokens', '10'],
  ['max_tokens', 1e15],
  ['temperature', -1],
  ['temperature', 3],
  ['temperature', 'hot'],
  ['top_p', 0],
  ['top_p', 2],
  ['top_p', null],
  ['stop', ['']],
  ['stop', ['a', 'b', 'c', 'd', 'e']],
  ['stop', 1],
  ['seed', 1.5],
  ['seed', 'seven'],
  ['seed', 2 ** 60],
  ['n', 2],
  ['n', 0],
  ['stream', 'yes'],
  ['stream_options', 'x'],
  ['prompt', 42],
  ['prompt', ['a', 'b']],
  ['prompt', null],
  ['input', 7],
  ['input', []],
  ['input', ''],
  ['input', ['a', '']],
  ['prompt', ''],
  ['input', [1, 2, 3]],
  ['input', null],
  ['encoding_format', 'int8'],
  ['dimensions', -3],
  ['options', 'fast'],
  ['options', { num_predict: 'many' }],
  ['options', { temperature: 9 }],
  ['options', { top_k: -5 }],
  ['options', { stop: 'x' }],
  ['options', { seed: 'x' }],
  ['keep_alive', 'forever'],
  ['keep_alive', {}],
  ['format', 'json'],
  ['images', ['aGVsbG8=']],
  ['tools', [{ type: 'function' }]],
  ['raw', 'yes'],
  ['system', 5],
  ['truncate', 'no'],
  ['think', true],
  ['presence_penalty', 5],
  ['frequency_penalty', -9],
  ['logprobs', true],
  ['echo', true],
  ['best_of', 3],
  ['suffix', 'end'],
  ['input', [{ type: 'alien' }]],
  ['input', [{ role: 'tool', content: 'x' }]],
  ['input', [{ role: 'user' }]],
  ['input', { role: 'user', content: 'x' }],
  ['max_output_tokens', 0],
  ['max_output_tokens', -5],
  ['max_output_tokens', 'many'],
  ['instructions', 5],
  ['instructions', ['a']],
  ['store', 'yes'],
  ['metadata', 'x'],
  ['metadata', { k: 5 }],
  ['text', 'json'],
  ['text', { format: 'json' }],
  ['reasoning', 'high'],
  ['reasoning', { effort: 9 }],
  ['background', true],
  ['background', 'no'],
];
const UNICODE = ['\ud800', '\udfff', '\ufeff', '\u202e', '👩‍👩‍👧‍👦', 'a\u0000b', '\uffff', 'é'.normalize('NFD')];

/**
 * Malformed tools, tool choices, response formats, think and tool history (issue 13): whole bodies, since these
 * fields only mean something together. Each must be a 400 in the caller's shape.
 */
const FUNCTION = {
  type: 'function',
  function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } },
};
const TOOL_CASES: Array<[string, Record<string, unknown>, string]> = [
  [
    '/v1/chat/completions',
    { ...chat, tools: [FUNCTION], tool_choice: { type: 'function', function: { name: 'unknown' } } },
    'a tool_choice naming an unknown tool',
  ],
  ['/v1/chat/completions', { ...chat, tool_choice: 'required' }, 'tool_choice required without tools'],
  [
    '/v1/chat/completions',
    { ...chat, tools: [{ type: 'function', function: { description: 'no name' } }] },
    'a tool without a name',
  ],
  [
    '/v1/chat/completions',
    { ...chat, tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'array' } } }] },
    'a non-object parameters schema',
  ],
  [
    '/v1/chat/completions',
    { ...chat, tools: [{ type: 'function', function: { name: 'f', parameters: 'object' } }] },
    'parameters that are not a schema',
  ],
  ['/v1/chat/completions', { ...chat, tools: [FUNCTION, FUNCTION] }, 'two tools of one name'],
  ['/v1/chat/completions', { ...chat, tools: [{ type: 'retrieval' }] }, 'a tool that is not a function'],
  [
    '/v1/chat/completions',
    { ...chat, messages: [{ role: 'tool', content: '21' }] },
    'a tool message without tool_call_id',
  ],
  ['/v1/chat/completions', { ...chat, messages: [{ role: 'user' }] }, 'a content-less user message'],
  [
    '/v1/chat/completions',
    { ...chat, messages: [{ role: 'assistant', content: null }] },
    'an assistant message with neither content nor tool_calls',
  ],
  [
    '/v1/chat/completions',
    {
      ...chat,
      messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/a.png' } }] }],
    },
    'an image part',
  ],
  [
    '/v1/chat/completions',
    {
      ...chat,
      messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'x', format: 'wav' } }] }],
    },
    'an audio part',
  ],
  [
    '/v1/chat/completions',
    {
      ...chat,
      messages: [
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: { a: 1 } } }],
        },
      ],
    },
    'tool_calls arguments as an object',
  ],
  [
    '/v1/chat/completions',
    {
      ...chat,
      messages: [
        {
          role: 'user',
          content: 'x',
          tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{}' } }],
        },
      ],
    },
    'tool_calls on a user message',
  ],
  [
    '/v1/chat/completions',
    { ...chat, response_format: { type: 'json_schema', json_schema: { name: 'x' } } },
    'json_schema without a schema',
  ],
  [
    '/v1/chat/completions',
    { ...chat, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: 'object' } } },
    'a schema that is not an object',
  ],
  ['/v1/chat/completions', { ...chat, response_format: { type: 'xml' } }, 'an unknown response_format'],
  ['/v1/chat/completions', { ...chat, reasoning_effort: 'extreme' }, 'an unknown reasoning_effort'],
  [
    '/v1/completions',
    { ...BASES['/v1/completions'], response_format: { type: 'json_schema' } },
    'json_schema without json_schema',
  ],
  [
    '/api/chat',
    { ...ollamaChat, tools: [{ type: 'function', function: { parameters: {} } }] },
    'a tool without a name',
  ],
  [
    '/api/chat',
    { ...ollamaChat, tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'string' } } }] },
    'a non-object parameters schema',
  ],
  ['/api/chat', { ...ollamaChat, messages: [{ role: 'user' }] }, 'a content-less user message'],
  [
    '/api/chat',
    { ...ollamaChat, messages: [{ role: 'assistant', tool_calls: [{ function: { name: 'f', arguments: '{}' } }] }] },
    'tool_calls arguments as text',
  ],
  [
    '/api/chat',
    { ...ollamaChat, messages: [{ role: 'assistant', tool_calls: [{ function: { arguments: {} } }] }] },
    'a tool call without a name',
  ],
  ['/api/chat', { ...ollamaChat, format: 'yaml' }, 'format yaml'],
  ['/api/chat', { ...ollamaChat, format: 5 }, 'format 5'],
  ['/api/chat', { ...ollamaChat, think: 'max' }, 'think max'],
  ['/api/chat', { ...ollamaChat, messages: [{ role: 'user', content: 'x', images: ['aGVsbG8='] }] }, 'an image'],
  ['/api/generate', { ...BASES['/api/generate'], raw: true, think: true }, 'think with raw'],
  ['/api/generate', { ...BASES['/api/generate'], format: ['json'] }, 'format as a list'],
  ['/v1/responses', { ...responses, tools: [{ type: 'web_search' }] }, 'a built-in web_search tool'],
  [
    '/v1/responses',
    { ...responses, tools: [{ type: 'file_search', vector_store_ids: ['vs_1'] }] },
    'a built-in file_search tool',
  ],
  [
    '/v1/responses',
    {
      ...responses,
      tools: [{ type: 'computer_use_preview', display_width: 1, display_height: 1, environment: 'browser' }],
    },
    'a computer_use tool',
  ],
  [
    '/v1/responses',
    { ...responses, tools: [{ type: 'mcp', server_label: 'x', server_url: 'https://example.com' }] },
    'an MCP tool',
  ],
  ['/v1/responses', { ...responses, tools: [{ type: 'function' }] }, 'a function tool without a name'],
  [
    '/v1/responses',
    { ...responses, tools: [{ type: 'function', name: 'f', parameters: { type: 'string' } }] },
    'a non-object parameters schema',
  ],
  [
    '/v1/responses',
    {
      ...responses,
      tools: [
        { type: 'function', name: 'f' },
        { type: 'function', name: 'f' },
      ],
    },
    'two tools of one name',
  ],
  [
    '/v1/responses',
    { ...responses, tool_choice: { type: 'function', name: 'f' } },
    'a tool_choice naming a tool without tools',
  ],
  ['/v1/responses', { ...responses, tool_choice: { type: 'file_search' } }, 'a tool_choice of a built-in tool'],
  ['/v1/responses', { ...responses, background: true }, 'background: true'],
  ['/v1/responses', { ...responses, conversation: 'conv_1' }, 'a conversation'],
  [
    '/v1/responses',
    {
      ...responses,
      input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'https://example.com/a.png' }] }],
    },
    'an image input',
  ],
  [
    '/v1/responses',
    { ...responses, input: [{ role: 'user', content: [{ type: 'input_file', file_id: 'file_1' }] }] },
    'a file input',
  ],
  ['/v1/responses', { ...responses, input: [{ type: 'item_reference', id: 'msg_1' }] }, 'an item reference'],
  [
    '/v1/responses',
    { ...responses, input: [{ type: 'function_call', name: 'f', arguments: '{}' }] },
    'a function_call without call_id',
  ],
  [
    '/v1/responses',
    { ...responses, input: [{ type: 'function_call', call_id: 'c', name: 'f', arguments: { a: 1 } }] },
    'function_call arguments as an object',
  ],
  [
    '/v1/responses',
    { ...responses, input: [{ type: 'function_call_output', call_id: 'c' }] },
    'a function_call_output without output',
  ],
  ['/v1/responses', { ...responses, input: [] }, 'an empty input list'],
  [
    '/v1/responses',
    { ...responses, text: { format: { type: 'json_schema', name: 'x' } } },
    'json_schema without a schema',
  ],
  ['/v1/responses', { ...responses, text: { format: { type: 'xml' } } }, 'an unknown text format'],
  ['/v1/responses', { ...responses, reasoning: { effort: 'extreme' } }, 'an unknown reasoning effort'],
  [
    '/v1/responses',
    { ...responses, metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) },
    '17 metadata pairs',
  ],
  ['/v1/responses', { ...responses, previous_response_id: '' }, 'an empty previous_response_id'],
  ['/v1/responses', { ...responses, truncation: 'sometimes' }, 'an unknown truncation'],
];

/**
 * Client mistakes that once got a 200 or a 502 (issue 15): each is a 4xx in the caller's shape whose message says
 * what is wrong. The fixture model's template raises on roles that do not alternate, and the model does not think.
 */
const twoUserTurns = [
  { role: 'user', content: 'a' },
  { role: 'user', content: 'b' },
];
const TEMPLATE_REFUSAL = /the chat template of '.*' rejected these messages: Conversation roles must alternate/;
const CLIENT_MISTAKES: Array<[string, Record<string, unknown>, RegExp, string | null, string]> = [
  [
    '/v1/chat/completions',
    { ...chat, messages: [{ role: 'user' }] },
    /a user message needs content/,
    'messages.0.content',
    'a content-less user message',
  ],
  [
    '/api/chat',
    { ...ollamaChat, messages: [{ role: 'user' }] },
    /a user message needs content/,
    null,
    'a content-less user message',
  ],
  [
    '/api/chat',
    { ...ollamaChat, messages: [{ role: 'user', content: 'x' }, { role: 'assistant' }] },
    /an assistant message needs content or tool_calls/,
    null,
    'a content-less assistant message',
  ],
  [
    '/v1/messages',
    { ...messages, messages: [{ role: 'user' }] },
    /a message needs content/,
    null,
    'a content-less user message',
  ],
  [
    '/v1/messages/count_tokens',
    { ...messages, messages: [{ role: 'user' }] },
    /a message needs content/,
    null,
    'a content-less user message',
  ],
  [
    '/v1/responses',
    { ...responses, input: [{ role: 'user' }] },
    /a message needs content/,
    'input.0.content',
    'a content-less message item',
  ],
  [
    '/v1/chat/completions',
    {
      ...chat,
      messages: [
        { role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,aGVsbG8=' } }] },
      ],
    },
    /images are not supported/,
    'messages.0.content.0.type',
    'an image_url part',
  ],
  [
    '/api/chat',
    { ...ollamaChat, messages: [{ role: 'user', content: 'what is this?', images: ['aGVsbG8='] }] },
    /images are not supported/,
    null,
    'images on a message',
  ],
  [
    '/api/generate',
    { ...BASES['/api/generate'], images: ['aGVsbG8='] },
    /images are not supported/,
    null,
    'images on a prompt',
  ],
  [
    '/v1/messages',
    {
      ...messages,
      messages: [
        {
          role: 'user',
          content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'aGVsbG8=' } }],
        },
      ],
    },
    /images are not supported/,
    null,
    'an image block',
  ],
  [
    '/v1/responses',
    {
      ...responses,
      input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'data:image/png;base64,aGVsbG8=' }] }],
    },
    /no model here takes images/,
    'input.0.content.0.type',
    'an input_image part',
  ],
  [
    '/v1/chat/completions',
    { ...chat, messages: twoUserTurns },
    TEMPLATE_REFUSAL,
    null,
    'two user turns the template refuses',
  ],
  ['/v1/completions', { ...BASES['/v1/completions'], n: 2 }, /only n=1 is supported/, 'n', 'n=2'],
  [
    '/api/chat',
    { ...ollamaChat, messages: twoUserTurns },
    TEMPLATE_REFUSAL,
    null,
    'two user turns the template refuses',
  ],
  [
    '/v1/messages',
    { ...messages, messages: twoUserTurns },
    TEMPLATE_REFUSAL,
    null,
    'two user turns the template refuses',
  ],
  [
    '/v1/responses',
    { ...responses, input: twoUserTurns },
    TEMPLATE_REFUSAL,
    null,
    'two user turns the template refuses',
  ],
  [
    '/v1/chat/completions',
    { ...chat, reasoning_effort: 'high' },
    /does not support thinking.*reasoning_effort/,
    'reasoning_effort',
    'reasoning_effort on a model that does not think',
  ],
  [
    '/v1/responses',
    { ...responses, reasoning: { effort: 'high' } },
    /does not support thinking.*reasoning\.effort/,
    'reasoning_effort',
    'a reasoning effort on a model that does not think',
  ],
  [
    '/api/chat',
    { ...ollamaChat, think: true },
    /does not support thinking.*: leave out think or/,
    null,
    'think on a model that does not think',
  ],
  [
    '/api/generate',
    { ...BASES['/api/generate'], think: 'high' },
    /does not support thinking.*: leave out think or/,
    null,
    'a think level on a model that does not think',
  ],
  [
    '/v1/messages',
    { ...messages, max_tokens: 2048, thinking: { type: 'enabled', budget_tokens: 1024 } },
    /does not support thinking.*: leave out thinking/,
    null,
    'thinking on a model that does not think',
  ],
  ['/api/chat', { ...ollamaChat, logprobs: true }, /logprobs are not supported/, null, 'Ollama logprobs'],
  [
    '/api/generate',
    { ...BASES['/api/generate'], logprobs: true, top_logprobs: 3 },
    /logprobs are not supported/,
    null,
    'Ollama logprobs with top_logprobs',
  ],
  ['/api/chat', { ...ollamaChat, top_logprobs: 3 }, /top_logprobs are not supported/, null, 'Ollama top_logprobs'],
  ['/v1/chat/completions', { ...chat, logprobs: true }, /logprobs are not supported/, 'logprobs', 'OpenAI logprobs'],
  [
    '/v1/chat/completions',
    { ...chat, top_logprobs: 2 },
    /top_logprobs are not supported/,
    'top_logprobs',
    'OpenAI top_logprobs',
  ],
  ['/v1/chat/completions', { ...chat, n: 3 }, /only n=1 is supported/, 'n', 'n=3'],
  [
    '/v1/chat/completions',
    { ...chat, modalities: ['text', 'audio'] },
    /only the 'text' modality/,
    'modalities',
    'audio output',
  ],
  [
    '/v1/chat/completions',
    { ...chat, audio: { voice: 'alloy', format: 'wav' } },
    /audio output is not supported/,
    'audio',
    'audio settings',
  ],
  [
    '/v1/chat/completions',
    { ...chat, web_search_options: {} },
    /web search is not supported/,
    'web_search_options',
    'web search',
  ],
  [
    '/v1/responses',
    { ...responses, include: ['message.output_text.logprobs'] },
    /does not report log probabilities/,
    'include',
    'included logprobs',
  ],
];

function corpus(): Case[] {
  const cases: Case[] = [];
  for (const [path, base] of Object.entries(BASES)) {
    for (const body of BAD_JSON) cases.push({ path, body, what: `bad JSON ${JSON.stringify(body)}` });
    for (const body of NOT_OBJECTS) cases.push({ path, body, what: `not an object: ${body}` });
    for (const [field, value] of WRONG_VALUES)
      if (field in base || ['model'].includes(field))
        cases.push({
          path,
          body: JSON.stringify({ ...base, [field]: value }),
          what: `${field}=${JSON.stringify(value)?.slice(0, 40)}`,
        });
    for (const u of UNICODE)
      cases.push({
        path,
        body: JSON.stringify({ ...base, model: `m${u}` }),
        what: `unicode model ${JSON.stringify(u)}`,
      });
    cases.push({ path, body: `\ufeff${JSON.stringify(base)}`, what: 'a BOM before the JSON' });
    cases.push({ path, body: '['.repeat(100_000) + ']'.repeat(100_000), what: 'deeply nested JSON' });
    cases.push({ path, body: JSON.stringify({ ...base, padding: 'x'.repeat(2 * 1024 * 1024) }), what: 'a 2 MiB body' });
    cases.push({
      path,
      body: 'model=x&messages=y',
      contentType: 'application/x-www-form-urlencoded',
      what: 'a form body',
    });
    cases.push({
      path,
      body: JSON.stringify({ ...base, unknown_field: { nested: [1, 2] } }),
      what: 'an unknown field',
    });
    cases.push({ path, body: JSON.stringify(base), contentType: 'text/plain', what: 'JSON sent as text/plain' });
  }
  for (const [path, body, what] of [...TOOL_CASES, ...ANTHROPIC_CASES])
    cases.push({ path, body: JSON.stringify(body), what });
  for (const [path, body, , , what] of CLIENT_MISTAKES) cases.push({ path, body: JSON.stringify(body), what });
  return cases;
}

describe('hostile requests', () => {
  const stack = relayStack();

  async function send(c: Case): Promise<void> {
    const res = await fetch(new URL(c.path, stack.edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${stack.edge.apiKey}`, 'content-type': c.contentType ?? 'application/json' },
      body: c.body,
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    assert.ok(res.status < 500, `${c.path} with ${c.what}: got ${res.status} ${text.slice(0, 200)}`);
    if (res.status >= 400) {
      const body = JSON.parse(text) as { error: unknown; type?: unknown };
      if (c.path.startsWith('/api/'))
        assert.equal(typeof body.error, 'string', `${c.path} ${c.what}: Ollama error shape`);
      else if (isAnthropic(c.path)) {
        const e = body.error as { type: unknown; message: unknown };
        assert.equal(body.type, 'error', `${c.path} ${c.what}: Anthropic error shape`);
        assert.deepEqual(Object.keys(e).sort(), ['message', 'type']);
        assert.match(
          String(e.type),
          /^(invalid_request_error|authentication_error|permission_error|not_found_error|request_too_large|rate_limit_error)$/,
          `${c.path} ${c.what}: ${text.slice(0, 200)}`,
        );
        assert.equal(typeof e.message, 'string');
      } else {
        const e = body.error as { message: unknown; type: unknown; code: unknown };
        assert.equal(typeof e.message, 'string', `${c.path} ${c.what}: OpenAI error shape`);
        assert.equal(typeof e.type, 'string');
        assert.equal(typeof e.code, 'string');
      }
    }
  }

  test('a corpus of 200+ malformed requests: no 5xx, no hang, the right error shape', async () => {
    const cases = corpus();
    assert.ok(cases.length >= 200, `${cases.length} cases`);
    for (const c of cases) await send(c);
    console.log(`${cases.length} hostile requests, none answered with a 5xx`);
  });

  test('specific statuses: 400 for bad JSON and parameters, 404 unknown model, 413 oversized body', async () => {
    const status = async (path: string, body: string) =>
      (
        await fetch(new URL(path, stack.edge.url), {
          method: 'POST',
          headers: { authorization: `Bearer ${stack.edge.apiKey}` },
          body,
        })
      ).status;
    assert.equal(await status('/v1/chat/completions', '{'), 400);
    assert.equal(await status('/v1/chat/completions', JSON.stringify({ ...chat, temperature: 5 })), 400);
    assert.equal(await status('/v1/chat/completions', JSON.stringify({ ...chat, model: 'nope' })), 404);
    assert.equal(await status('/api/chat', JSON.stringify({ ...ollamaChat, model: 'nope' })), 404);
    assert.equal(await status('/v1/chat/completions', JSON.stringify({ ...chat, pad: 'x'.repeat(2_000_000) })), 413);
    assert.equal(await status('/api/chat', JSON.stringify({ ...ollamaChat, pad: 'x'.repeat(2_000_000) })), 413);
    assert.equal(
      await status('/v1/responses', JSON.stringify({ ...responses, previous_response_id: 'resp_nope' })),
      404,
    );
    assert.equal(await status('/v1/responses', JSON.stringify({ ...responses, model: 'nope' })), 404);
    const anthropic = async (body: string, headers: Record<string, string> = { 'x-api-key': stack.edge.apiKey }) => {
      const res = await fetch(new URL('/v1/messages', stack.edge.url), { method: 'POST', headers, body });
      return [res.status, ((await res.json()) as { error: { type: string } }).error.type];
    };
    assert.deepEqual(await anthropic('{'), [400, 'invalid_request_error']);
    assert.deepEqual(await anthropic(JSON.stringify({ ...messages, model: 'claude-sonnet-4-5' })), [
      404,
      'not_found_error',
    ]);
    assert.deepEqual(await anthropic(JSON.stringify({ ...messages, pad: 'x'.repeat(2_000_000) })), [
      413,
      'request_too_large',
    ]);
    assert.deepEqual(await anthropic(JSON.stringify(messages), {}), [401, 'authentication_error']);
    assert.deepEqual(await anthropic(JSON.stringify(messages), { 'x-api-key': 'sk-relay-wrong' }), [
      401,
      'authentication_error',
    ]);
  });

  test("stored responses: unknown ids are 404, malformed ids and bad list parameters 400, no key 401, always in OpenAI's shape", async () => {
    const cases: Array<[string, string, number, string | undefined]> = [
      ['GET', '/v1/responses/resp_nope', 404, stack.edge.apiKey],
      ['GET', `/v1/responses/${encodeURIComponent('\u0000../é')}`, 404, stack.edge.apiKey],
      ['GET', '/v1/responses/%E0%A4%A', 400, stack.edge.apiKey],
      ['DELETE', '/v1/responses/%ff', 400, stack.edge.apiKey],
      ['DELETE', '/v1/responses/resp_nope', 404, stack.edge.apiKey],
      ['GET', '/v1/responses/resp_nope/input_items', 404, stack.edge.apiKey],
      ['GET', '/v1/responses/resp_nope/input_items?limit=0', 400, stack.edge.apiKey],
      ['GET', '/v1/responses/resp_nope/input_items?limit=abc', 400, stack.edge.apiKey],
      ['GET', '/v1/responses/resp_nope/input_items?order=sideways', 400, stack.edge.apiKey],
      ['GET', '/v1/responses/resp_nope', 401, undefined],
      ['DELETE', '/v1/responses/resp_nope', 401, 'sk-relay-wrong'],
      ['PUT', '/v1/responses', 405, stack.edge.apiKey],
    ];
    for (const [method, path, expected, key] of cases) {
      const res = await fetch(new URL(path, stack.edge.url), {
        method,
        headers: key ? { authorization: `Bearer ${key}` } : {},
        signal: AbortSignal.timeout(15_000),
      });
      const body = (await res.json()) as { error: { message: string; type: string; code: string } };
      assert.equal(res.status, expected, `${method} ${path}: ${JSON.stringify(body)}`);
      assert.equal(typeof body.error.message, 'string');
      assert.equal(typeof body.error.code, 'string');
    }
  });

  test('malformed tools, tool choices, formats, think and tool history: 400, naming the field', async () => {
    for (const [path, body, what] of TOOL_CASES) {
      const res = await fetch(new URL(path, stack.edge.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${stack.edge.apiKey}` },
        body: JSON.stringify(body),
      });
      const text = await res.text();
      assert.equal(res.status, 400, `${path} with ${what}: ${text.slice(0, 200)}`);
      if (path.startsWith('/v1/'))
        assert.ok(
          (JSON.parse(text) as { error: { param: string | null } }).error.param,
          `${path} with ${what}: names the field (${text.slice(0, 200)})`,
        );
    }
    for (const [path, body, what] of ANTHROPIC_CASES) {
      const res = await fetch(new URL(path, stack.edge.url), {
        method: 'POST',
        headers: { 'x-api-key': stack.edge.apiKey },
        body: JSON.stringify(body),
      });
      const text = await res.text();
      assert.equal(res.status, 400, `${path} with ${what}: ${text.slice(0, 200)}`);
      assert.equal(
        (JSON.parse(text) as { error: { type: string } }).error.type,
        'invalid_request_error',
        `${path} with ${what}`,
      );
    }
    const image = await fetch(new URL('/v1/chat/completions', stack.edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${stack.edge.apiKey}` },
      body: JSON.stringify(TOOL_CASES[10]![1]),
    });
    assert.match(((await image.json()) as { error: { message: string } }).error.message, /images are not supported/);
  });

  test("client mistakes are 400s in the caller's shape, saying what is wrong (and naming the OpenAI param)", async () => {
    for (const [path, body, message, param, what] of CLIENT_MISTAKES) {
      const headers = isAnthropic(path)
        ? { 'x-api-key': stack.edge.apiKey }
        : { authorization: `Bearer ${stack.edge.apiKey}` };
      const res = await fetch(new URL(path, stack.edge.url), {
        method: 'POST',
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(15_000),
      });
      const text = await res.text();
      assert.equal(res.status, 400, `${path} with ${what}: ${text.slice(0, 300)}`);
      const json = JSON.parse(text) as {
        type?: string;
        error: string | { message: string; type: string; param?: string | null; code?: string };
      };
      if (path.startsWith('/api/')) {
        assert.equal(typeof json.error, 'string', `${path} ${what}: Ollama's shape`);
        assert.match(json.error as string, message, `${path} with ${what}`);
      } else {
        const e = json.error as { message: string; type: string; param?: string | null; code?: string };
        assert.equal(e.type, 'invalid_request_error', `${path} with ${what}`);
        assert.match(e.message, message, `${path} with ${what}`);
        if (isAnthropic(path)) assert.equal(json.type, 'error');
        else {
          assert.equal(e.code, 'invalid_request');
          if (param) assert.equal(e.param, param, `${path} with ${what}: names the param`);
        }
      }
    }
  });

  test('a template refusal in a stream ends it with an error the client raises, naming the refusal', async () => {
    // The stream's headers are sent when the request is dispatched, before the agent renders the template, so the
    // refusal arrives as the dialect's error event (OpenAI `error` data, Ollama `{"error"}` line) rather than a status.
    const openai = stack.edge.openai();
    await assert.rejects(
      (async () => {
        for await (const _ of await openai.chat.completions.create({
          model: CHAT_MODEL,
          messages: twoUserTurns as never,
          max_tokens: 2,
          stream: true,
        })) {
          // read to the end
        }
      })(),
      (e: unknown) => e instanceof Error && TEMPLATE_REFUSAL.test(e.message),
    );
    const res = await fetch(new URL('/api/chat', stack.edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${stack.edge.apiKey}` },
      body: JSON.stringify({ ...ollamaChat, messages: twoUserTurns, stream: true }),
    });
    const lines = (await res.text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { error?: string; done?: boolean });
    assert.match(lines.at(-1)?.error ?? '', TEMPLATE_REFUSAL);
    assert.ok(!lines.some((l) => l.done), 'no line claims the answer is done');
  });

  test('thinking off, or left out, on a model that does not think is served', async () => {
    const ok = async (path: string, body: unknown) => {
      const res = await fetch(new URL(path, stack.edge.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${stack.edge.apiKey}` },
        body: JSON.stringify(body),
      });
      assert.equal(
        res.status,
        200,
        `${path} ${JSON.stringify(body).slice(0, 120)}: ${(await res.text()).slice(0, 200)}`,
      );
    };
    await ok('/v1/chat/completions', { ...chat, reasoning_effort: 'none' });
    await ok('/api/chat', { ...ollamaChat, think: false, logprobs: false });
    await ok('/v1/messages', { ...messages, thinking: { type: 'disabled' } });
  });

  test("a wrong or missing key with a malformed body is a 401 in the caller's shape, before the body is read", async () => {
    const paths = [...Object.keys(BASES), '/api/tags', '/api/ps', '/v1/models'];
    for (const path of paths) {
      for (const headers of [
        { authorization: 'Bearer sk-relay-wrong' },
        { 'x-api-key': 'sk-relay-wrong' },
        {},
      ] as Array<Record<string, string>>) {
        const get = path === '/api/tags' || path === '/api/ps' || path === '/v1/models';
        const res = await fetch(new URL(path, stack.edge.url), {
          method: get ? 'GET' : 'POST',
          headers,
          ...(get ? {} : { body: '{"model": [' }),
          signal: AbortSignal.timeout(15_000),
        });
        const text = await res.text();
        assert.equal(res.status, 401, `${path} with ${JSON.stringify(headers)}: ${text.slice(0, 200)}`);
        const json = JSON.parse(text) as { type?: string; error: string | { type: string; message: string } };
        if (path.startsWith('/api/')) assert.match(json.error as string, /API key/, path);
        else {
          assert.equal((json.error as { type: string }).type, 'authentication_error', path);
          assert.match((json.error as { message: string }).message, /API key/, path);
          if (isAnthropic(path)) assert.equal(json.type, 'error');
        }
      }
    }
  });

  test('property: arbitrary JSON in any field never yields a 5xx', async () => {
    const paths = Object.keys(BASES);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...paths),
        fc.dictionary(
          fc.constantFrom(
            'model',
            'messages',
            'prompt',
            'input',
            'max_tokens',
            'temperature',
            'options',
            'stop',
            'seed',
            'stream',
            'tools',
            'tool_choice',
            'response_format',
            'format',
            'think',
            'reasoning_effort',
            'instructions',
            'text',
            'reasoning',
            'metadata',
            'previous_response_id',
            'store',
            'parallel_tool_calls',
            'system',
            'thinking',
            'stop_sequences',
            'top_k',
            'output_config',
          ),
          fc.jsonValue(),
        ),
        async (path, fields) => {
          const body = { ...BASES[path], ...fields, max_tokens: 2, options: { num_predict: 2 } };
          await send({ path, body: JSON.stringify(body), what: JSON.stringify(fields).slice(0, 80) });
        },
      ),
      { numRuns: 150 },
    );
  });
});

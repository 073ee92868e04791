/**
 * Output traits from chat template text: each family recognised from a short snippet in its documented shape
 * (written for this test), reasoning markers, and the catalog reading templates and the npu-relay.json override.
 */
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { scanModels } from '../node/models/catalog.ts';
import { traitsOf } from '../node/output/traits.ts';

/** Hermes/Qwen2.5: tools listed in the system turn, calls in <tool_call> tags. */
const QWEN25 = `{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}{%- for tool in tools %}{{- tool | tojson }}{%- endfor %}{{- '</tools>\\nFor each function call, return a json object within <tool_call></tool_call> XML tags' }}{%- endif %}{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}`;
/** Qwen3: the same, plus a thinking block and its switch. */
const QWEN3 = `${QWEN25.replace(/\{%- if add_generation_prompt %\}.*$/, '')}{%- if message.reasoning_content %}{{- '<think>\\n' + message.reasoning_content + '\\n</think>\\n\\n' }}{%- endif %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}`;
/** A DeepSeek-R1 distill: no tools, the generation prompt opens the think block. */
const R1 = `{% for message in messages %}{% if message['role'] == 'user' %}{{'<｜User｜>' + message['content']}}{% endif %}{% if message['role'] == 'assistant' %}{% set content = message['content'].split('</think>')[-1] %}{{'<｜Assistant｜>' + content}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}{% endif %}`;
/** Llama 3.1: JSON calls with "parameters", results in the ipython role. */
const LLAMA31 = `{%- if tools is not none %}{{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}{%- endif %}{%- for message in messages %}{%- if message.role == "tool" or message.role == "ipython" %}{{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" + message.content }}{%- elif 'tool_calls' in message %}{{- '<|python_tag|>' + message.tool_calls[0].function.name }}{%- endif %}{%- endfor %}`;
/** Mistral v3: tools in [AVAILABLE_TOOLS], calls after [TOOL_CALLS]. */
const MISTRAL = `{%- for message in loop_messages %}{%- if message["role"] == "user" %}{%- if tools is not none and (message == user_messages[-1]) %}{{- "[AVAILABLE_TOOLS] [" }}{%- for tool in tools %}{{- tool | tojson }}{%- endfor %}{{- "[/AVAILABLE_TOOLS]" }}{%- endif %}{{- "[INST] " + message["content"] + "[/INST]" }}{%- elif message.tool_calls is defined %}{{- "[TOOL_CALLS] [" }}{%- endif %}{%- endfor %}`;
/** Mistral tokenizer v11+: each call is the name, [ARGS] and the arguments. */
const MISTRAL_V11 = `{%- if tools is not none %}{{- '[AVAILABLE_TOOLS]' + tools|tojson + '[/AVAILABLE_TOOLS]' }}{%- endif %}{%- for message in messages %}{%- if message.tool_calls %}{%- for call in message.tool_calls %}{{- '[TOOL_CALLS]' + call.function.name + '[ARGS]' + call.function.arguments|tojson }}{%- endfor %}{%- endif %}{%- endfor %}`;
/** Phi-4-mini: the tools are JSON text on the system message, between <|tool|> markers. */
const PHI4 = `{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}`;
/** A template with no tools at all (Llama 2 style). */
const NO_TOOLS = `{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] }}{% endif %}{% endfor %}`;

describe('traitsOf', () => {
  test('each family from its template', () => {
    assert.deepEqual(traitsOf(QWEN25), { toolFormat: 'hermes', templateTools: true, thinkingSwitch: false });
    assert.deepEqual(traitsOf(LLAMA31), { toolFormat: 'llama3-json', templateTools: true, thinkingSwitch: false });
    assert.deepEqual(traitsOf(MISTRAL), { toolFormat: 'mistral', templateTools: true, thinkingSwitch: false });
    assert.deepEqual(traitsOf(MISTRAL_V11), { toolFormat: 'mistral-v11', templateTools: true, thinkingSwitch: false });
    assert.deepEqual(traitsOf(PHI4), {
      toolFormat: 'phi4',
      templateTools: true,
      toolsInSystemMessage: true,
      thinkingSwitch: false,
    });
  });

  test('reasoning: Qwen3 thinks with a switch; an R1 distill starts inside the block', () => {
    assert.deepEqual(traitsOf(QWEN3), {
      toolFormat: 'hermes',
      templateTools: true,
      thinkingSwitch: true,
      reasoning: { open: '<think>', close: '</think>', openedByPrompt: false },
    });
    assert.deepEqual(traitsOf(R1), {
      toolFormat: 'hermes',
      templateTools: false,
      thinkingSwitch: false,
      reasoning: { open: '<think>', close: '</think>', openedByPrompt: true },
    });
  });

  test('no tools in the template, or no template: the generic layout', () => {
    assert.deepEqual(traitsOf(NO_TOOLS), { toolFormat: 'hermes', templateTools: false, thinkingSwitch: false });
    assert.deepEqual(traitsOf(undefined), { toolFormat: 'hermes', templateTools: false, thinkingSwitch: false });
    // "tools" in text or as a message key is not the template's tools variable.
    assert.equal(traitsOf(`{{ 'You have no tools.' }}{% if message['tools'] %}{% endif %}`).templateTools, false);
  });
});

describe('catalog traits', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-traits-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function model(name: string, files: Record<string, unknown>): Promise<void> {
    await mkdir(path.join(dir, name), { recursive: true });
    const all = { 'config.json': { architectures: ['LlamaForCausalLM'], model_type: 'llama' }, ...files };
    for (const [file, content] of Object.entries(all)) {
      await writeFile(path.join(dir, name, file), typeof content === 'string' ? content : JSON.stringify(content));
    }
  }

  test('named templates in tokenizer_config.json, chat_template.jinja, and the override file', async () => {
    await model('a-named', {
      'tokenizer_config.json': {
        chat_template: [
          { name: 'default', template: NO_TOOLS },
          { name: 'tool_use', template: QWEN25 },
        ],
      },
    });
    await model('b-jinja', { 'chat_template.jinja': LLAMA31 });
    await model('c-override', {
      'tokenizer_config.json': { chat_template: NO_TOOLS },
      'npu-relay.json': {
        toolFormat: 'mistral',
        templateTools: true,
        reasoning: { open: '<reasoning>', close: '</reasoning>' },
      },
    });
    await model('d-off', { 'tokenizer_config.json': { chat_template: QWEN3 }, 'npu-relay.json': { reasoning: false } });
    const { entries } = await scanModels(dir);
    const traits = Object.fromEntries(entries.map((e) => [e.id, e.traits]));
    assert.deepEqual(traits['a-named'], { toolFormat: 'hermes', templateTools: true, thinkingSwitch: false });
    assert.equal(traits['b-jinja']?.toolFormat, 'llama3-json');
    assert.deepEqual(traits['c-override'], {
      toolFormat: 'mistral',
      templateTools: true,
      thinkingSwitch: false,
      reasoning: { open: '<reasoning>', close: '</reasoning>', openedByPrompt: false },
    });
    assert.equal(traits['d-off']?.reasoning, undefined);
    assert.equal(traits['d-off']?.thinkingSwitch, true);
  });

  test("an OpenVINO IR model's template, from openvino_tokenizer.xml", async () => {
    const escaped = QWEN25.replaceAll('&', '&amp;')
      .replaceAll('<', '&lt;')
      .replaceAll('>', '&gt;')
      .replaceAll('"', '&quot;');
    await model('e-ir', {
      'openvino_model.xml': '<net/>',
      'openvino_tokenizer.xml': `<net><rt_info><chat_template value="${escaped}" /></rt_info></net>`,
    });
    const { entries } = await scanModels(dir);
    assert.deepEqual(entries.find((e) => e.id === 'e-ir')?.traits, {
      toolFormat: 'hermes',
      templateTools: true,
      thinkingSwitch: false,
    });
  });

  test('a malformed override stops the scan, naming the file and the key', async () => {
    const bad = await mkdtemp(path.join(tmpdir(), 'npu-relay-traits-bad-'));
    try {
      await mkdir(path.join(bad, 'm'));
      await writeFile(path.join(bad, 'm', 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'] }));
      await writeFile(path.join(bad, 'm', 'npu-relay.json'), JSON.stringify({ toolFormat: 'qwen' }));
      await assert.rejects(
        scanModels(bad),
        (err: Error) =>
          err.message.includes(path.join(bad, 'm', 'npu-relay.json')) && err.message.includes('toolFormat'),
      );
    } finally {
      await rm(bad, { recursive: true, force: true });
    }
  });
});

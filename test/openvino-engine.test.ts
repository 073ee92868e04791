/**
 * The engine contract and model lifecycle against the OpenVINO engine on the real runtime: `openvino-genai-node`
 * and its native runtime load (`npm run openvino:runtime`), and the IR fixtures of
 * test/fixtures/openvino/make-models.py are in NPU_RELAY_OPENVINO_MODELS_DIR (default .data/openvino-fixtures).
 * NPU_RELAY_OPENVINO_PIPELINE picks the GenAI pipeline (test/support/openvino-fixtures.ts); NPU_RELAY_DEVICE pins a
 * device as it does for the agent. Anywhere else every test is skipped, with the reason. `npm run test:openvino`
 * makes the fixtures and runs this file in both pipeline modes.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type * as GenAI from 'openvino-genai-node';
import { parseDeviceChoice } from '../node/engines/devices.ts';
import { NPU_DEFAULTS, OpenVinoEngine } from '../node/engines/openvino.ts';
import type { AgentError } from '../node/errors.ts';
import { compactJson } from '../node/grammar/compact-json.ts';
import { createLogger } from '../node/log.ts';
import { scanModels, type CatalogEntry } from '../node/models/catalog.ts';
import { traitsOf } from '../node/output/traits.ts';
import type { ChatTask } from '../shared/protocol/frames.ts';
import { engineContract, lifecycleContract, runGenerate } from './support/engine-contract.ts';
import { emptyIrFolder, FakeGenAI, genaiUtils } from './support/fake-openvino.ts';
import { modeOptions, OV_FIXTURES_DIR, realRuntime } from './support/openvino-fixtures.ts';

/** The EBNF a JSON schema becomes in a constraint (node/grammar/compact-json.ts). */
async function compactGrammar(schema: Record<string, unknown>): Promise<string> {
  const element = await compactJson({ type: 'json_schema', json_schema: schema }, 'test schema');
  assert.equal(element.type, 'grammar');
  return (element as { grammar: string }).grammar;
}

const CHAT_MODEL = 'tiny-random-llama';
const EMBED_MODEL = 'tiny-bow-embed';
const modelsDir = OV_FIXTURES_DIR;
const { modules, skip, mode } = await realRuntime([CHAT_MODEL]);
const models: CatalogEntry[] = skip
  ? []
  : (await scanModels(modelsDir)).entries.filter((m) => m.formats.includes('openvino'));

const create = async (npu = {}) =>
  new OpenVinoEngine(modules!, {
    models,
    device: parseDeviceChoice(process.env.NPU_RELAY_DEVICE),
    npu,
    ...modeOptions(mode),
    log: createLogger(process.env.NPU_RELAY_TEST_LOG_LEVEL ?? 'silent'),
  });

engineContract({
  name: `openvino (${mode} pipeline)`,
  create,
  chatModel: CHAT_MODEL,
  embedModel: models.some((m) => m.id === EMBED_MODEL) ? EMBED_MODEL : undefined,
  skip,
});

// The model lifecycle on the real engine: a folder whose IR is not one is the model that fails to load.
let broken: CatalogEntry | undefined;
if (!skip && models.some((m) => m.id === EMBED_MODEL)) {
  const brokenDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-ov-broken-'));
  for (const file of ['openvino_model.xml', 'openvino_model.bin', 'openvino_tokenizer.xml', 'openvino_detokenizer.xml'])
    await writeFile(path.join(brokenDir, file), 'not an IR');
  broken = {
    id: 'broken-ir',
    kind: 'chat',
    dir: brokenDir,
    formats: ['openvino'],
    traits: traitsOf(undefined),
    weights: { openvino: 18 },
  };
  after(() => rm(brokenDir, { recursive: true, force: true }));
}
lifecycleContract({
  name: 'openvino',
  create: async (pool) =>
    new OpenVinoEngine(modules!, {
      models: [...models, broken!],
      device: parseDeviceChoice(process.env.NPU_RELAY_DEVICE),
      pool,
      ...modeOptions(mode),
      log: createLogger(process.env.NPU_RELAY_TEST_LOG_LEVEL ?? 'silent'),
    }),
  chatModel: CHAT_MODEL,
  embedModel: EMBED_MODEL,
  brokenModel: 'broken-ir',
  weightBytes: (id) => models.find((m) => m.id === id)?.weights?.openvino ?? 0,
  skip:
    skip ??
    (broken ? undefined : `${modelsDir} has no ${EMBED_MODEL}/ in OpenVINO IR, which the memory-budget test needs`),
});

describe('OpenVINO engine', () => {
  test('reports the device a model loaded on, and advertises the NPU prompt limit there', { skip }, async () => {
    const engine = await create({ maxPromptLen: 256 });
    try {
      const { done } = await runGenerate(engine, {
        task: 'chat',
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'hi' }],
        sampling: { maxTokens: 2, temperature: 0, topP: 1, stop: [] },
      });
      const info = engine.models().find((m) => m.id === CHAT_MODEL)!;
      assert.equal(info.device, done.device);
      if (done.device === 'NPU') assert.equal(info.maxPromptTokens, Math.min(256, info.contextLength ?? Infinity));
      else assert.equal(info.maxPromptTokens, info.contextLength);
    } finally {
      await engine.close();
    }
  });

  test('a prompt longer than the NPU accepts is refused before generating', { skip }, async (t) => {
    const engine = await create({
      maxPromptLen: 16,
      minResponseLen: NPU_DEFAULTS.minResponseLen,
      prefillChunkSize: 16,
    });
    const task = (content: string) => ({
      task: 'chat' as const,
      model: CHAT_MODEL,
      messages: [{ role: 'user' as const, content }],
      sampling: { maxTokens: 2, temperature: 0, topP: 1, stop: [] },
    });
    try {
      const { done } = await runGenerate(engine, task('hi'));
      if (done.device !== 'NPU') return t.skip(`the model runs on ${done.device} here, not on an NPU`);
      await assert.rejects(runGenerate(engine, task('word '.repeat(200))), {
        code: 'invalid_request',
        message: /accepts at most 16 on the NPU \(MAX_PROMPT_LEN/,
      });
    } finally {
      await engine.close();
    }
  });
});

/**
 * The OpenVINO engine at GenAI's boundary, on this machine too: a fake stands in for the native calls (it records
 * them and streams a scripted reply), so these tests check that the output plan reaches GenAI as its API expects:
 * tools and template variables on the ChatHistory and in the prompt count, the constraint as a StructuredOutputConfig
 * built with GenAI's own constructors, and the reply read back into tool calls.
 */
describe('OpenVINO engine at the GenAI boundary (fake GenAI)', () => {
  // The traits of a Qwen-style template (the catalog reads them from the model's files): it renders `tools` itself,
  // writes hermes calls, and honours enable_thinking (no think markers, so no reasoning block before the calls).
  const QWEN_LIKE =
    "{%- if tools %}<tools>{{ tools | tojson }}</tools>{%- endif %}{{ '<tool_call>' }}{%- if enable_thinking is defined and enable_thinking is false %}{{ '' }}{%- endif %}";
  const WEATHER = {
    name: 'get_weather',
    description: 'Weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  };
  let dir: string;
  before(async () => {
    dir = await emptyIrFolder('npu-relay-ov-');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const engineWith = (fake: FakeGenAI) =>
    new OpenVinoEngine(fake.modules(), {
      models: [
        { id: 'qwen-like', kind: 'chat', dir, formats: ['openvino'], contextLength: 4096, traits: traitsOf(QWEN_LIKE) },
      ],
      log: createLogger('silent'),
    });
  const chat = (extra: Partial<ChatTask>): ChatTask => ({
    task: 'chat',
    model: 'qwen-like',
    messages: [{ role: 'user', content: 'Weather in Paris?' }],
    sampling: { maxTokens: 64, temperature: 0, topP: 1, stop: [] },
    ...extra,
  });

  test('a forced tool: tools on the ChatHistory and in the prompt count, the call grammar as structural tags, the reply as a tool call', async () => {
    const fake = new FakeGenAI();
    fake.reply = ['<tool_call>', '\n{"name": "get_weather", ', '"arguments": {"city": ', '"Paris"}}', '\n</tool_call>'];
    const engine = engineWith(fake);
    const { deltas, done } = await runGenerate(engine, chat({ tools: [WEATHER], toolChoice: { name: 'get_weather' } }));

    const [call] = fake.generateCalls;
    assert.ok(call && typeof call.input !== 'string', 'a chat is given to GenAI as a ChatHistory');
    const history = call.input as GenAI.ChatHistory;
    assert.deepEqual(history.getTools(), [{ type: 'function', function: WEATHER }]);
    assert.deepEqual(history.getMessages().at(-1), { role: 'user', content: 'Weather in Paris?' });
    assert.equal(call.config.apply_chat_template, true);

    const config = call.config.structured_output_config;
    assert.ok(config instanceof genaiUtils.StructuredOutputConfig, "built with GenAI's StructuredOutputConfig");
    const { StructuredOutputConfig: S } = genaiUtils;
    assert.deepEqual(
      config.structural_tags_config,
      S.TagsWithSeparator({
        // The arguments as compact, strict JSON (node/grammar/compact-json.ts), the same grammar ONNX Runtime runs.
        tags: [
          S.Tag({
            begin: '<tool_call>\n{"name": "get_weather", "arguments": ',
            content: S.EBNF(await compactGrammar(WEATHER.parameters)),
            end: '}\n</tool_call>',
          }),
        ],
        separator: '\n',
        atLeastOne: true,
        stopAfterFirst: true,
      }),
    );

    const [counted] = fake.templateCalls;
    assert.equal(counted?.history, history, 'the prompt is counted from the same ChatHistory');
    assert.equal(counted?.addGenerationPrompt, true);
    assert.deepEqual(counted?.tools, [{ type: 'function', function: WEATHER }]);

    const args = deltas
      .flatMap((d) => d.toolCalls ?? [])
      .map((c) => c.arguments ?? '')
      .join('');
    assert.deepEqual(JSON.parse(args), { city: 'Paris' });
    assert.equal(deltas.flatMap((d) => d.toolCalls ?? []).find((c) => c.name)?.name, 'get_weather');
    assert.equal(done.finishReason, 'tool_calls');
    await engine.close();
  });

  test('think: false reaches the template as extra context; a response format becomes a compact JSON grammar', async () => {
    const fake = new FakeGenAI();
    fake.reply = ['{"ok"', ': true}'];
    const engine = engineWith(fake);
    const schema = { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] };
    const { text } = await runGenerate(engine, chat({ think: false, responseFormat: { type: 'json_schema', schema } }));
    const [call] = fake.generateCalls;
    assert.deepEqual((call!.input as GenAI.ChatHistory).getExtraContext(), { enable_thinking: false });
    assert.deepEqual(fake.templateCalls[0]?.extraContext, { enable_thinking: false });
    assert.deepEqual(
      call!.config.structured_output_config?.structural_tags_config,
      genaiUtils.StructuredOutputConfig.EBNF(await compactGrammar(schema)),
    );
    assert.match(
      await compactGrammar(schema),
      /^root ::= "\{" "" \(\("\\"ok\\"" ":" /m,
      'one line, no whitespace at all',
    );
    assert.equal(text, '{"ok": true}');
    await engine.close();
  });

  test('a schema xgrammar refuses is invalid_request before GenAI generates anything', async () => {
    const fake = new FakeGenAI();
    const engine = engineWith(fake);
    const schema = { type: 'object', properties: { a: { type: 'string', pattern: '(unclosed' } } };
    await assert.rejects(
      runGenerate(engine, chat({ responseFormat: { type: 'json_schema', schema } })),
      (err: unknown) => {
        assert.equal((err as AgentError).code, 'invalid_request');
        assert.match((err as Error).message, /response_format schema could not be compiled: .*parenthesis/i);
        return true;
      },
    );
    assert.equal(fake.generateCalls.length, 0);
    await engine.close();
  });

  test('without tools or a format, GenAI gets no tools, no extra context and no structured output config', async () => {
    const fake = new FakeGenAI();
    fake.reply = ['hello'];
    const engine = engineWith(fake);
    await runGenerate(engine, chat({}));
    const [call] = fake.generateCalls;
    assert.deepEqual((call!.input as GenAI.ChatHistory).getTools(), []);
    assert.deepEqual((call!.input as GenAI.ChatHistory).getExtraContext(), {});
    assert.equal(call!.config.structured_output_config, undefined);
    await engine.close();
  });
});

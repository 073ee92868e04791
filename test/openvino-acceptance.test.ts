/**
 * Issue 28's acceptance through the whole stack (a real edge, the agent, the official openai and ollama clients) on
 * the OpenVINO engine, in both of GenAI's pipeline modes on the CPU: the stateful pipeline (prefix caching off, so
 * `ATTENTION_BACKEND: SDPA`: what the NPU runs) and continuous batching. A chat, a completion, an Ollama generate
 * with context, then a chat again all answer, also with two users' conversations interleaved; a chat on a model
 * without a chat template answers. On FakeOpenVinoRuntime always; on the real runtime wherever it loads and
 * NPU_RELAY_OPENVINO_MODELS_DIR holds the fixtures (tiny-random-llama, tiny-random-llama-no-template).
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ollama } from 'ollama';
import { agentConfig } from '../node/config.ts';
import { loadOpenVino, type OpenVinoModules } from '../node/engines/openvino.ts';
import { createLogger } from '../node/log.ts';
import { createAgentRuntime } from '../node/runtime.ts';
import { FakeOpenVinoRuntime, writeFakeIrModel } from './support/fake-openvino.ts';
import { startTestEdge, type TestEdge } from './support/stack.ts';

const CHAT = 'tiny-random-llama';
const PLAIN = 'tiny-random-llama-no-template';

let realModules: OpenVinoModules | undefined;
let realSkip: string | undefined;
try {
  realModules = await loadOpenVino();
} catch (err) {
  realSkip = (err as Error).message;
}
const fixtures = process.env.NPU_RELAY_OPENVINO_MODELS_DIR;
if (!realSkip && !fixtures)
  realSkip = `NPU_RELAY_OPENVINO_MODELS_DIR is not set: point it at the IR fixtures (${CHAT}, ${PLAIN})`;

let root: string;
let edge: TestEdge;
let fakeModels: string;
let realModels: string;
before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'npu-relay-ov-acceptance-'));
  fakeModels = path.join(root, 'fake');
  await writeFakeIrModel(path.join(fakeModels, CHAT), { kind: 'chat', weightBytes: 64 });
  await writeFakeIrModel(path.join(fakeModels, PLAIN), { kind: 'chat', weightBytes: 64, noChatTemplate: true });
  // Only the two chat fixtures, so the agent loads nothing else.
  realModels = path.join(root, 'real');
  if (fixtures) {
    await mkdir(realModels, { recursive: true });
    for (const id of [CHAT, PLAIN]) await symlink(path.resolve(fixtures, id), path.join(realModels, id));
  }
  edge = await startTestEdge();
});
after(async () => {
  await edge?.stop();
  await rm(root, { recursive: true, force: true });
});

const targets = [
  {
    name: 'FakeOpenVinoRuntime',
    skip: undefined,
    modules: () => {
      const fake = new FakeOpenVinoRuntime({ devices: ['CPU'] });
      fake.reply = ['fine ', 'thanks'];
      return fake.modules();
    },
    models: () => fakeModels,
  },
  { name: 'the real runtime', skip: realSkip, modules: () => realModules!, models: () => realModels },
];

for (const target of targets) {
  for (const [mode, prefixCaching] of [
    ['stateful pipeline (ATTENTION_BACKEND: SDPA)', 'off'],
    ['continuous batching', 'on'],
  ] as const) {
    describe(`OpenVINO acceptance on ${target.name}, CPU, ${mode}`, { skip: target.skip }, () => {
      test('chat, completion, Ollama generate with context, chat again — interleaved for two users — and a template-less chat all answer', async () => {
        const config = agentConfig([], {
          NPU_RELAY_EDGE_URL: edge.url.toString(),
          NPU_RELAY_AGENT_TOKEN: edge.agentToken,
          NPU_RELAY_MODELS_DIR: target.models(),
          NPU_RELAY_DATA_DIR: path.join(root, `data-${target.name.length}-${prefixCaching}`),
          NPU_RELAY_DEVICE: 'CPU',
          NPU_RELAY_PREFIX_CACHING: prefixCaching,
          NPU_RELAY_LOG_LEVEL: 'silent',
        })!;
        const runtime = await createAgentRuntime({ ...config, metricsPort: 0 }, createLogger('silent'), {
          loadOpenVino: async () => target.modules(),
        });
        try {
          assert.equal(runtime.engine.name, 'openvino');
          await runtime.agent.start();
          const other = await edge.createKey({ name: `second user ${target.name} ${mode}` });
          const users = [edge.apiKey, other.key].map((key) => ({
            openai: edge.openai({ apiKey: key, maxRetries: 0 }),
            ollama: new Ollama({ host: edge.url.origin, headers: { Authorization: `Bearer ${key}` } }),
          }));
          const tag = `${target.name} ${mode}`;
          const chat = (u: number, content: string) =>
            users[u]!.openai.chat.completions.create({
              model: CHAT,
              messages: [{ role: 'user', content: `${content} (${tag})` }],
              max_tokens: 4,
              temperature: 0,
            });

          // One user: each call throws on anything but a 200.
          await chat(0, 'hello');
          await users[0]!.openai.completions.create({
            model: CHAT,
            prompt: `once upon a time (${tag})`,
            max_tokens: 4,
            temperature: 0,
          });
          const g1 = await users[0]!.ollama.generate({
            model: CHAT,
            prompt: `why is the sky blue (${tag})`,
            stream: false,
            options: { num_predict: 4, temperature: 0 },
          });
          assert.ok(g1.context?.length, 'Ollama gets a context back');
          await users[0]!.ollama.generate({
            model: CHAT,
            prompt: 'and at night?',
            context: g1.context,
            stream: false,
            options: { num_predict: 4, temperature: 0 },
          });
          await chat(0, 'hello again');

          // Two users, interleaved.
          const a = await chat(0, 'I am the first user');
          const b = await users[1]!.ollama.generate({
            model: CHAT,
            prompt: `I am the second user (${tag})`,
            stream: false,
            options: { num_predict: 4, temperature: 0 },
          });
          await users[0]!.openai.chat.completions.create({
            model: CHAT,
            messages: [
              { role: 'user', content: `I am the first user (${tag})` },
              { role: 'assistant', content: a.choices[0]?.message.content ?? '' },
              { role: 'user', content: 'go on' },
            ],
            max_tokens: 4,
            temperature: 0,
          });
          await chat(1, 'now a chat from the second user');
          await users[1]!.ollama.generate({
            model: CHAT,
            prompt: 'continue',
            context: b.context,
            stream: false,
            options: { num_predict: 4, temperature: 0 },
          });
          await users[0]!.openai.completions.create({
            model: CHAT,
            prompt: `first user's completion (${tag})`,
            max_tokens: 4,
            temperature: 0,
          });

          // A model whose IR has no chat template answers a chat.
          const plain = await users[0]!.openai.chat.completions.create({
            model: PLAIN,
            messages: [{ role: 'user', content: `hi (${tag})` }],
            max_tokens: 4,
            temperature: 0,
          });
          assert.ok(plain.choices[0]);
        } finally {
          await runtime.agent.stop();
          await runtime.engine.close();
          await runtime.observability?.close();
        }
      });
    });
  }
}

/**
 * Every Ollama endpoint's response, through the real stack (workerd edge, agent with ONNX Runtime, the official
 * `ollama` client where it has the call), checked against a field table written from Ollama's `api/types.go`
 * (ListModelResponse, ProcessModelResponse, ShowResponse, GenerateResponse, ChatResponse, Metrics, EmbedResponse,
 * EmbeddingResponse, ModelDetails), and for values a client would trust: sizes that are the files' bytes, a digest
 * that changes when the files do, /api/ps holding only what is loaded, durations a client can divide by, and
 * `context` that carries a conversation on.
 */
import assert from 'node:assert/strict';
import { chmod, cp, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ollama } from 'ollama';
import type { Agent } from '../node/agent.ts';
import { OrtEngine } from '../node/engines/ort.ts';
import { scanModels } from '../node/models/catalog.ts';
import { CHAT_MODEL, EMBED_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

// --- the field table, from ollama/ollama api/types.go -----------------------------------------------------------

type Kind = 'string' | 'int' | 'bool' | 'time' | 'object' | 'array' | 'strings|null' | 'ints';
/** A field: its JSON type, and whether Go writes it always (no `omitempty`). */
type Table = Record<string, { kind: Kind; required: boolean; table?: Table }>;
const req = (kind: Kind, table?: Table) => ({ kind, required: true, ...(table ? { table } : {}) });
const opt = (kind: Kind, table?: Table) => ({ kind, required: false, ...(table ? { table } : {}) });

const ModelDetails: Table = {
  parent_model: req('string'),
  format: req('string'),
  family: req('string'),
  families: req('strings|null'),
  parameter_size: req('string'),
  quantization_level: req('string'),
};
const ListModelResponse: Table = {
  name: req('string'),
  model: req('string'),
  modified_at: req('time'),
  size: req('int'),
  digest: req('string'),
  details: opt('object', ModelDetails),
};
const ProcessModelResponse: Table = {
  name: req('string'),
  model: req('string'),
  size: req('int'),
  digest: req('string'),
  details: opt('object', ModelDetails),
  expires_at: req('time'),
  size_vram: req('int'),
  context_length: opt('int'),
};
const ShowResponse: Table = {
  license: opt('string'),
  modelfile: opt('string'),
  parameters: opt('string'),
  template: opt('string'),
  system: opt('string'),
  details: opt('object', ModelDetails),
  model_info: opt('object'),
  capabilities: opt('array'),
  modified_at: opt('time'),
};
const Metrics: Table = {
  total_duration: opt('int'),
  load_duration: opt('int'),
  prompt_eval_count: opt('int'),
  prompt_eval_duration: opt('int'),
  eval_count: opt('int'),
  eval_duration: opt('int'),
};
const GenerateResponse: Table = {
  model: req('string'),
  created_at: req('time'),
  response: req('string'),
  thinking: opt('string'),
  done: req('bool'),
  done_reason: opt('string'),
  context: opt('ints'),
  ...Metrics,
};
const Message: Table = {
  role: req('string'),
  content: req('string'),
  thinking: opt('string'),
  tool_calls: opt('array'),
};
const ChatResponse: Table = {
  model: req('string'),
  created_at: req('time'),
  message: req('object', Message),
  done: req('bool'),
  done_reason: opt('string'),
  ...Metrics,
};
const EmbedResponse: Table = {
  model: req('string'),
  embeddings: req('array'),
  total_duration: opt('int'),
  load_duration: opt('int'),
  prompt_eval_count: opt('int'),
};
const EmbeddingResponse: Table = { embedding: req('array') };

/** Go's time.Time in JSON: RFC 3339 with an optional fraction. */
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

/** Fails naming every field of `value` that `table` says must be there or of another type (and any extra field). */
function conforms(value: unknown, table: Table, where: string): void {
  assert.ok(value !== null && typeof value === 'object' && !Array.isArray(value), `${where} is an object`);
  const o = value as Record<string, unknown>;
  for (const [name, f] of Object.entries(table)) {
    const v = o[name];
    const at = `${where}.${name}`;
    if (v === undefined) {
      assert.ok(!f.required, `${at} is required`);
      continue;
    }
    switch (f.kind) {
      case 'string':
        assert.equal(typeof v, 'string', `${at} is a string`);
        break;
      case 'int':
        assert.ok(Number.isSafeInteger(v) && (v as number) >= 0, `${at} is a non-negative integer (${String(v)})`);
        break;
      case 'bool':
        assert.equal(typeof v, 'boolean', `${at} is a boolean`);
        break;
      case 'time':
        assert.match(String(v), RFC3339, `${at} is an RFC 3339 time`);
        break;
      case 'array':
        assert.ok(Array.isArray(v), `${at} is an array`);
        break;
      case 'ints':
        assert.ok(
          Array.isArray(v) && v.every((x) => Number.isSafeInteger(x) && x >= 0),
          `${at} is an array of token ids`,
        );
        break;
      case 'strings|null':
        assert.ok(
          v === null || (Array.isArray(v) && v.every((x) => typeof x === 'string')),
          `${at} is null or strings`,
        );
        break;
      case 'object':
        if (f.table) conforms(v, f.table, at);
        else assert.ok(v !== null && typeof v === 'object', `${at} is an object`);
        break;
    }
  }
  for (const name of Object.keys(o)) assert.ok(name in table, `${where}.${name} is a field Ollama has`);
}

// --- helpers ---------------------------------------------------------------------------------------------------

async function filesOf(dir: string): Promise<Array<{ file: string; size: number; mtimeMs: number }>> {
  const out = [];
  for (const d of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!d.isFile()) continue;
    const file = path.join(d.parentPath, d.name);
    const s = await stat(file);
    out.push({ file, size: s.size, mtimeMs: s.mtimeMs });
  }
  return out;
}

/** `model_info` is a JSON object; the client's types call it a Map. */
const info = (show: { model_info: unknown }) => show.model_info as Record<string, unknown>;

/** The final statistics of a generate body read without the client. */
type Final = {
  eval_count: number;
  eval_duration: number;
  prompt_eval_duration: number;
  load_duration: number;
  context: number[];
};

describe('Ollama fidelity: every endpoint against api/types.go, through the real stack', () => {
  let edge: TestEdge;
  let modelsDir: string;
  let engine: OrtEngine;
  let agent: Agent;
  let ollama: Ollama;
  let manager: Ollama;
  let managerKey: string;

  const startAgent = async () => {
    engine = new OrtEngine({ modelsDir, models: (await scanModels(modelsDir)).entries });
    agent = await startTestAgent(edge, engine, { agentId: 'fidelity' });
  };
  const stopAgent = async () => {
    await agent.stop();
    await engine.close();
  };

  before(async () => {
    // A copy of the fixtures, so the test can change the files and see the digest change.
    modelsDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-fidelity-'));
    for (const id of [CHAT_MODEL, EMBED_MODEL])
      await cp(path.join(MODELS_DIR, id), path.join(modelsDir, id), { recursive: true });
    edge = await startTestEdge();
    await startAgent();
    const auth = (key: string) => ({ host: edge.url.origin, headers: { Authorization: `Bearer ${key}` } });
    ollama = new Ollama(auth(edge.apiKey));
    managerKey = (await edge.createKey({ name: 'operator', manageModels: true })).key;
    manager = new Ollama(auth(managerKey));
  });
  after(async () => {
    await stopAgent();
    await edge?.stop();
    await rm(modelsDir, { recursive: true, force: true });
  });

  test('/api/tags: size is the bytes of the files, modified_at their newest time, the details from the weights', async () => {
    const list = await ollama.list();
    for (const m of list.models) conforms(m, ListModelResponse, `tags[${m.name}]`);
    for (const id of [CHAT_MODEL, EMBED_MODEL]) {
      const m = list.models.find((x) => x.name === `${id}:latest`)!;
      const files = await filesOf(path.join(modelsDir, id));
      assert.equal(
        m.size,
        files.reduce((n, f) => n + f.size, 0),
        `${id}: size is the files' bytes`,
      );
      assert.equal(
        new Date(m.modified_at).getTime(),
        Math.floor(Math.max(...files.map((f) => f.mtimeMs))),
        `${id}: modified_at`,
      );
      assert.match(m.digest, /^[0-9a-f]{64}$/);
      assert.match(m.details.parameter_size, /^\d+(\.\d+)?[KMB]$/);
      // The weights hold their parameters: at fp32 four bytes each, so the ONNX files are at least that big.
      const onnxBytes = files
        .filter((f) => f.file.includes(`${path.sep}onnx${path.sep}model.onnx`))
        .reduce((n, f) => n + f.size, 0);
      const show = await ollama.show({ model: id });
      const count = info(show)['general.parameter_count'] as number;
      assert.ok(Number.isSafeInteger(count) && count > 0, 'general.parameter_count');
      assert.ok(count <= onnxBytes, `${id}: ${count} parameters fit in ${onnxBytes} bytes of weights`);
      assert.equal(m.details.format, 'onnx');
    }
    const chat = list.models.find((x) => x.name === `${CHAT_MODEL}:latest`)!;
    assert.equal(chat.details.quantization_level, 'F32', 'the fixture chat model is fp32');
    assert.equal(chat.details.family, 'llama');
    const onnxBytes = (await filesOf(path.join(modelsDir, CHAT_MODEL, 'onnx')))
      .filter((f) => /model\.onnx(\.data)?$/.test(f.file))
      .reduce((n, f) => n + f.size, 0);
    const count = info(await ollama.show({ model: CHAT_MODEL }))['general.parameter_count'] as number;
    assert.ok(
      count * 4 <= onnxBytes && count * 4 > onnxBytes / 2,
      `fp32: ${count} parameters take most of ${onnxBytes} bytes`,
    );
  });

  test('/api/show: the real template, parameters, model_info and capabilities', async () => {
    const show = await ollama.show({ model: CHAT_MODEL });
    conforms(show, ShowResponse, 'show');
    const config = JSON.parse(await readFile(path.join(modelsDir, CHAT_MODEL, 'config.json'), 'utf8')) as {
      hidden_size: number;
      max_position_embeddings: number;
    };
    const tokenizerConfig = JSON.parse(
      await readFile(path.join(modelsDir, CHAT_MODEL, 'tokenizer_config.json'), 'utf8'),
    ) as { chat_template?: string };
    if (tokenizerConfig.chat_template)
      assert.equal(show.template, tokenizerConfig.chat_template, 'the template the model ships');
    else assert.ok(show.template.length > 0);
    assert.equal(info(show)['general.architecture'], 'llama');
    assert.equal(info(show)['llama.context_length'], config.max_position_embeddings);
    assert.equal(info(show)['llama.embedding_length'], config.hidden_size);
    assert.match(show.parameters, new RegExp(`^num_ctx\\s+${config.max_position_embeddings}$`, 'm'));
    assert.match(show.modelfile, /^FROM /m);
    assert.deepEqual(show.capabilities, ['completion', 'tools']);
    const embed = await ollama.show({ model: EMBED_MODEL });
    conforms(embed, ShowResponse, 'show(embed)');
    assert.deepEqual(embed.capabilities, ['embedding']);
    assert.equal(embed.template, '');
  });

  test('generate, chat, embed, embeddings and version conform; durations are real and context carries on', async () => {
    const r1 = await ollama.generate({
      model: CHAT_MODEL,
      prompt: 'Why is the sky blue?',
      stream: false,
      options: { num_predict: 5, temperature: 0 },
    });
    conforms(r1, GenerateResponse, 'generate');
    assert.ok(
      r1.context && r1.context.length === r1.prompt_eval_count + r1.eval_count,
      `context is the prompt's and the answer's ids (${r1.context?.length})`,
    );
    assert.ok(
      r1.eval_duration > 0 &&
        r1.prompt_eval_duration > 0 &&
        r1.load_duration > 0 &&
        r1.total_duration >= r1.eval_duration,
    );
    // The ids sent back are put before the next prompt, so the model reads them as well.
    const fresh = await ollama.generate({
      model: CHAT_MODEL,
      prompt: 'And at night?',
      stream: false,
      options: { num_predict: 3, temperature: 0 },
    });
    const next = await ollama.generate({
      model: CHAT_MODEL,
      prompt: 'And at night?',
      context: r1.context,
      stream: false,
      options: { num_predict: 3, temperature: 0 },
    });
    assert.equal(next.prompt_eval_count, r1.context!.length + fresh.prompt_eval_count);
    assert.equal(
      next.context!.slice(0, r1.context!.length).join(),
      r1.context!.join(),
      'the new context starts with the old',
    );
    const raw = await ollama.generate({
      model: CHAT_MODEL,
      prompt: 'raw text',
      raw: true,
      stream: false,
      options: { num_predict: 2, temperature: 0 },
    });
    conforms(raw, GenerateResponse, 'generate(raw)');
    assert.equal(raw.context, undefined, 'raw returns no context, as Ollama');

    const lines = [];
    for await (const p of await ollama.generate({
      model: CHAT_MODEL,
      prompt: 'Count to twenty.',
      stream: true,
      options: { num_predict: 40, temperature: 0 },
    }))
      lines.push(p);
    for (const [i, l] of lines.entries()) conforms(l, GenerateResponse, `generate stream line ${i}`);
    const stamps = lines.map((l) => String(l.created_at));
    assert.ok(
      stamps.every((s) => /\.\d{3}/.test(s)),
      'created_at has sub-second precision',
    );
    assert.ok(
      new Set(stamps).size > 1,
      `created_at changes along the stream (${new Set(stamps).size} distinct of ${stamps.length})`,
    );
    assert.ok(
      stamps.every((s, i) => i === 0 || s >= stamps[i - 1]!),
      'and never goes back',
    );
    assert.ok(lines.at(-1)!.context!.length > 0, 'the last line carries the context');

    const chat = await ollama.chat({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      stream: false,
      options: { num_predict: 3, temperature: 0 },
    });
    conforms(chat, ChatResponse, 'chat');
    for await (const p of await ollama.chat({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      options: { num_predict: 3, temperature: 0.7 },
    }))
      conforms(p, ChatResponse, 'chat stream line');
    conforms(await ollama.embed({ model: EMBED_MODEL, input: ['a', 'b'] }), EmbedResponse, 'embed');
    conforms(await ollama.embeddings({ model: EMBED_MODEL, prompt: 'a' }), EmbeddingResponse, 'embeddings');
    const version = (await (await fetch(new URL('/api/version', edge.url))).json()) as Record<string, unknown>;
    conforms(version, { version: req('string') }, 'version');
  });

  test('a cache hit reports its own durations, never eval_duration 0 with tokens, and keeps the context', async () => {
    const body = { model: CHAT_MODEL, prompt: 'cache me', stream: false, options: { num_predict: 6, temperature: 0 } };
    const post = () =>
      fetch(new URL('/api/generate', edge.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${edge.apiKey}` },
        body: JSON.stringify(body),
      });
    const miss = await post();
    const first = (await miss.json()) as Final;
    const hit = await post();
    assert.equal(hit.headers.get('x-npu-relay-cache'), 'HIT');
    const again = (await hit.json()) as Final;
    conforms(again, GenerateResponse, 'generate(hit)');
    assert.equal(again.eval_count, first.eval_count);
    assert.ok(
      again.eval_count > 0 && again.eval_duration > 0 && again.prompt_eval_duration > 0,
      `a hit's durations: ${again.eval_duration} ns for ${again.eval_count} tokens`,
    );
    assert.ok(Number.isFinite(again.eval_count / (again.eval_duration / 1e9)), 'tokens per second is a number');
    assert.equal(again.load_duration, 0, 'a hit loads nothing');
    assert.deepEqual(again.context, first.context, 'the context is replayed too');
    // A streamed hit ends the same way.
    const streamed = await fetch(new URL('/api/generate', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${edge.apiKey}` },
      body: JSON.stringify({ ...body, stream: true }),
    });
    assert.equal(streamed.headers.get('x-npu-relay-cache'), 'HIT');
    const last = JSON.parse((await streamed.text()).trim().split('\n').at(-1)!) as Final;
    assert.ok(last.eval_duration > 0);
    assert.deepEqual(last.context, first.context);
  });

  test('/api/ps: only loaded models, with their memory, keep-alive and context; empty after keep_alive 0; a cold load is timed', async () => {
    await manager.generate({
      model: CHAT_MODEL,
      prompt: 'x',
      stream: false,
      keep_alive: 0,
      options: { num_predict: 1, temperature: 0.5 },
    });
    await manager.embed({ model: EMBED_MODEL, input: 'x', keep_alive: 0 });
    await waitFor('/api/ps to be empty after keep_alive 0', async () => (await ollama.ps()).models.length === 0, {
      timeoutMs: 5000,
    });

    const cold = await ollama.generate({
      model: CHAT_MODEL,
      prompt: 'cold',
      stream: false,
      keep_alive: '10m',
      options: { num_predict: 2, temperature: 0.5 },
    });
    const warm = await ollama.generate({
      model: CHAT_MODEL,
      prompt: 'warm',
      stream: false,
      keep_alive: '10m',
      options: { num_predict: 2, temperature: 0.5 },
    });
    assert.ok(cold.load_duration > 1_000_000, `a cold load takes its time (${cold.load_duration} ns)`);
    assert.ok(
      warm.load_duration < cold.load_duration / 10,
      `a loaded model does not (${warm.load_duration} ns against ${cold.load_duration} ns)`,
    );

    const ps = await waitFor('the chat model in /api/ps', async () => {
      const r = await ollama.ps();
      return r.models.length > 0 && r;
    });
    assert.deepEqual(
      ps.models.map((m) => m.name),
      [`${CHAT_MODEL}:latest`],
      'only the loaded model',
    );
    const m = ps.models[0]!;
    conforms(m, ProcessModelResponse, 'ps');
    const weights = (await filesOf(path.join(modelsDir, CHAT_MODEL, 'onnx')))
      .filter((f) => /model\.onnx(\.data)?$/.test(f.file))
      .reduce((n, f) => n + f.size, 0);
    assert.equal(m.size, weights, 'size is the memory its weights take');
    assert.equal(m.size_vram, 0, 'on the CPU nothing is in accelerator memory');
    const expires = new Date(m.expires_at).getTime() - Date.now();
    assert.ok(
      expires > 9 * 60_000 && expires <= 10 * 60_000,
      `expires_at follows keep_alive 10m (${expires} ms from now)`,
    );
    assert.equal((m as unknown as { context_length: number }).context_length, 2048);
    const listed = (await ollama.list()).models.find((x) => x.name === m.name)!;
    assert.equal(m.digest, listed.digest);

    await manager.generate({
      model: CHAT_MODEL,
      prompt: 'x',
      stream: false,
      keep_alive: 0,
      options: { num_predict: 1, temperature: 0.5 },
    });
    await waitFor('/api/ps to be empty after keep_alive 0', async () => (await ollama.ps()).models.length === 0, {
      timeoutMs: 5000,
    });
    // Embeddings time their load too.
    const embedCold = await manager.embed({ model: EMBED_MODEL, input: 'cold', keep_alive: 0 });
    assert.ok(embedCold.load_duration > 1_000_000, `an embedding model's cold load (${embedCold.load_duration} ns)`);
  });

  test('the digest changes when the files change, and the size with them', async () => {
    const before = (await ollama.list()).models.find((m) => m.name === `${CHAT_MODEL}:latest`)!;
    const file = path.join(modelsDir, CHAT_MODEL, 'generation_config.json');
    await chmod(file, 0o644);
    const text = await readFile(file, 'utf8');
    await writeFile(file, `${text}\n`);
    await stopAgent();
    await startAgent();
    const after = await waitFor('the restarted agent', async () =>
      (await ollama.list()).models.find((m) => m.name === `${CHAT_MODEL}:latest`),
    );
    assert.notEqual(after.digest, before.digest);
    assert.equal(after.size, before.size + 1);
    assert.ok(new Date(after.modified_at) > new Date(before.modified_at));
    // The same files give the same digest.
    await stopAgent();
    await startAgent();
    const same = await waitFor('the restarted agent', async () =>
      (await ollama.list()).models.find((m) => m.name === `${CHAT_MODEL}:latest`),
    );
    assert.equal(same.digest, after.digest);
  });
});

/**
 * OpenAI's Batch API on the real stack (sqld, the Worker in workerd with its R2 bucket and Durable Objects, an agent
 * on ONNX Runtime over the tunnel), called through the official `openai` client unchanged: files.create,
 * batches.create / retrieve / list / cancel, files.content; output lines one to one with the input's custom_ids;
 * one usage row per line, marked with its batch; OpenAI's object shapes (checked against its published OpenAPI
 * document when ../shared/specs has it); per-tenant files and batches; bad input refused in OpenAI's shape; a batch
 * that outlives its completion window ends `expired` as OpenAI's does.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import OpenAI, { toFile } from 'openai';
import type { Agent } from '../node/agent.ts';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { CHAT_MODEL, EMBED_MODEL } from './support/fixtures.ts';
import { OpenApiSpec } from './support/openapi-spec.ts';
import { PacedEngine } from './support/paced-engine.ts';
import { connectPeer } from './support/scripted-peer.ts';
import { createOrtEngine, relayStack, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const SPEC_PATH = path.join(PROJECT_ROOT, '../shared/specs/openai-openapi.yaml');
const spec = existsSync(SPEC_PATH) ? new OpenApiSpec(SPEC_PATH) : undefined;

/** `store` on a response is the relay's, as in test/responses.test.ts. */
function conforms(value: unknown, schema: string, extensions: string[] = []): void {
  if (!spec) return;
  assert.deepEqual(spec.check(value, schema, extensions), [], `${schema}: ${JSON.stringify(value).slice(0, 400)}`);
}

const jsonl = (lines: unknown[]) => `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`;

function chatLine(i: number) {
  return {
    custom_id: `req-${i}`,
    method: 'POST',
    url: '/v1/chat/completions',
    body: {
      model: CHAT_MODEL,
      max_tokens: 3,
      temperature: 0,
      messages: [{ role: 'user', content: `Count to ${i}.` }],
    },
  };
}

async function usageRows(edge: TestEdge, batchId: string) {
  const db = createClient({ url: edge.sqld.url });
  try {
    const r = await db.execute({
      sql: `SELECT id, endpoint, status, outcome, prompt_tokens, completion_tokens, requests FROM usage WHERE batch_id = ?`,
      args: [batchId],
    });
    return r.rows as unknown as Array<{ id: string; endpoint: string; status: number; outcome: string }>;
  } finally {
    db.close();
  }
}

/** A list as the wire carries it (the client's pages wrap it). */
async function raw(edge: TestEdge, p: string): Promise<unknown> {
  const res = await fetch(new URL(p, edge.url), { headers: { authorization: `Bearer ${edge.apiKey}` } });
  assert.equal(res.status, 200);
  return res.json();
}

/** Uploads `lines` as a batch input file and starts a batch on it, as a client of the Batch API does. */
async function submit(
  openai: OpenAI,
  lines: unknown[],
  name: string,
  endpoint: OpenAI.BatchCreateParams['endpoint'] = '/v1/chat/completions',
) {
  const file = await openai.files.create({ file: await toFile(Buffer.from(jsonl(lines)), name), purpose: 'batch' });
  const batch = await openai.batches.create({
    input_file_id: file.id,
    endpoint,
    completion_window: '24h',
  });
  return { file, batch };
}

async function finished(openai: OpenAI, id: string, timeoutMs = 120_000) {
  return waitFor(
    `batch ${id} to end`,
    async () => {
      const b = await openai.batches.retrieve(id);
      return ['completed', 'failed', 'expired', 'cancelled'].includes(b.status) ? b : undefined;
    },
    { timeoutMs, intervalMs: 200 },
  );
}

async function contentLines(openai: OpenAI, fileId: string | null | undefined) {
  if (!fileId) return [];
  const text = await (await openai.files.content(fileId)).text();
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { id: string; custom_id: string; response: any; error: any });
}

describe('Batch API', () => {
  let edge: TestEdge;
  let agent: Agent;
  let openai: OpenAI;

  before(async () => {
    edge = await startTestEdge();
    agent = await startTestAgent(edge, await createOrtEngine());
    openai = edge.openai();
  });
  after(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  test('a chat batch: every custom_id answered once, a bad line in the error file, one batch usage row per line', async () => {
    const lines = Array.from({ length: 24 }, (_, i) => chatLine(i));
    // A line whose body its endpoint refuses: a 400 in the error file, the rest unaffected.
    lines.push({ ...chatLine(99), custom_id: 'bad-line', body: { model: CHAT_MODEL } as never });
    const content = jsonl(lines);
    const file = await openai.files.create({ file: await toFile(Buffer.from(content), 'in.jsonl'), purpose: 'batch' });
    conforms(file, 'OpenAIFile');
    assert.equal(file.purpose, 'batch');
    assert.equal(file.bytes, Buffer.byteLength(content));
    assert.equal((await openai.files.retrieve(file.id)).id, file.id);
    assert.equal(await (await openai.files.content(file.id)).text(), content);

    const created = await openai.batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
      metadata: { purpose: 'test' },
    });
    conforms(created, 'Batch');
    assert.ok(['validating', 'in_progress'].includes(created.status));
    const listed = await openai.batches.list();
    assert.ok(listed.data.some((b) => b.id === created.id));
    conforms(await raw(edge, '/v1/batches'), 'ListBatchesResponse');

    const done = await finished(openai, created.id);
    conforms(done, 'Batch');
    assert.equal(done.status, 'completed');
    assert.deepEqual(done.request_counts, { total: 25, completed: 24, failed: 1 });
    assert.deepEqual(done.metadata, { purpose: 'test' });
    assert.ok(done.in_progress_at && done.completed_at && done.output_file_id && done.error_file_id);

    const out = await contentLines(openai, done.output_file_id);
    assert.deepEqual(
      out.map((l) => l.custom_id).sort(),
      lines
        .slice(0, 24)
        .map((l) => l.custom_id)
        .sort(),
    );
    for (const l of out) {
      assert.equal(l.response.status_code, 200);
      assert.equal(l.response.body.object, 'chat.completion');
      assert.equal(l.error, null);
      assert.ok(l.response.body.usage.completion_tokens > 0);
    }
    const errors = await contentLines(openai, done.error_file_id);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.custom_id, 'bad-line');
    assert.equal(errors[0]!.response.status_code, 400);
    assert.equal(errors[0]!.response.body.error.param, 'messages');

    const outFile = await openai.files.retrieve(done.output_file_id!);
    conforms(outFile, 'OpenAIFile');
    assert.equal(outFile.purpose, 'batch_output');
    assert.equal(outFile.bytes, Buffer.byteLength(await (await openai.files.content(outFile.id)).text()));

    const rows = await waitFor('a usage row per line', async () => {
      const r = await usageRows(edge, created.id);
      return r.length >= 25 ? r : undefined;
    });
    assert.equal(rows.length, 25, 'one row per line, the refused one included');
    assert.deepEqual(new Set(rows.map((r) => r.id)), new Set([...out, ...errors].map((l) => l.id)));
    assert.ok(rows.every((r) => r.endpoint === 'chat.completions'));
    assert.equal(rows.filter((r) => r.outcome === 'ok').length, 24);
  });

  test('an embeddings batch, and files.list / files.delete', async () => {
    const lines = ['alpha', 'beta', 'gamma'].map((input, i) => ({
      custom_id: `e${i}`,
      method: 'POST',
      url: '/v1/embeddings',
      body: { model: EMBED_MODEL, input },
    }));
    const { file, batch: b } = await submit(openai, lines, 'e.jsonl', '/v1/embeddings');
    const done = await finished(openai, b.id);
    assert.equal(done.status, 'completed');
    const out = await contentLines(openai, done.output_file_id);
    assert.deepEqual(out.map((l) => l.custom_id).sort(), ['e0', 'e1', 'e2']);
    assert.ok(out.every((l) => l.response.body.data[0].embedding.length > 0));

    const files = await openai.files.list();
    assert.ok(files.data.some((f) => f.id === file.id));
    conforms(await raw(edge, '/v1/files'), 'ListFilesResponse');
    const deleted = await openai.files.delete(file.id);
    conforms(deleted, 'DeleteFileResponse');
    assert.equal(deleted.deleted, true);
    await assert.rejects(openai.files.retrieve(file.id), (e: unknown) => e instanceof OpenAI.NotFoundError);
  });

  test('completions and Responses batches', async () => {
    const run = async (endpoint: '/v1/completions' | '/v1/responses', bodies: object[]) => {
      const lines = bodies.map((body, i) => ({ custom_id: `x${i}`, method: 'POST', url: endpoint, body }));
      const { batch: b } = await submit(openai, lines, 'x.jsonl', endpoint);
      const done = await finished(openai, b.id);
      assert.equal(done.status, 'completed', JSON.stringify(done));
      assert.deepEqual(done.request_counts, { total: bodies.length, completed: bodies.length, failed: 0 });
      const out = await contentLines(openai, done.output_file_id);
      assert.deepEqual(out.map((l) => l.custom_id).sort(), lines.map((l) => l.custom_id).sort());
      return out.map((l) => l.response.body);
    };
    const completions = await run('/v1/completions', [
      { model: CHAT_MODEL, prompt: 'Once upon', max_tokens: 3 },
      { model: CHAT_MODEL, prompt: 'In a galaxy', max_tokens: 3 },
    ]);
    assert.ok(completions.every((c) => c.object === 'text_completion' && typeof c.choices[0].text === 'string'));
    const responses = await run('/v1/responses', [
      { model: CHAT_MODEL, input: 'Hello', max_output_tokens: 3 },
      { model: CHAT_MODEL, input: 'Goodbye', max_output_tokens: 3, store: false },
    ]);
    assert.ok(responses.every((r) => r.object === 'response' && r.usage.output_tokens > 0));
    conforms(responses[0], 'Response', ['store']);
  });

  test('a cancelled batch ends cancelled, each line once in the output or error file', async () => {
    const lines = Array.from({ length: 30 }, (_, i) => ({
      ...chatLine(i),
      body: { ...chatLine(i).body, max_tokens: 24 },
    }));
    const { batch: b } = await submit(openai, lines, 'c.jsonl');
    await waitFor('a line done', async () => {
      const r = await openai.batches.retrieve(b.id);
      return r.request_counts!.completed > 0 ? r : undefined;
    });
    const cancelling = await openai.batches.cancel(b.id);
    assert.ok(['cancelling', 'cancelled'].includes(cancelling.status));
    const done = await finished(openai, b.id);
    assert.equal(done.status, 'cancelled');
    assert.ok(done.cancelled_at && done.cancelling_at);
    const out = await contentLines(openai, done.output_file_id);
    const errors = await contentLines(openai, done.error_file_id);
    assert.ok(out.length > 0 && errors.length > 0, `${out.length} answered, ${errors.length} cancelled`);
    assert.ok(errors.every((l) => l.error.code === 'batch_cancelled'));
    const ids = [...out, ...errors].map((l) => l.custom_id);
    assert.equal(new Set(ids).size, 30);
    assert.equal(ids.length, 30);
    assert.deepEqual(done.request_counts, { total: 30, completed: out.length, failed: errors.length });
    // Only the lines that ran have usage rows.
    const rows = await waitFor('rows of the lines that ran', async () => {
      const r = await usageRows(edge, b.id);
      return r.length >= out.length ? r : undefined;
    });
    assert.equal(rows.length, out.length);
  });

  test("files and batches are the tenant's: another tenant's key cannot see, read, use or cancel them", async () => {
    const { key } = await edge.createKey({ name: 'other', tenant: 'someone-else' });
    const other = edge.openai({ apiKey: key });
    const { file, batch: b } = await submit(openai, [chatLine(1)], 'mine.jsonl');
    const notFound = (e: unknown) => e instanceof OpenAI.NotFoundError;
    await assert.rejects(other.files.retrieve(file.id), notFound);
    await assert.rejects(other.files.content(file.id), notFound);
    await assert.rejects(other.files.delete(file.id), notFound);
    await assert.rejects(other.batches.retrieve(b.id), notFound);
    await assert.rejects(other.batches.cancel(b.id), notFound);
    await assert.rejects(
      other.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' }),
      notFound,
    );
    assert.ok(!(await other.batches.list()).data.some((x) => x.id === b.id));
    assert.ok(!(await other.files.list()).data.some((x) => x.id === file.id));
    assert.equal((await finished(openai, b.id)).status, 'completed');
  });

  test("lines reach the agent as class 'batch' under their own ids; a line whose agent fails is retried under the same id, one row", async () => {
    const seen: Array<{ id: string; priority?: string; content: string }> = [];
    let failedOnce = false;
    const peer = await connectPeer(
      edge,
      { agentId: 'peer', models: [{ id: 'peer-chat', kind: 'chat', device: 'CPU' }] },
      (frame, ws) => {
        if (frame.type !== 'request') return;
        const f = frame as unknown as { id: string; priority?: string; body: { messages: Array<{ content: string }> } };
        const content = f.body.messages.at(-1)!.content;
        seen.push({ id: f.id, content, ...(f.priority !== undefined ? { priority: f.priority } : {}) });
        if (content === 'p1' && !failedOnce) {
          failedOnce = true;
          ws.send(
            JSON.stringify({ type: 'error', id: f.id, code: 'agent_gone', message: 'the model process crashed' }),
          );
          return;
        }
        ws.send(JSON.stringify({ type: 'chunk', id: f.id, text: `re: ${content}`, tokens: 2, promptTokens: 5 }));
        const usage = { promptTokens: 5, completionTokens: 2 };
        ws.send(JSON.stringify({ type: 'end', id: f.id, finishReason: 'stop', usage, device: 'CPU', durationMs: 1 }));
      },
    );
    try {
      const lines = ['p0', 'p1', 'p2'].map((content) => ({
        custom_id: content,
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model: 'peer-chat', messages: [{ role: 'user', content }] },
      }));
      const { batch: b } = await submit(openai, lines, 'p.jsonl');
      const done = await finished(openai, b.id);
      assert.deepEqual(done.request_counts, { total: 3, completed: 3, failed: 0 });
      await openai.chat.completions.create({
        model: 'peer-chat',
        messages: [{ role: 'user', content: 'interactive' }],
      });

      const batchFrames = seen.filter((f) => f.content !== 'interactive');
      assert.equal(batchFrames.length, 4, 'three lines, one of them twice');
      assert.ok(batchFrames.every((f) => f.priority === 'batch' && f.id.startsWith('batch_req_')));
      const p1 = batchFrames.filter((f) => f.content === 'p1');
      assert.equal(p1.length, 2);
      assert.equal(p1[0]!.id, p1[1]!.id, 'the retry has the id of the first attempt');
      assert.equal(seen.find((f) => f.content === 'interactive')!.priority, undefined);

      const out = await contentLines(openai, done.output_file_id);
      assert.deepEqual(out.map((l) => [l.custom_id, l.response.body.choices[0].message.content]).sort(), [
        ['p0', 're: p0'],
        ['p1', 're: p1'],
        ['p2', 're: p2'],
      ]);
      const rows = await waitFor('the rows of the lines', async () => {
        const r = await usageRows(edge, b.id);
        return r.length === 3 && r.every((x) => x.outcome === 'ok') ? r : undefined;
      });
      assert.equal(rows.find((r) => r.id === p1[0]!.id)?.status, 200, "the failed attempt's row was replaced");
    } finally {
      peer.close();
    }
  });

  test("a batch's lines count against its key's budget: once spent, lines wait (not fail) and the key's other requests are refused", async () => {
    const { key } = await edge.createKey({ name: 'budgeted', tenant: 'budget-tenant', budget: 60 });
    const client = edge.openai({ apiKey: key });
    const peer = await connectPeer(
      edge,
      { agentId: 'budget-peer', models: [{ id: 'budget-chat', kind: 'chat', device: 'CPU' }] },
      (frame, ws) => {
        if (frame.type !== 'request') return;
        const usage = { promptTokens: 6, completionTokens: 2 };
        ws.send(JSON.stringify({ type: 'chunk', id: frame.id, text: 'ok', tokens: 2, promptTokens: 6 }));
        ws.send(
          JSON.stringify({ type: 'end', id: frame.id, finishReason: 'stop', usage, device: 'CPU', durationMs: 1 }),
        );
      },
    );
    try {
      const lines = Array.from({ length: 12 }, (_, i) => ({
        custom_id: `b${i}`,
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model: 'budget-chat', max_tokens: 2, messages: [{ role: 'user', content: `q${i}` }] },
      }));
      const { batch: b } = await submit(client, lines, 'q.jsonl');
      // 8 tokens a line against a 60-token budget: a few lines run, then the rest wait for budget that never comes.
      await waitFor(
        'the budget to run out under the batch',
        async () => {
          const r = await client.batches.retrieve(b.id);
          const c = r.request_counts!;
          const refused = (await usageRows(edge, b.id)).some((x) => x.status === 429);
          return c.completed > 0 && refused ? r : undefined;
        },
        { timeoutMs: 20_000, intervalMs: 500 },
      );
      // Lines that were running when the budget ran out finish; then nothing moves.
      await new Promise((r) => setTimeout(r, 2000));
      const settled = await client.batches.retrieve(b.id);
      assert.ok(settled.request_counts!.completed < 12);
      await new Promise((r) => setTimeout(r, 3000));
      const later = await client.batches.retrieve(b.id);
      assert.equal(later.status, 'in_progress');
      assert.equal(later.request_counts!.completed, settled.request_counts!.completed, 'no line ran past the budget');
      assert.equal(later.request_counts!.failed, 0, 'lines over the budget wait rather than fail');
      // One row per line tried: those that ran, and those the budget refused (their last attempt's row).
      const rows = await usageRows(edge, b.id);
      assert.equal(rows.filter((x) => x.outcome === 'ok').length, later.request_counts!.completed);
      assert.ok(rows.length <= 12);
      assert.ok(rows.filter((x) => x.outcome !== 'ok').every((x) => x.status === 429));
      await assert.rejects(
        client.chat.completions.create({ model: 'budget-chat', messages: [{ role: 'user', content: 'and me?' }] }),
        (e: unknown) =>
          e instanceof OpenAI.RateLimitError && (e.error as { code?: string }).code === 'insufficient_quota',
      );
      const cancelled = await client.batches.cancel(b.id);
      assert.ok(['cancelling', 'cancelled'].includes(cancelled.status));
      const done = await finished(client, b.id);
      assert.equal(done.status, 'cancelled');
      assert.equal(done.request_counts!.completed + done.request_counts!.failed, 12);
      console.log(`budget 60: ${done.request_counts!.completed} of 12 lines ran (8 tokens each), the rest cancelled`);
    } finally {
      peer.close();
    }
  });

  test('like stored responses, a same-tenant key scoped to other models does not see a batch of a model outside its scope, nor its files', async () => {
    const { key: full } = await edge.createKey({ name: 'full', tenant: 'scope-tenant' });
    const { key: scoped } = await edge.createKey({ name: 'scoped', tenant: 'scope-tenant', models: [EMBED_MODEL] });
    const mine = edge.openai({ apiKey: full });
    const narrow = edge.openai({ apiKey: scoped });
    const { file, batch: b } = await submit(mine, [chatLine(7)], 's.jsonl');
    const done = await finished(mine, b.id);
    assert.equal(done.status, 'completed');
    const notFound = (e: unknown) => e instanceof OpenAI.NotFoundError;
    await assert.rejects(narrow.batches.retrieve(b.id), notFound);
    await assert.rejects(narrow.batches.cancel(b.id), notFound);
    await assert.rejects(narrow.files.retrieve(done.output_file_id!), notFound);
    await assert.rejects(narrow.files.content(done.output_file_id!), notFound);
    await assert.rejects(narrow.files.delete(done.output_file_id!), notFound);
    assert.ok(!(await narrow.batches.list()).data.some((x) => x.id === b.id));
    assert.ok(!(await narrow.files.list()).data.some((x) => x.id === done.output_file_id));
    // The tenant's upload has no model: both keys see it; the unrestricted key sees everything.
    assert.equal((await narrow.files.retrieve(file.id)).id, file.id);
    assert.equal((await mine.files.retrieve(done.output_file_id!)).id, done.output_file_id);
    assert.ok((await mine.batches.list()).data.some((x) => x.id === b.id));
  });

  test('bad input is refused in OpenAI shape', async () => {
    const bad = async (p: Promise<unknown>, status: number, param?: string) =>
      assert.rejects(p, (e: unknown) => {
        assert.ok(e instanceof OpenAI.APIError, String(e));
        assert.equal(e.status, status, e.message);
        if (param) assert.equal(e.param, param, e.message);
        return true;
      });
    await bad(
      openai.files.create({ file: await toFile(Buffer.from('{}\n'), 'x.jsonl'), purpose: 'fine-tune' }),
      400,
      'purpose',
    );
    const file = await openai.files.create({
      file: await toFile(Buffer.from(jsonl([chatLine(1)])), 'ok.jsonl'),
      purpose: 'batch',
    });
    await bad(
      openai.batches.create({ input_file_id: file.id, endpoint: '/v1/moderations' as never, completion_window: '24h' }),
      400,
      'endpoint',
    );
    await bad(
      openai.batches.create({
        input_file_id: file.id,
        endpoint: '/v1/chat/completions',
        completion_window: '1h' as never,
      }),
      400,
      'completion_window',
    );
    await bad(
      openai.batches.create({ input_file_id: 'file-nope', endpoint: '/v1/chat/completions', completion_window: '24h' }),
      404,
      'input_file_id',
    );
    await bad(openai.batches.retrieve('batch_nope'), 404);
    // A file whose lines break the format: the batch fails validation with each problem's line.
    const broken = jsonl([chatLine(1), chatLine(1), { ...chatLine(2), url: '/v1/embeddings' }]) + 'not json\n';
    const bf = await openai.files.create({ file: await toFile(Buffer.from(broken), 'b.jsonl'), purpose: 'batch' });
    const b = await openai.batches.create({
      input_file_id: bf.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });
    const failed = await finished(openai, b.id);
    conforms(failed, 'Batch');
    assert.equal(failed.status, 'failed');
    assert.deepEqual(
      failed.errors!.data!.map((e) => [e.code, e.line]),
      [
        ['duplicate_custom_id', 2],
        ['mismatched_endpoint', 3],
        ['invalid_json_line', 4],
      ],
    );
    // A file larger than the limit never reaches the bucket.
    const res = await fetch(new URL('/v1/files', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'multipart/form-data; boundary=x' },
      body: `--x\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--x\r\nContent-Disposition: form-data; name="file"; filename="f.jsonl"\r\n\r\n${'a'.repeat(40 * 1024 * 1024)}\r\n--x--\r\n`,
    });
    assert.equal(res.status, 413);
    assert.equal(((await res.json()) as { error: { type: string } }).error.type, 'invalid_request_error');
  });
});

describe('Batch API: the completion window', () => {
  // A 4-second window (the test-only knob; the batch still says 24h) and a device at 40 ms a token, one request at
  // a time: about two lines a second run, so most of a 16-line batch is left when the window closes.
  const stack = relayStack({
    vars: { NPU_RELAY_TEST_BATCH_WINDOW_S: '4' },
    serve: (engine) => new PacedEngine(engine, 40),
    agent: { scheduler: { concurrency: { CPU: 1 }, defaultConcurrency: 1 } },
  });
  let openai: OpenAI;
  before(() => {
    openai = stack.edge.openai();
  });

  test('a batch not finished within its window ends expired: finished lines in the output file, the rest batch_expired', async () => {
    const lines = Array.from({ length: 16 }, (_, i) => ({
      ...chatLine(i),
      body: { ...chatLine(i).body, max_tokens: 12 },
    }));
    const { batch: b } = await submit(openai, lines, 'slow.jsonl');
    assert.equal(b.completion_window, '24h');
    assert.ok(b.expires_at! - b.created_at <= 4, 'the window the knob set');
    const done = await finished(openai, b.id, 60_000);
    conforms(done, 'Batch');
    assert.equal(done.status, 'expired');
    assert.ok(done.expired_at && done.expired_at >= done.expires_at!, 'expired at or after its expiry time');
    assert.equal(done.completed_at ?? null, null);
    const out = await contentLines(openai, done.output_file_id);
    const errors = await contentLines(openai, done.error_file_id);
    assert.ok(out.length > 0, 'lines finished in the window are in the output file');
    assert.ok(errors.length > 0, 'the lines left are in the error file');
    assert.ok(out.every((l) => l.response.status_code === 200 && l.error === null));
    for (const l of errors) {
      assert.equal(l.response, null);
      assert.equal(l.error.code, 'batch_expired');
      assert.match(l.error.message, /completion window/);
    }
    // Every line ends exactly once.
    const ids = [...out, ...errors].map((l) => l.custom_id).sort();
    assert.deepEqual(ids, lines.map((l) => l.custom_id).sort());
    assert.deepEqual(done.request_counts, { total: 16, completed: out.length, failed: errors.length });
    // Only lines that ran have usage rows (an expired line is never charged), and none started after the window.
    const rows = await waitFor('rows of the lines that ran', async () => {
      const r = await usageRows(stack.edge, b.id);
      return r.length >= out.length ? r : undefined;
    });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await usageRows(stack.edge, b.id)).length, out.length);
    assert.equal(rows.length, out.length);
    const db = createClient({ url: stack.edge.sqld.url });
    try {
      const late = await db.execute({
        sql: 'SELECT count(*) AS n FROM usage WHERE batch_id = ? AND at > ?',
        // A second's margin: the desk's clock and the hub's stamp of the row are not one instant.
        args: [b.id, done.expires_at! * 1000 + 1000],
      });
      assert.equal(Number(late.rows[0]!.n), 0, 'no line started after the window closed');
    } finally {
      db.close();
    }
  });
});

/**
 * The baseline the relay is measured against: the agent's engine answering OpenAI chat requests over plain
 * node:http on loopback, with no Worker, Durable Object or tunnel in between. It validates and maps the request
 * with the same shared schema the edge uses, so the difference between the two paths is the relay itself.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ChatCompletionRequest, chatTaskFromOpenAI } from '../../shared/api/openai.ts';
import type { Engine } from '../../node/engines/engine.ts';

export interface DirectServer {
  url: URL;
  stop(): Promise<void>;
}

const MAX_BODY_BYTES = 1024 * 1024;

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of req as AsyncIterable<Buffer>) {
    size += part.length;
    if (size > MAX_BODY_BYTES) throw new Error(`request body over ${MAX_BODY_BYTES} bytes`);
    parts.push(part);
  }
  return Buffer.concat(parts).toString('utf8');
}

function fail(res: ServerResponse, status: number, message: string): void {
  res
    .writeHead(status, { 'content-type': 'application/json' })
    .end(JSON.stringify({ error: { message, type: 'invalid_request_error', param: null, code: null } }));
}

/** Writes and waits for the socket to drain when its buffer is full, so a slow reader slows the engine down. */
async function write(res: ServerResponse, text: string): Promise<void> {
  if (!res.write(text)) await once(res, 'drain');
}

async function chat(engine: Engine, req: IncomingMessage, res: ServerResponse, counter: { n: number }): Promise<void> {
  const parsed = ChatCompletionRequest.safeParse(JSON.parse(await readBody(req)));
  if (!parsed.success) return fail(res, 400, parsed.error.issues[0]?.message ?? 'invalid request');
  const body = parsed.data;
  const task = chatTaskFromOpenAI(body);
  const meta = {
    id: `chatcmpl-direct-${++counter.n}`,
    object: 'chat.completion.chunk',
    created: Math.floor(Date.now() / 1000),
    model: body.model,
    system_fingerprint: null,
  };
  const controller = new AbortController();
  res.once('close', () => controller.abort('client disconnected'));

  if (body.stream) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
    });
    const event = (delta: Record<string, string>, finish: string | null) =>
      `data: ${JSON.stringify({ ...meta, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] })}\n\n`;
    await write(res, event({ role: 'assistant', content: '' }, null));
    for await (const ev of engine.generate(task, controller.signal)) {
      if (ev.type === 'delta') await write(res, event({ content: ev.text }, null));
      else if (ev.type === 'done')
        await write(res, event({}, ev.finishReason === 'length' ? 'length' : 'stop') + 'data: [DONE]\n\n');
    }
    res.end();
    return;
  }
  let text = '';
  for await (const ev of engine.generate(task, controller.signal)) {
    if (ev.type === 'delta') {
      text += ev.text;
      continue;
    }
    if (ev.type !== 'done') continue;
    const { promptTokens, completionTokens } = ev.usage;
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        id: meta.id,
        object: 'chat.completion',
        created: meta.created,
        model: body.model,
        system_fingerprint: null,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: text, refusal: null },
            logprobs: null,
            finish_reason: ev.finishReason === 'length' ? 'length' : 'stop',
          },
        ],
        usage: {
          prompt_tokens: promptTokens,
          completion_tokens: completionTokens,
          total_tokens: promptTokens + completionTokens,
        },
      }),
    );
  }
}

/** Serves `POST /v1/chat/completions` from `engine` on 127.0.0.1, on an ephemeral port. */
export async function startDirectServer(engine: Engine): Promise<DirectServer> {
  const counter = { n: 0 };
  const server: Server = createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/v1/chat/completions')
      return fail(res, 404, `no route for ${req.method} ${req.url}`);
    chat(engine, req, res, counter).catch((err: Error) => {
      if (!res.headersSent) fail(res, 500, err.message);
      else res.destroy(err);
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: new URL(`http://127.0.0.1:${port}`),
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * A Chrome DevTools protocol session with one isolate of the edge, over workerd's V8 inspector (which Miniflare
 * opens with `inspectorPort`): the heap sampler (isolate-heap.ts) and the CPU profiler (test/bench/relay-profile.ts)
 * both speak through it.
 */
import WebSocket from 'ws';

export interface InspectorSession {
  /**
   * Sends one method and waits for its answer. workerd reads inspector messages only while its isolate has something
   * to run, so an idle edge would leave the call unanswered: `wake` (a request to the edge, such as GET /health) is
   * called every 100 ms until the answer comes.
   */
  call<T>(method: string, params?: Record<string, unknown>): Promise<T>;
  close(): void;
}

/** Connects to the inspector target of the worker named `worker` (Miniflare names it `core:user:<name>`). */
export async function openInspector(
  inspectorPort: number,
  worker: string,
  wake: () => Promise<unknown>,
): Promise<InspectorSession> {
  const targets = (await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json()) as Array<{
    id?: string;
    title?: string;
    webSocketDebuggerUrl?: string;
  }>;
  // Miniflare runs workers of its own beside ours: attaching to one of those would measure the wrong isolate.
  const target = targets.find((t) => t.id === `core:user:${worker}`);
  if (!target?.webSocketDebuggerUrl)
    throw new Error(`no inspector target for '${worker}' on port ${inspectorPort}: ${JSON.stringify(targets)}`);
  const socket = new WebSocket(target.webSocketDebuggerUrl, { maxPayload: 1 << 30 });
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  let nextId = 1;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  socket.on('message', (data) => {
    const message = JSON.parse(String(data)) as { id?: number; result?: unknown; error?: { message: string } };
    const call = message.id === undefined ? undefined : waiting.get(message.id);
    if (!call) return;
    waiting.delete(message.id!);
    if (message.error) call.reject(new Error(message.error.message));
    else call.resolve(message.result);
  });
  return {
    call: async <T>(method: string, params?: Record<string, unknown>): Promise<T> => {
      const answer = new Promise<T>((resolve, reject) => {
        const id = nextId++;
        waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
        socket.send(JSON.stringify({ id, method, ...(params ? { params } : {}) }));
      });
      const waking = setInterval(() => void wake().catch(() => {}), 100);
      try {
        return await answer;
      } finally {
        clearInterval(waking);
      }
    },
    close: () => socket.close(),
  };
}

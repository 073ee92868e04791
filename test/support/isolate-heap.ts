/**
 * The JavaScript heap of the edge's isolate, read over workerd's V8 inspector (the Chrome DevTools protocol that
 * Miniflare opens with `inspectorPort`): what the Worker and its Durable Objects hold after a full garbage
 * collection. Resident memory mixes that with what V8 and the allocator keep for reuse (a heap grown to its working
 * size stays grown), so a leak is told apart by this figure: live objects that keep growing with the requests served.
 */
import WebSocket from 'ws';

export interface IsolateHeap {
  /** MiB of live objects after a full garbage collection, and the heap's size then. */
  sample(): Promise<{ usedMb: number; totalMb: number }>;
  close(): void;
}

/**
 * Connects to the inspector target of the worker named `worker` (Miniflare names it `core:user:<name>`). workerd
 * reads inspector messages only while its isolate has something to run, so an idle edge would leave a sample
 * unanswered: `wake` (a request to the edge, such as GET /health) is called every 100 ms until the answer comes.
 */
export async function openIsolateHeap(
  inspectorPort: number,
  worker: string,
  wake: () => Promise<unknown>,
): Promise<IsolateHeap> {
  const targets = (await (await fetch(`http://127.0.0.1:${inspectorPort}/json/list`)).json()) as Array<{
    id?: string;
    title?: string;
    webSocketDebuggerUrl?: string;
  }>;
  // Miniflare runs workers of its own beside ours: sampling one of those would measure the wrong isolate.
  const target = targets.find((t) => t.id === `core:user:${worker}`);
  if (!target?.webSocketDebuggerUrl)
    throw new Error(`no inspector target for '${worker}' on port ${inspectorPort}: ${JSON.stringify(targets)}`);
  const socket = new WebSocket(target.webSocketDebuggerUrl);
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
  const send = <T>(method: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      socket.send(JSON.stringify({ id, method }));
    });
  const answered = async <T>(method: string): Promise<T> => {
    const answer = send<T>(method);
    const waking = setInterval(() => void wake().catch(() => {}), 100);
    try {
      return await answer;
    } finally {
      clearInterval(waking);
    }
  };
  return {
    sample: async () => {
      await answered('HeapProfiler.collectGarbage');
      const { usedSize, totalSize } = await answered<{ usedSize: number; totalSize: number }>('Runtime.getHeapUsage');
      return { usedMb: usedSize / 2 ** 20, totalMb: totalSize / 2 ** 20 };
    },
    close: () => socket.close(),
  };
}

/**
 * The JavaScript heap of the edge's isolate, read over workerd's V8 inspector: what the Worker and its Durable
 * Objects hold after a full garbage collection. Resident memory mixes that with what V8 and the allocator keep for
 * reuse (a heap grown to its working size stays grown), so a leak is told apart by this figure: live objects that
 * keep growing with the requests served.
 */
import { openInspector } from './inspector.ts';

export interface IsolateHeap {
  /** MiB of live objects after a full garbage collection, and the heap's size then. */
  sample(): Promise<{ usedMb: number; totalMb: number }>;
  close(): void;
}

/** See openInspector for `worker` and `wake`. */
export async function openIsolateHeap(
  inspectorPort: number,
  worker: string,
  wake: () => Promise<unknown>,
): Promise<IsolateHeap> {
  const session = await openInspector(inspectorPort, worker, wake);
  return {
    sample: async () => {
      await session.call('HeapProfiler.collectGarbage');
      const { usedSize, totalSize } = await session.call<{ usedSize: number; totalSize: number }>(
        'Runtime.getHeapUsage',
      );
      return { usedMb: usedSize / 2 ** 20, totalMb: totalSize / 2 ** 20 };
    },
    close: () => session.close(),
  };
}

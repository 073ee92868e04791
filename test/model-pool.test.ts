/**
 * The model pool is pure bookkeeping over loads, so these tests drive it with fake loaders (the real engine's use
 * of it is covered by test/agent-observability.test.ts) and with node:test's mock clock for keep-alives and
 * cooldowns.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { AgentError } from '../node/errors.ts';
import { ModelPool, type LoadResult, type ModelEvent, type ModelPoolOptions } from '../node/models/pool.ts';

interface Fake {
  id: string;
  disposed: boolean;
}

/** A loader whose loads finish when the test says so, counting how often it was called. */
function deferredLoader(id: string, bytes = 10) {
  const calls: Array<(err?: Error) => void> = [];
  const load = () =>
    new Promise<LoadResult<Fake>>((resolve, reject) => {
      calls.push((err) => (err ? reject(err) : resolve({ handle: { id, disposed: false }, bytes, device: 'NPU' })));
    });
  return { load, calls };
}

function instantLoader(id: string, bytes = 10) {
  let count = 0;
  return {
    load: async (): Promise<LoadResult<Fake>> => {
      count++;
      return { handle: { id, disposed: false }, bytes, device: 'CPU' };
    },
    get count() {
      return count;
    },
  };
}

function makePool(options: Partial<ModelPoolOptions<Fake>> = {}) {
  const events: ModelEvent[] = [];
  const disposed: string[] = [];
  const pool = new ModelPool<Fake>({
    dispose: (handle) => {
      handle.disposed = true;
      disposed.push(handle.id);
    },
    onEvent: (e) => events.push(e),
    ...options,
  });
  return {
    pool,
    events,
    disposed,
    unloads: () =>
      events.filter((e) => e.type === 'unload').map((e) => `${e.model}:${(e as { reason: string }).reason}`),
  };
}

/** Lets the pool's pending promise callbacks (disposals, wake-ups) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await tick();
}

describe('ModelPool', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 }));
  afterEach(() => mock.timers.reset());

  test('ten concurrent acquires of a cold model share one load and get the same handle', async () => {
    const { pool, events } = makePool();
    const loader = deferredLoader('m');
    const acquiring = Array.from({ length: 10 }, () => pool.acquire('m', loader.load));
    await settle();
    assert.equal(loader.calls.length, 1, 'one load started');
    loader.calls[0]!();
    const handles = await Promise.all(acquiring);
    assert.ok(handles.every((h) => h === handles[0]));
    assert.deepEqual(
      events.map((e) => e.type),
      ['load-start', 'load-end'],
    );
    const end = events[1] as Extract<ModelEvent, { type: 'load-end' }>;
    assert.equal(end.device, 'NPU');
    assert.equal(end.bytes, 10);
    assert.ok(end.durationMs >= 0);
    assert.equal(pool.models()[0]?.inUse, 10);
    // A warm acquire does not load again.
    await pool.acquire('m', loader.load);
    assert.equal(loader.calls.length, 1);
  });

  test('an idle model is unloaded after its keep-alive, not before; use restarts the clock', async () => {
    const { pool, disposed, unloads } = makePool({ keepAliveMs: 60_000 });
    const loader = instantLoader('m');
    await pool.use('m', loader.load, () => {});
    mock.timers.tick(59_999);
    await settle();
    assert.deepEqual(disposed, []);
    await pool.use('m', loader.load, () => {});
    mock.timers.tick(59_999);
    await settle();
    assert.deepEqual(disposed, [], 'the second use restarted the keep-alive');
    mock.timers.tick(1);
    await settle();
    assert.deepEqual(disposed, ['m']);
    assert.deepEqual(unloads(), ['m:idle']);
    assert.deepEqual(pool.models(), []);
    // The next request loads it again.
    await pool.use('m', loader.load, () => {});
    assert.equal(loader.count, 2);
  });

  test('a model in use is never unloaded by its keep-alive, explicitly, or for memory', async () => {
    const { pool, disposed, events } = makePool({ keepAliveMs: 1000, memoryBudgetBytes: 100 });
    const a = instantLoader('a', 60);
    await pool.acquire('a', a.load, { estimateBytes: () => 60 });
    mock.timers.tick(10_000);
    await settle();
    assert.equal(await pool.unload('a'), false, 'explicit unload refuses a model in use');
    assert.deepEqual(disposed, []);

    // b does not fit next to a, and a is busy: b waits rather than pulling a away.
    const b = instantLoader('b', 60);
    let bLoaded = false;
    const acquiringB = pool.acquire('b', b.load, { estimateBytes: () => 60 }).then((h) => {
      bLoaded = true;
      return h;
    });
    await settle();
    assert.equal(bLoaded, false);
    assert.equal(b.count, 0);
    const waiting = events.find((e) => e.type === 'waiting-for-memory');
    assert.deepEqual(waiting, {
      type: 'waiting-for-memory',
      model: 'b',
      neededBytes: 60,
      usedBytes: 60,
      budgetBytes: 100,
      inUse: ['a'],
    });

    pool.release('a');
    await acquiringB;
    assert.deepEqual(disposed, ['a'], 'released, a made room for b');
    assert.equal(b.count, 1);
  });

  test('the memory budget unloads idle models least recently used first', async () => {
    const { pool, unloads } = makePool({ memoryBudgetBytes: 100 });
    const loaders = Object.fromEntries(['a', 'b', 'c', 'd'].map((id) => [id, instantLoader(id, 40)]));
    const use = async (id: string) => {
      await pool.use(id, loaders[id]!.load, () => {}, { estimateBytes: () => 40 });
      mock.timers.tick(1000);
    };
    await use('a');
    await use('b');
    await use('a'); // a is now more recently used than b
    await use('c'); // 120 > 100: b goes
    assert.deepEqual(unloads(), ['b:budget']);
    await use('d'); // a is older than c
    assert.deepEqual(unloads(), ['b:budget', 'a:budget']);
    assert.deepEqual(
      pool
        .models()
        .map((m) => m.id)
        .sort(),
      ['c', 'd'],
    );
    assert.equal(pool.usedBytes, 80);
  });

  test('an estimate that was too low is corrected after the load, evicting idle models', async () => {
    const { pool, unloads } = makePool({ memoryBudgetBytes: 100 });
    await pool.use('a', instantLoader('a', 50).load, () => {}, { estimateBytes: () => 50 });
    mock.timers.tick(1);
    // Estimated 40 (fits next to a), but turns out to hold 70.
    await pool.use('b', instantLoader('b', 70).load, () => {}, { estimateBytes: () => 40 });
    assert.deepEqual(unloads(), ['a:budget']);
    assert.equal(pool.usedBytes, 70);
  });

  test('a model larger than the whole budget fails at once, naming the sizes and the setting', async () => {
    const { pool } = makePool({ memoryBudgetBytes: 2 ** 30 });
    const loader = instantLoader('huge', 3 * 2 ** 30);
    await assert.rejects(pool.acquire('huge', loader.load, { estimateBytes: () => 3 * 2 ** 30 }), (err: Error) => {
      assert.ok(err instanceof AgentError);
      assert.equal(
        err.message,
        "model 'huge' needs about 3.0 GiB, more than the whole memory budget of 1.0 GiB; raise NPU_RELAY_MEMORY_BUDGET or use a smaller model",
      );
      return true;
    });
    assert.equal(loader.count, 0);
  });

  test('a failed load is not retried during the cooldown: callers fail at once with the reason and the wait', async () => {
    const { pool, events } = makePool({ loadCooldownMs: 30_000 });
    const loader = deferredLoader('broken');
    const first = Array.from({ length: 3 }, () => pool.acquire('broken', loader.load));
    await settle();
    loader.calls[0]!(new AgentError('engine_error', "could not load model 'broken': bad weights"));
    for (const p of first) await assert.rejects(p, { message: "could not load model 'broken': bad weights" });
    assert.equal(loader.calls.length, 1, 'concurrent callers shared the failing load');
    assert.equal(events.filter((e) => e.type === 'load-failed').length, 1);

    mock.timers.tick(12_500);
    await assert.rejects(pool.acquire('broken', loader.load), (err: Error) => {
      assert.ok(err instanceof AgentError);
      assert.equal(err.code, 'engine_error');
      assert.equal(err.message, "could not load model 'broken': bad weights; retrying in 18 s");
      return true;
    });
    assert.equal(loader.calls.length, 1, 'no load during the cooldown');

    mock.timers.tick(17_500);
    const retry = pool.acquire('broken', loader.load);
    await settle();
    assert.equal(loader.calls.length, 2, 'retried once the cooldown is over');
    loader.calls[1]!();
    assert.equal((await retry).id, 'broken');
  });

  test('a non-agent error from a loader becomes an engine error during the cooldown', async () => {
    const { pool } = makePool({ loadCooldownMs: 5000 });
    await assert.rejects(
      pool.acquire('x', () => Promise.reject(new TypeError('boom'))),
      { message: 'boom' },
    );
    await assert.rejects(
      pool.acquire('x', () => Promise.reject(new TypeError('boom'))),
      (err: Error) =>
        err instanceof AgentError && err.code === 'engine_error' && err.message === 'boom; retrying in 5 s',
    );
  });

  test('touch extends a keep-alive, 0 unloads at once, Infinity keeps the model', async () => {
    const { pool, disposed } = makePool({ keepAliveMs: 1000 });
    await pool.use('a', instantLoader('a').load, () => {});
    await pool.use('b', instantLoader('b').load, () => {});
    await pool.use('c', instantLoader('c').load, () => {});
    assert.equal(pool.touch('a', 10_000), true);
    assert.equal(pool.touch('b', Infinity), true);
    assert.equal(pool.touch('nope'), false);
    mock.timers.tick(1000);
    await settle();
    assert.deepEqual(disposed, ['c']);
    mock.timers.tick(9000);
    await settle();
    assert.deepEqual(disposed, ['c', 'a']);
    mock.timers.tick(10 * 24 * 3600_000);
    await settle();
    assert.deepEqual(disposed, ['c', 'a'], 'b stays');
    pool.touch('b', 0);
    await settle();
    assert.deepEqual(disposed, ['c', 'a', 'b']);
  });

  test('an extend-only touch (a key without the manage scope) lengthens a keep-alive, never shortens it or lifts a pin', async () => {
    const { pool, disposed } = makePool({ keepAliveMs: 60_000 });
    await pool.use('a', instantLoader('a').load, () => {});
    await pool.use('pinned', instantLoader('pinned').load, () => {});
    pool.touch('pinned', Infinity);
    assert.equal(pool.touch('a', 1, true), true);
    assert.equal(pool.touch('pinned', 300_000, true), true);
    mock.timers.tick(1000);
    await settle();
    assert.deepEqual(disposed, [], '1 ms from a plain key does not unload a model kept for a minute');
    pool.touch('a', 600_000, true);
    mock.timers.tick(300_000);
    await settle();
    assert.deepEqual(disposed, [], 'lengthened to 10 minutes');
    mock.timers.tick(300_000);
    await settle();
    assert.deepEqual(disposed, ['a']);
    mock.timers.tick(30 * 24 * 3600_000);
    await settle();
    assert.deepEqual(disposed, ['a'], 'the pin holds');
  });

  test('a per-acquire keep-alive applies to that model', async () => {
    const { pool, disposed } = makePool({ keepAliveMs: 1000 });
    await pool.use('a', instantLoader('a').load, () => {}, { keepAliveMs: 0 });
    await settle();
    assert.deepEqual(disposed, ['a'], 'keep-alive 0: unloaded when the request ends');
  });

  test('use() releases when the function throws; release is checked', async () => {
    const { pool } = makePool();
    await assert.rejects(
      pool.use('a', instantLoader('a').load, () => {
        throw new Error('inference failed');
      }),
      { message: 'inference failed' },
    );
    assert.equal(pool.models()[0]?.inUse, 0);
    assert.throws(() => pool.release('a'), { message: "model 'a' was released more often than it was acquired" });
  });

  test('a load of a model that is still being disposed waits for the disposal', async () => {
    let finishDispose!: () => void;
    const order: string[] = [];
    const pool = new ModelPool<Fake>({
      keepAliveMs: 0,
      dispose: () =>
        new Promise<void>((resolve) => {
          order.push('dispose-start');
          finishDispose = () => {
            order.push('dispose-end');
            resolve();
          };
        }),
    });
    const loader = {
      load: async (): Promise<LoadResult<Fake>> => {
        order.push('load');
        return { handle: { id: 'm', disposed: false }, bytes: 1 };
      },
    };
    await pool.use('m', loader.load, () => {});
    await settle();
    const again = pool.acquire('m', loader.load);
    await settle();
    assert.deepEqual(order, ['load', 'dispose-start']);
    finishDispose();
    await again;
    assert.deepEqual(order, ['load', 'dispose-start', 'dispose-end', 'load']);
  });

  test('a failing dispose is reported in the unload event', async () => {
    const events: ModelEvent[] = [];
    const pool = new ModelPool<Fake>({
      keepAliveMs: 10,
      dispose: () => Promise.reject(new Error('session busy')),
      onEvent: (e) => events.push(e),
    });
    await pool.use('m', instantLoader('m').load, () => {});
    mock.timers.tick(10);
    await settle();
    const unload = events.find((e) => e.type === 'unload');
    assert.equal(unload?.type === 'unload' && unload.error?.message, 'session busy');
    assert.deepEqual(pool.models(), []);
  });

  test('close waits for loads in progress, unloads everything, and the pool can load again', async () => {
    const { pool, disposed, unloads } = makePool();
    await pool.use('a', instantLoader('a').load, () => {});
    const b = deferredLoader('b');
    const acquiringB = pool.acquire('b', b.load);
    await settle();
    const closing = pool.close();
    await settle();
    b.calls[0]!();
    await acquiringB;
    await closing;
    assert.deepEqual(disposed.sort(), ['a', 'b']);
    assert.deepEqual(unloads().sort(), ['a:close', 'b:close']);
    pool.release('b'); // the request that was using b ends after close: not an error
    await pool.use('a', instantLoader('a').load, () => {});
    assert.equal(pool.models().length, 1);
  });

  test('loading() reports a load with its device, phase and start; loaded() the model with its expiry', async () => {
    const { pool } = makePool({ keepAliveMs: 30_000 });
    const loader = deferredLoader('npu-model', 40);
    const acquiring = pool.acquire('npu-model', loader.load, { device: 'NPU', phase: 'compile', contextLength: 4608 });
    assert.deepEqual(pool.loading(), [{ model: 'npu-model', device: 'NPU', phase: 'compile', startedAt: 1_000_000 }]);
    assert.deepEqual(pool.loaded(), []);
    mock.timers.tick(5_000);
    await settle();
    loader.calls[0]!();
    await acquiring;
    assert.deepEqual(pool.loading(), []);
    assert.deepEqual(
      pool.loaded(),
      [{ id: 'npu-model', device: 'NPU', bytes: 40, expiresAt: 1_035_000, loadedAt: 1_005_000, contextLength: 4608 }],
      'in use: a keep-alive from now at the soonest',
    );
    mock.timers.tick(1_000);
    pool.release('npu-model');
    assert.equal(pool.loaded()[0]?.expiresAt, 1_006_000 + 30_000);
    pool.touch('npu-model', Infinity);
    assert.equal(pool.loaded()[0]?.expiresAt, null, 'kept for ever');
  });

  test('bad settings are refused when the pool is made', () => {
    assert.throws(() => makePool({ memoryBudgetBytes: 0 }), /memoryBudgetBytes must be positive/);
    assert.throws(() => makePool({ keepAliveMs: -5 }), /keepAliveMs must be 0 or more/);
  });
});

describe('ModelPool with real timers', () => {
  test('a keep-alive longer than a Node timer takes (2^31 - 1 ms) keeps the model, rather than firing after 1 ms', async () => {
    const { pool, disposed } = makePool({ keepAliveMs: 30 * 24 * 3600_000 });
    await pool.use('a', instantLoader('a').load, () => {});
    await new Promise((r) => setTimeout(r, 50));
    await settle();
    assert.deepEqual(disposed, [], 'still loaded after 50 ms');
    await pool.close();
  });
});

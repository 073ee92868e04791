/**
 * `GET /admin/metrics` (admin token): the edge's metrics for a Prometheus scrape, in OpenMetrics or the classic text
 * format as the scraper asks. Counters and histograms from the usage rows (observability/usage-metrics.ts), gauges
 * from every pool's hub, read at scrape time.
 */
import type { IRequest } from 'itty-router';
import { edgeConfig } from '../../config.ts';
import { openDatabase } from '../../db/client.ts';
import { missingFromSchema } from '../../db/schema-behind.ts';
import { withDeadline } from '../../db/timeout.ts';
import type { Env } from '../../env.ts';
import { ApiError } from '../../http/errors.ts';
import { hubOf, poolNames } from '../../edge/pools.ts';
import { CONTENT_TYPES, exposition, expositionFor, type Family } from '../../observability/exposition.ts';
import type { HubGauges } from '../../observability/hub-gauges.ts';
import { logWarn } from '../../observability/log.ts';
import { usageFamilies } from '../../observability/usage-metrics.ts';

/**
 * How long the totals' query may take. It reads usage_totals (a row per label set, kept by triggers), so it is quick
 * when libSQL is. Past this the scrape answers without the counters, with `npu_relay_edge_database_up 0`: well
 * within Prometheus's default 10 s scrape timeout, so the gauges (agents, queues, rows waiting for libSQL) still
 * arrive when libSQL is what broke. It is not NPU_RELAY_DB_TIMEOUT_MS, which bounds the calls a request waits on,
 * and a slow scrape does not mark libSQL down for anyone.
 */
const QUERY_MS = 5_000;

type PoolGauges = HubGauges & { pool: string };

function gaugeFamilies(hubs: PoolGauges[]): Family[] {
  const gauge = (name: string, help: string, value: (h: PoolGauges) => number): Family => ({
    type: 'gauge',
    name,
    help,
    samples: hubs.map((h) => ({ labels: { pool: h.pool }, value: value(h) })),
  });
  return [
    gauge('npu_relay_edge_agents_connected', 'Agents connected to the pool.', (h) => h.agents),
    gauge(
      'npu_relay_edge_in_flight',
      'Requests the pool is relaying now (being answered by an agent, or waiting for one).',
      (h) => h.inFlight,
    ),
    gauge(
      'npu_relay_edge_usage_rows_pending',
      "Usage rows queued in the pool's hub for libSQL; they grow while libSQL is down or slow, and are written when it answers.",
      (h) => h.usagePending,
    ),
    {
      type: 'gauge',
      name: 'npu_relay_edge_queue_depth',
      help: 'Requests waiting: at the agents (their queues, as last reported) or at the edge (for an agent to come back).',
      samples: hubs.flatMap((h) => [
        { labels: { pool: h.pool, place: 'agents' }, value: h.queuedAtAgents },
        { labels: { pool: h.pool, place: 'edge' }, value: h.waitingForAgent },
      ]),
    },
  ];
}

export async function metrics(request: IRequest, env: Env): Promise<Response> {
  const { libsqlUrl, libsqlAuthToken } = edgeConfig(env);
  const db = openDatabase(libsqlUrl, libsqlAuthToken, { timeoutMs: QUERY_MS });
  const [usage, hubs] = await Promise.all([
    withDeadline('read the usage totals for /admin/metrics', QUERY_MS, usageFamilies(db)).catch((err: unknown) => {
      // A Worker deployed before `npm run migrate` ran against its database: say so, rather than "did not answer".
      const missing = missingFromSchema(err);
      if (missing)
        throw new ApiError(
          'misconfigured',
          `the database has no ${missing}: its schema is older than this Worker; run \`npm run migrate\` against it (docs/operations.md#upgrading)`,
          { cause: err },
        );
      // As an exporter whose backend is down does: the scrape still answers, says so, and leaves the counters out
      // (a missing series is a gap to Prometheus; a zero would be a counter reset).
      logWarn('/admin/metrics: libSQL did not answer the usage totals; scraped without them', { err: String(err) });
      return undefined;
    }),
    // A hub knows its pool only from dispatches since it woke: the pool is named here.
    poolNames(env).then((pools) =>
      Promise.all(pools.map(async (pool): Promise<PoolGauges> => ({ pool, ...(await hubOf(env, pool).gauges()) }))),
    ),
  ]);
  const databaseUp: Family = {
    type: 'gauge',
    name: 'npu_relay_edge_database_up',
    help: `1 when libSQL answered this scrape's query for the counters within ${QUERY_MS / 1000} s; 0 when it did not, and the counters are left out.`,
    samples: [{ labels: {}, value: usage ? 1 : 0 }],
  };
  const format = expositionFor(request.headers.get('accept'));
  return new Response(exposition([...(usage ?? []), databaseUp, ...gaugeFamilies(hubs)], format), {
    headers: { 'content-type': CONTENT_TYPES[format], 'cache-control': 'no-store' },
  });
}

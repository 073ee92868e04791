/**
 * The Worker's layers (docs/DESIGN.md, "The Worker's layout"), lowest first: a file may import from its own layer
 * and the layers below it, never from one above; and no import cycle anywhere (type-only imports count).
 * `npm run check:layers` runs it; `npm run lint` includes it.
 */
const LAYERS = [
  // Plain HTTP (errors, auth, bodies, CORS), the configuration, small utilities, logging and metrics formats.
  ['base', '^worker/(http/|config\\.ts$|expiring-map\\.ts$|observability/(log|request-id|dialect|exposition|hub-gauges)\\.ts$)'],
  // libSQL (and the usage metrics read from it).
  ['storage', '^worker/(db/|observability/usage-metrics\\.ts$)'],
  // What the hub writes responses with: the dialects' shared core, each dialect's writer, and their registry.
  ['writers', '^worker/dialects/(core/|formats\\.ts$|[^/]+/[a-z-]*writer\\.ts$)'],
  // The hub (the Durable Object), with the bindings it and the edge use (HubEnv in tunnel/hub-api.ts), and the
  // request log lines it writes from usage rows.
  ['hub', '^worker/(tunnel/|observability/request-log\\.ts$)'],
  // The Worker's side of a request before the hub: keys, dispatch, pools, answers at the edge, the entry's log line.
  ['edge', '^worker/(edge/|observability/entry\\.ts$)'],
  // Routes and the features a dialect plugs into the hub (stored responses), the Batch API's desk, the dashboard, and
  // the Worker's whole bindings (env.ts names the desk). (The dialects' writers match this pattern too, and belong to
  // the lower layer that matches them first.)
  ['routes', '^worker/(dialects/|dashboard/|batch/|env\\.ts$)'],
  // What puts it all together: the router, the Durable Object class with its features, the entry point.
  ['entry', '^worker/(router|index|hub)\\.ts$'],
];

const forbidden = LAYERS.slice(0, -1).map(([name, path], i) => ({
  name: `layer-${name}`,
  comment: `${name} imports only from its own layer or below (${LAYERS.slice(0, i + 1)
    .map(([n]) => n)
    .join(', ')})`,
  severity: 'error',
  // A file belongs to the lowest layer whose pattern matches it.
  from: { path, pathNot: LAYERS.slice(0, i).map(([, p]) => p) },
  to: { path: LAYERS.slice(i + 1).map(([, p]) => p), pathNot: LAYERS.slice(0, i + 1).map(([, p]) => p) },
}));

module.exports = {
  forbidden: [
    ...forbidden,
    {
      name: 'no-circular',
      comment: 'no import cycle, type-only ones included',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'layered',
      comment: 'every Worker module belongs to a layer (add it to LAYERS in .dependency-cruiser.cjs)',
      severity: 'error',
      from: { path: '^worker/', pathNot: ['^worker/dashboard/client/', ...LAYERS.map(([, p]) => p)] },
      to: {},
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^worker/dashboard/client/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'worker/tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};

/**
 * The agent's local health and metrics endpoints, on 127.0.0.1 only (they describe the machine, not the API):
 *
 * - `GET /health`: whether the agent is up and connected to its edge (`status` ok, disconnected or draining; always
 *   200 while the process runs, so a liveness probe does not restart an agent whose edge is unreachable);
 * - `GET /health/devices`: the devices, which model is loaded on which, and the latest errors;
 * - `GET /metrics`: Prometheus text format.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { DeviceInfo } from '../../shared/protocol/frames.ts';

/** What the agent reports about itself; asked for on every request, so it is always current. */
export interface AgentStatus {
  agentId: string;
  engine: string;
  /** Whether the tunnel to the edge is open and accepted. */
  connected: boolean;
  /** Shutting down: finishing in-flight requests, taking no new ones. */
  draining?: boolean | undefined;
  /** Each device, with the models loaded on it and, when the agent tracks them, its running and waiting requests. */
  devices: Array<DeviceInfo & { loadedModels: string[]; running?: number; queued?: number }>;
  /** Models loaded now. */
  models: Array<{ id: string; device: string | undefined; bytes: number; loadedAt: string }>;
  /** The latest failures (model loads, unloads), newest last. */
  lastErrors: Array<{ at: string; model?: string | undefined; message: string }>;
}

export interface ObservabilityServerOptions {
  /** 0 picks a free port. */
  port: number;
  host?: string;
  status: () => AgentStatus | Promise<AgentStatus>;
  registry: Registry;
}

export interface ObservabilityServer {
  url: URL;
  close(): Promise<void>;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

export async function startObservabilityServer(options: ObservabilityServerOptions): Promise<ObservabilityServer> {
  const host = options.host ?? '127.0.0.1';
  const startedAt = Date.now();

  const routes: Record<string, (res: ServerResponse) => Promise<void>> = {
    '/health': async (res) => {
      const s = await options.status();
      json(res, 200, {
        status: s.draining ? 'draining' : s.connected ? 'ok' : 'disconnected',
        agentId: s.agentId,
        engine: s.engine,
        connected: s.connected,
        uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
      });
    },
    '/health/devices': async (res) => {
      const s = await options.status();
      json(res, 200, {
        agentId: s.agentId,
        engine: s.engine,
        devices: s.devices,
        models: s.models,
        lastErrors: s.lastErrors,
      });
    },
    '/metrics': async (res) => {
      const text = await options.registry.metrics();
      res.writeHead(200, { 'content-type': options.registry.contentType });
      res.end(text);
    },
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const route = routes[new URL(req.url ?? '/', 'http://localhost').pathname];
    if (!route)
      return json(res, 404, { error: `no such endpoint: ${req.url}; try /health, /health/devices or /metrics` });
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return json(res, 405, { error: `${req.method} is not allowed here; use GET` });
    }
    await route(res);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      if (!res.headersSent) json(res, 500, { error: `the agent could not report its status: ${err.message}` });
      else res.destroy(err);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        err.code === 'EADDRINUSE'
          ? new Error(
              `the health and metrics port ${options.port} on ${host} is already in use: set NPU_RELAY_METRICS_PORT (or --metrics-port) to a free port, or 0 to turn the endpoints off`,
            )
          : err,
      );
    });
    server.listen(options.port, host, () => resolve());
  });
  // A scrape in progress must not keep the agent from exiting.
  server.unref();
  const { port } = server.address() as AddressInfo;
  return {
    url: new URL(`http://${host}:${port}`),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

/**
 * What the hub knows about each connected agent beyond its socket's attachment: the hello (models, devices,
 * capacity) and the latest status. Cloudflare limits a WebSocket attachment to 2,048 bytes, and an agent with a few
 * dozen models already says more than that in its hello, so the attachment keeps only a connection id and fixed
 * fields (see `AgentAttachment` in hub.ts) and the rest lives here: in the Durable Object's SQLite storage, which
 * survives hibernation, keyed by connection id, with an in-memory copy so routing a request reads no storage.
 */
import type { HelloFrame, StatusFrame } from '../../shared/protocol/frames.ts';

export type AgentHello = Omit<HelloFrame, 'type'> & { at: number };
export type AgentStatus = Omit<StatusFrame, 'type'> & { at: number };

export interface AgentRecord {
  hello: AgentHello;
  status: AgentStatus | undefined;
}

/**
 * A status frame may list up to 64 devices × 1,024 loaded models; stored whole it could pass SQLite's 2 MB row
 * limit. Past this size the per-device detail (shown on the dashboard only) is kept in memory and not stored.
 */
const MAX_STORED_STATUS_CHARS = 256 * 1024;

export class AgentStore {
  readonly #sql: SqlStorage;
  readonly #memory = new Map<string, AgentRecord>();

  constructor(sql: SqlStorage) {
    this.#sql = sql;
    sql.exec(`CREATE TABLE IF NOT EXISTS agents (conn_id TEXT PRIMARY KEY, hello TEXT NOT NULL, status TEXT)`);
  }

  /** The record of a connection that said hello; read from storage once after the hub woke from hibernation. */
  get(connId: string): AgentRecord | undefined {
    let record = this.#memory.get(connId);
    if (record) return record;
    const row = this.#sql
      .exec<{ hello: string; status: string | null }>(`SELECT hello, status FROM agents WHERE conn_id = ?`, connId)
      .toArray()[0];
    if (!row) return undefined;
    record = {
      hello: JSON.parse(row.hello) as AgentHello,
      status: row.status === null ? undefined : (JSON.parse(row.status) as AgentStatus),
    };
    this.#memory.set(connId, record);
    return record;
  }

  /** Stores a connection's hello. Throws when storage refuses it (the hub then refuses the agent, saying why). */
  putHello(connId: string, hello: AgentHello): void {
    this.#sql.exec(
      `INSERT OR REPLACE INTO agents (conn_id, hello, status) VALUES (?, ?, NULL)`,
      connId,
      JSON.stringify(hello),
    );
    this.#memory.set(connId, { hello, status: undefined });
  }

  /** Replaces a connection's model list (a `models` frame: the agent pulled, deleted or copied a model). */
  putModels(connId: string, models: AgentHello['models']): void {
    const record = this.get(connId);
    if (!record) return;
    record.hello = { ...record.hello, models };
    this.#sql.exec(`UPDATE agents SET hello = ? WHERE conn_id = ?`, JSON.stringify(record.hello), connId);
  }

  putStatus(connId: string, status: AgentStatus): void {
    const record = this.get(connId);
    if (!record) return;
    record.status = status;
    let json = JSON.stringify(status);
    if (json.length > MAX_STORED_STATUS_CHARS) json = JSON.stringify({ ...status, devices: [] });
    this.#sql.exec(`UPDATE agents SET status = ? WHERE conn_id = ?`, json, connId);
  }

  delete(connId: string): void {
    this.#memory.delete(connId);
    this.#sql.exec(`DELETE FROM agents WHERE conn_id = ?`, connId);
  }

  /** Drops the records of connections that are gone without the hub having seen them close (e.g. a restart). */
  retainOnly(live: ReadonlySet<string>): void {
    for (const row of this.#sql.exec<{ conn_id: string }>(`SELECT conn_id FROM agents`).toArray()) {
      if (!live.has(row.conn_id)) this.delete(row.conn_id);
    }
  }
}

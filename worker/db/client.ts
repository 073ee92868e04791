/** The edge's libSQL database through drizzle over HTTP (`@libsql/client/web`, which runs in Workers). */
import { drizzle } from 'drizzle-orm/libsql/web';
import * as schema from '../../shared/db/schema.ts';
import { fetchWithDeadline } from './timeout.ts';

export type Database = ReturnType<typeof openDatabase>;

/** `timeoutMs`: abort each HTTP call to libSQL after this long (see timeout.ts), so a hung database frees its slot. */
export function openDatabase(url: string, authToken?: string, options: { timeoutMs?: number } = {}) {
  const fetch = options.timeoutMs !== undefined ? fetchWithDeadline(options.timeoutMs) : undefined;
  return drizzle({ connection: { url, ...(authToken ? { authToken } : {}), ...(fetch ? { fetch } : {}) }, schema });
}

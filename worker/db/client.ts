/** The edge's libSQL database through drizzle over HTTP (`@libsql/client/web`, which runs in Workers). */
import { drizzle } from 'drizzle-orm/libsql/web';
import * as schema from './schema.ts';

export type Database = ReturnType<typeof openDatabase>;

export function openDatabase(url: string, authToken?: string) {
  return drizzle({ connection: { url, ...(authToken ? { authToken } : {}) }, schema });
}

/** Applies the drizzle-kit migrations in `migrations/` to a libSQL database; safe to run any number of times. */
import path from 'node:path';
import { createClient } from '@libsql/client';
import { drizzle } from 'drizzle-orm/libsql';
import { migrate } from 'drizzle-orm/libsql/migrator';
import { PROJECT_ROOT } from '../local/edge.ts';

export const MIGRATIONS_DIR = path.join(PROJECT_ROOT, 'migrations');

export async function applyMigrations(url: string, authToken?: string): Promise<void> {
  const client = createClient({ url, ...(authToken ? { authToken } : {}) });
  try {
    await migrate(drizzle(client), { migrationsFolder: MIGRATIONS_DIR });
  } finally {
    client.close();
  }
}

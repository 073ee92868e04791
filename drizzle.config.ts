import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'turso',
  schema: './shared/db/schema.ts',
  out: './migrations',
});

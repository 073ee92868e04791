/**
 * What `npm start` leaves in its data folder for another agent to join it (`npm run agent -- --local`): the agent
 * token in `agent-token` (mode 600, kept between runs) and the running edge's URL in `local-edge.json`. The token is
 * read from the file, never passed on a command line, so it does not show in `ps` or npm's echo.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../config.ts';

export const AGENT_TOKEN_FILE = 'agent-token';
const EDGE_FILE = 'local-edge.json';

/** The agent token: `given` (NPU_RELAY_AGENT_TOKEN) when set, else the one kept in the data folder, else a new one; kept there for `--local`. */
export async function localAgentToken(dataDir: string, given: string | undefined): Promise<string> {
  const file = path.join(dataDir, AGENT_TOKEN_FILE);
  const saved = await readFile(file, 'utf8').then(
    (t) => t.trim() || undefined,
    () => undefined,
  );
  const token = given || saved || randomBytes(24).toString('base64url');
  if (token !== saved) await writeFile(file, `${token}\n`, { mode: 0o600 });
  return token;
}

export async function noteLocalEdge(dataDir: string, url: string): Promise<void> {
  await writeFile(path.join(dataDir, EDGE_FILE), `${JSON.stringify({ url, pid: process.pid })}\n`);
}

export async function forgetLocalEdge(dataDir: string): Promise<void> {
  await rm(path.join(dataDir, EDGE_FILE), { force: true });
}

/** The edge URL and agent token of the `npm start` whose data folder is `dataDir`; a ConfigError when none runs there. */
export function readLocalStack(dataDir: string): { edgeUrl: string; agentToken: string } {
  let edgeUrl: string | undefined;
  try {
    edgeUrl = (JSON.parse(readFileSync(path.join(dataDir, EDGE_FILE), 'utf8')) as { url?: string }).url;
  } catch {
    // Handled below.
  }
  if (!edgeUrl)
    throw new ConfigError(
      `--local: no running \`npm start\` found in the data folder ${dataDir} (start it first, or pass --data-dir / NPU_RELAY_DATA_DIR of the one that runs)`,
    );
  return { edgeUrl, agentToken: readTokenFile(path.join(dataDir, AGENT_TOKEN_FILE), '--local') };
}

/** A token from a file (`--token-file`), trimmed; a ConfigError naming `what` when it is missing or empty. */
export function readTokenFile(file: string, what: string): string {
  let token: string;
  try {
    token = readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new ConfigError(`${what}: cannot read the agent token from ${file}: ${(err as Error).message}`);
  }
  if (!token) throw new ConfigError(`${what}: ${file} is empty; it should hold the agent token`);
  return token;
}

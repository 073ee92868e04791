#!/usr/bin/env node
/** `npm run agent`: connect this machine's engine to an edge. */
import { AGENT_HELP, agentConfig } from '../config.ts';
import { createLogger } from '../log.ts';
import { createAgentRuntime } from '../runtime.ts';
import { orExitOnConfigError, readCommandLineOrExit } from './command.ts';

const config = readCommandLineOrExit('agent', AGENT_HELP, () => agentConfig(process.argv.slice(2), process.env));
if (config.tokenInArgv) {
  console.error(
    "npu-relay agent: warning: --token puts the agent token on the command line, where `ps` and npm's echo show it " +
      'to anyone on this machine; use --token-file FILE (or NPU_RELAY_AGENT_TOKEN_FILE), the NPU_RELAY_AGENT_TOKEN ' +
      'variable, or --local beside a running `npm start`',
  );
}
const log = createLogger(config.logLevel, { agentId: config.agentId });
const { agent, engine, manager, summary, observability } = await orExitOnConfigError('agent', () =>
  createAgentRuntime(config, log),
);
for (const line of summary) console.error(`npu-relay agent ${config.agentId}: ${line}`);

let stopping = false;
/** Ctrl-C stops at once; SIGTERM (a service manager stopping us) drains first, up to the drain timeout. */
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping');
  if (signal === 'SIGTERM') await agent.drain(config.drainTimeoutMs ?? 30_000);
  else await agent.stop();
  manager.close();
  await observability?.close();
  await engine.close();
  process.exit(0);
};
process.on('SIGINT', () => void stop('SIGINT'));
process.on('SIGTERM', () => void stop('SIGTERM'));

agent.start().catch((err: Error) => {
  log.fatal(err.message);
  console.error(`npu-relay agent: ${err.message}`);
  process.exit(1);
});

/**
 * The agent-ready statistics at full size (test/support/agent-ready-suite.ts): forced tool calls and structured
 * outputs over ten schemas, five seeds each, through both APIs; npm test runs them with one seed.
 */
import { agentReadySuite } from '../support/agent-ready-suite.ts';

agentReadySuite({ runsPerSchema: 5, statisticsOnly: true });

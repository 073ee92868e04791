/**
 * The relay as an agent backend, end to end (test/support/agent-ready-suite.ts): every test, with one seed per
 * schema in the two statistics tests; test/slow/agent-ready.test.ts runs those two with five.
 */
import { agentReadySuite } from './support/agent-ready-suite.ts';

agentReadySuite({ runsPerSchema: 1 });

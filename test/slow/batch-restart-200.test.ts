/**
 * The agent-kill and edge-restart batch test (test/batch-restart.test.ts) with 200 lines instead of 40: more lines
 * in flight and in the retry queue when both die, and a longer output file to read back.
 */
process.env.NPU_RELAY_BATCH_RESTART_LINES ??= '200';
await import('../batch-restart.test.ts');

/**
 * The schema moved to shared/db/schema.ts (the agent-side CLIs write the same tables). This re-export keeps the
 * hub's imports of worker/db/schema.ts working while the hub is being split; new code imports shared/db/schema.ts.
 */
export * from '../../shared/db/schema.ts';

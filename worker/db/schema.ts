/**
 * The schema moved to shared/db/schema.ts (the agent-side CLIs write the same tables). This re-export keeps
 * worker/tunnel/hub.ts's import working while the hub is being split; the split hub imports shared/db/schema.ts.
 */
export * from '../../shared/db/schema.ts';

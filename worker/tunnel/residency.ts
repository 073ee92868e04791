/**
 * Which `keep_alive` values change a model's residency for every key (a privilege of the `manage` scope), and which
 * only ask to keep it a while, as any request does. What a key without the scope sends is also carried as
 * extend-only (`keepAliveExtends` in the tunnel protocol): the agent never lets it shorten the model's keep-alive
 * or lift a pin another key set, so the rule cannot be got around with a short positive value such as `"1ms"`.
 */

/** The longest keep-alive a key without the manage scope may ask for: longer is a pin by another name. */
export const PLAIN_KEEP_ALIVE_MAX_MS = 24 * 3_600_000;

/** What keep_alive `ms` (as the tunnel carries it; -1 for ever) does to the model for every key, or undefined. */
export function residencyChange(ms: number | undefined): string | undefined {
  if (ms === undefined) return undefined;
  if (ms === 0) return 'keep_alive 0 (unload the model now)';
  if (ms < 0) return 'keep_alive -1 (keep the model loaded for ever)';
  if (ms > PLAIN_KEEP_ALIVE_MAX_MS)
    return `keep_alive over ${PLAIN_KEEP_ALIVE_MAX_MS / 3_600_000} h (keep the model loaded for days)`;
  return undefined;
}

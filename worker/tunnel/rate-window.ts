/** The rate limits' sliding window: a key's rpm and tpm count what was admitted in the last minute (ledger.ts). */
export const WINDOW_MS = 60_000;

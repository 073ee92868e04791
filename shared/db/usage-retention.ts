/**
 * The shortest usage retention (`NPU_RELAY_USAGE_RETENTION_DAYS`) the edge takes, here because `npm start` checks
 * the variable before handing it to the local edge. The dashboard reads a key's use of its monthly budget from the
 * usage rows, and a month has up to 31 days: a shorter retention would make the budget left look larger than it is.
 */
export const MIN_USAGE_RETENTION_DAYS = 31;

/**
 * API key format and hashing, shared by the edge (which verifies keys) and the CLI (which creates them). A key is
 * `sk-relay-` followed by 32 random bytes in base64url; only its SHA-256 is stored. Keys carry 256 bits of
 * randomness, so a fast hash is enough: there is nothing to brute-force.
 */
export const API_KEY_PREFIX = 'sk-relay-';
/** How many characters of a key are stored in clear so people can tell keys apart. */
export const VISIBLE_PREFIX_CHARS = 13;

function base64url(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function newApiKey(): string {
  return API_KEY_PREFIX + base64url(crypto.getRandomValues(new Uint8Array(32)));
}

export function newKeyId(): string {
  return `key_${base64url(crypto.getRandomValues(new Uint8Array(9)))}`;
}

/** Hex SHA-256 of a key: what the database stores and looks keys up by. */
export async function hashApiKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(key));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

export function visiblePrefix(key: string): string {
  return key.slice(0, VISIBLE_PREFIX_CHARS);
}

/**
 * The dashboard's session: a cookie holding an expiry signed with HMAC-SHA256 (WebCrypto) under the admin token, so
 * the edge keeps no session state and changing NPU_RELAY_ADMIN_TOKEN ends every session at once. The admin token
 * itself never leaves the login form: not in a URL, not in the cookie.
 */
import { secretsEqual } from '../http/auth.ts';

/**
 * `__Host-` makes browsers insist on Secure, Path=/ and no Domain, so no other host or path can set or shadow it.
 * Path=/ because the page's JSON endpoints live under /admin/.
 */
export const SESSION_COOKIE = '__Host-npu-relay-session';

/** How long a login lasts. */
export const SESSION_TTL_S = 8 * 3600;

/** Sessions signed for another purpose or format version never verify as this one. */
const CONTEXT = 'npu-relay dashboard session v1';
const encoder = new TextEncoder();

function base64url(bytes: ArrayBuffer | Uint8Array): string {
  let binary = '';
  for (const b of new Uint8Array(bytes)) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

async function signature(adminToken: string, payload: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    'raw',
    encoder.encode(adminToken),
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['sign'],
  );
  return base64url(await crypto.subtle.sign('HMAC', key, encoder.encode(`${CONTEXT}\n${payload}`)));
}

/** A new session value: `v1.<issued s>.<expires s>.<nonce>.<signature>`. */
export async function newSession(adminToken: string, now = Date.now()): Promise<string> {
  const issued = Math.floor(now / 1000);
  const payload = `v1.${issued}.${issued + SESSION_TTL_S}.${base64url(crypto.getRandomValues(new Uint8Array(16)))}`;
  return `${payload}.${await signature(adminToken, payload)}`;
}

/** Whether `value` is a session this admin token signed that has not expired. The signature check is constant-time. */
export async function verifySession(value: string, adminToken: string, now = Date.now()): Promise<boolean> {
  const parts = value.split('.');
  if (parts.length !== 5 || parts[0] !== 'v1') return false;
  const issued = Number(parts[1]);
  const expires = Number(parts[2]);
  if (!Number.isSafeInteger(issued) || !Number.isSafeInteger(expires)) return false;
  const payload = parts.slice(0, 4).join('.');
  // Compare first, then look at the times: a forged value costs the same as a genuine one.
  const genuine = await secretsEqual(parts[4]!, await signature(adminToken, payload));
  const seconds = now / 1000;
  return genuine && expires > seconds && expires - issued <= SESSION_TTL_S && issued <= seconds + 60;
}

/** The value of a cookie on a request, or undefined. */
export function cookieOf(request: Request, name: string): string | undefined {
  for (const pair of (request.headers.get('cookie') ?? '').split(';')) {
    const eq = pair.indexOf('=');
    if (eq > 0 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
  }
  return undefined;
}

/** The Set-Cookie header that stores a session (`value`) or, with `undefined`, removes it. */
export function sessionCookieHeader(value: string | undefined): string {
  // Secure even on http://127.0.0.1 and http://localhost: browsers count those as secure contexts and keep the cookie
  // (the dashboard test checks this in Chromium).
  const attributes = `Path=/; HttpOnly; Secure; SameSite=Strict`;
  return value === undefined
    ? `${SESSION_COOKIE}=; Max-Age=0; ${attributes}`
    : `${SESSION_COOKIE}=${value}; Max-Age=${SESSION_TTL_S}; ${attributes}`;
}

/** Whether the request carries a valid dashboard session. */
export async function hasSession(request: Request, adminToken: string): Promise<boolean> {
  const value = cookieOf(request, SESSION_COOKIE);
  return value !== undefined && (await verifySession(value, adminToken));
}

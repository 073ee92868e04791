/**
 * A flood of requests with made-up or missing API keys, as its own process (an attacker is not inside the client
 * whose latency is measured): `node stranger-flood.ts URL CONNECTIONS MAX_REQUESTS MAX_MS [EVERY_MS]`. Each connection
 * sends one request after another, at most one per EVERY_MS when given; it prints `first answer: STATUS` once the edge answers, stops at MAX_REQUESTS, after
 * MAX_MS, or on SIGTERM, and prints `sent N in MS ms` as its last line.
 */
const [url, connections, maxRequests, maxMs, everyMs = '0'] = process.argv.slice(2);
if (!url || !connections || !maxRequests || !maxMs)
  throw new Error('usage: stranger-flood.ts URL CONNECTIONS MAX_REQUESTS MAX_MS');

let sent = 0;
let stop = false;
let answered = false;
const started = performance.now();
const until = started + Number(maxMs);
process.once('SIGTERM', () => (stop = true));

const body = JSON.stringify({ model: 'any', messages: [{ role: 'user', content: 'let me in' }] });
await Promise.all(
  Array.from({ length: Number(connections) }, async (_, c) => {
    for (let i = 0; !stop && sent < Number(maxRequests) && performance.now() < until; i++) {
      const next = performance.now() + Number(everyMs);
      sent++;
      // Five made-up keys per connection, over and over, and every third request with no key at all.
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        ...(i % 3 === 0 ? {} : { authorization: `Bearer sk-relay-flood-${c}-${i % 5}` }),
      };
      try {
        const res = await fetch(url, { method: 'POST', headers, body });
        await res.arrayBuffer();
        if (!answered) {
          answered = true;
          console.log(`first answer: ${res.status}`);
        }
      } catch {
        // the edge is going away
      }
      const wait = next - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }),
);
console.log(`sent ${sent} in ${(performance.now() - started).toFixed(0)} ms`);

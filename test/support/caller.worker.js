/**
 * An API client that is itself a Worker, bound to the edge by a service binding. It abandons its request after
 * `abortMs` with an AbortSignal, which workerd delivers to the edge as `request.signal` — the same signal
 * Cloudflare raises when an HTTP client disconnects (local workerd's HTTP entry does not report disconnects).
 * GET /?key=<api key>&body=<JSON body>[&abortMs=<ms>] answers { outcome, status?, body?, error? }.
 */
export default {
  async fetch(request, env) {
    const q = new URL(request.url).searchParams;
    const init = {
      method: 'POST',
      headers: { authorization: `Bearer ${q.get('key')}`, 'content-type': 'application/json' },
      body: q.get('body'),
    };
    if (q.get('abortMs')) init.signal = AbortSignal.timeout(Number(q.get('abortMs')));
    try {
      const res = await env.EDGE.fetch('https://edge/v1/chat/completions', init);
      return Response.json({ outcome: 'answered', status: res.status, body: await res.text() });
    } catch (err) {
      return Response.json({ outcome: 'abandoned', error: err.name });
    }
  },
};

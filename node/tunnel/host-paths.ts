/**
 * What the agent tells the edge must not show how the host is laid out: an error such as "could not load model 'x'
 * from /srv/relay/models/x: Load model from /srv/relay/models/x/onnx/model.onnx failed" reaches any API client. The
 * tunnel client passes every message it sends through `withoutHostPaths`; the agent's own logs and local endpoints
 * keep the full text for the operator.
 */

// An absolute path of two or more segments (POSIX, `~/…`, or Windows `C:\…`), not part of a URL or a repo id: what
// precedes it is no word character, dot, colon or slash.
const POSIX = /(?<![\w.:/\\~-])~?\/(?:[^\s/'"`,;()[\]{}<>]+\/)+([^\s/'"`,;()[\]{}<>]+)/g;
const WINDOWS = /(?<![\w.:/\\-])[A-Za-z]:\\(?:[^\s\\'"`,;()[\]{}<>]+\\)*([^\s\\'"`,;()[\]{}<>]+)/g;

/** `text` with each absolute path cut to its last component (`…/model.onnx`): what failed, not where it lives. */
export function withoutHostPaths(text: string): string {
  return text
    .replace(POSIX, (_path, last: string) => `…/${last}`)
    .replace(WINDOWS, (_path, last: string) => `…\\${last}`);
}

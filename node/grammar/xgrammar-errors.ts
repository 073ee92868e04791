/**
 * How xgrammar says no. Its WebAssembly build cannot throw a reason across the boundary, so this module reads it
 * where the build prints it.
 */
import { AgentError } from '../errors.ts';

/**
 * Runs an xgrammar call and collects the reason it prints when it refuses its input. The WebAssembly build reports
 * a refused schema, regex or grammar by printing `[FATAL] file:line: reason` to stderr and then throwing a bare
 * `RuntimeError: Aborted()` (the module stays usable); its print function is bound to `console.error` when the
 * module starts, so the only place to read the reason is stderr itself. Only xgrammar's lines are held back, and
 * only for the one call.
 */
export function capturingFatal<T>(
  call: () => Promise<T>,
): Promise<{ result: { value: T } | { error: unknown }; fatal: string | undefined }> {
  // One at a time (compiles of two models could overlap): each call must restore the `write` it replaced, and the
  // WebAssembly module runs one call at a time anyway.
  const run = queue.then(() => captureOne(call));
  queue = run.then(
    () => undefined,
    () => undefined,
  );
  return run;
}

let queue: Promise<void> = Promise.resolve();

async function captureOne<T>(
  call: () => Promise<T>,
): Promise<{ result: { value: T } | { error: unknown }; fatal: string | undefined }> {
  const stderr = process.stderr;
  const write = stderr.write;
  let fatal: string | undefined;
  stderr.write = function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]) {
    const text = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString('utf8') : '';
    const reason = /^\[FATAL\] [^:]*:\d+: ([\s\S]*?)\s*$/.exec(text)?.[1];
    if (reason !== undefined) {
      fatal ??= reason.replace(/^Check failed: /, '');
      return true;
    }
    if (/^Aborted\(/.test(text)) return true;
    return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof stderr.write;
  try {
    return { result: { value: await call() }, fatal };
  } catch (error) {
    return { result: { error }, fatal };
  } finally {
    stderr.write = write;
  }
}

/**
 * Runs an xgrammar call that compiles client input (a schema, a grammar); a refusal becomes the client's error:
 * `AgentError('invalid_request')` naming `what` and xgrammar's reason, raised before anything is generated.
 */
export async function compiling<T>(what: string, call: () => Promise<T>): Promise<T> {
  const { result, fatal } = await capturingFatal(call);
  if ('error' in result) {
    const reason = fatal ?? (result.error instanceof Error ? result.error.message : String(result.error));
    throw new AgentError('invalid_request', `${what} could not be compiled: ${reason}`, { cause: result.error });
  }
  return result.value;
}

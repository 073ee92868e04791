/**
 * Loads `@mlc-ai/web-xgrammar` (xgrammar compiled to WebAssembly) once, on first use, so an agent that never
 * constrains an output never maps its 2.4 MB bundle.
 */
import { createRequire } from 'node:module';

export type XGrammar = typeof import('@mlc-ai/web-xgrammar');

let loading: Promise<XGrammar> | undefined;

/** The xgrammar module, loaded on the first call and shared after. */
export function loadXGrammar(): Promise<XGrammar> {
  return (loading ??= importBundle());
}

async function importBundle(): Promise<XGrammar> {
  // The package is a UMD bundle in a package marked "type": "module": imported from ESM it sets
  // `globalThis.xgrammar`, and its Emscripten loader reads the CommonJS globals `require` and `__filename` to find
  // itself. Node defines neither in ESM, so they are provided, pointing at the bundle, for the time of the import.
  const require = createRequire(import.meta.url);
  const bundle = require.resolve('@mlc-ai/web-xgrammar');
  const scope = globalThis as { require?: unknown; __filename?: unknown; xgrammar?: XGrammar };
  const saved = { require: scope.require, __filename: scope.__filename };
  scope.require = require;
  scope.__filename = bundle;
  try {
    const mod = (await import('@mlc-ai/web-xgrammar')) as Partial<XGrammar> & { default?: unknown };
    const xgrammar = mod.GrammarCompiler ? (mod as XGrammar) : scope.xgrammar;
    if (!xgrammar?.GrammarCompiler) throw new Error('@mlc-ai/web-xgrammar loaded but defined no GrammarCompiler');
    // The WebAssembly module initialises on its first call; do it now so later calls never wait for it.
    await xgrammar.Grammar.builtinJSONGrammar().then((g) => g.dispose());
    return xgrammar;
  } finally {
    // The bundle keeps what it read; the globals are not left behind for other code to trip over.
    scope.require = saved.require;
    scope.__filename = saved.__filename;
  }
}

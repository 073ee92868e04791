/**
 * Files the Worker serves as they are: wrangler bundles them as text modules (the `rules` in wrangler.jsonc), so
 * each import is the file's content as a string.
 */
declare module 'uplot/dist/uPlot.iife.min.js' {
  const text: string;
  export default text;
}
declare module '*.css' {
  const text: string;
  export default text;
}
declare module '*.browser.js' {
  const text: string;
  export default text;
}

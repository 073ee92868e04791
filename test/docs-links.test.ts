/**
 * Every link in README.md and docs/*.md leads somewhere: a relative link names a file or folder of the checkout,
 * and a `#fragment` names a heading of its target by GitHub's rule (github-slugger, over the heading's text as
 * markdown-it reads it). Links to other sites are not fetched (no network in CI).
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import GithubSlugger from 'github-slugger';
import MarkdownIt, { type Token } from 'markdown-it';
import { PROJECT_ROOT } from '../node/local/edge.ts';

const md = new MarkdownIt({ html: true });

const pages = [
  'README.md',
  ...readdirSync(path.join(PROJECT_ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

/** A heading's text as GitHub renders it (code spans' contents included, emphasis and link markup left out). */
const text = (inline: Token): string =>
  (inline.children ?? []).map((c) => (c.type === 'text' || c.type === 'code_inline' ? c.content : '')).join('');

const anchorCache = new Map<string, Set<string>>();
function anchors(file: string): Set<string> {
  let found = anchorCache.get(file);
  if (!found) {
    const slugger = new GithubSlugger();
    const tokens = md.parse(readFileSync(file, 'utf8'), {});
    found = new Set(tokens.flatMap((t, i) => (t.type === 'heading_open' ? [slugger.slug(text(tokens[i + 1]!))] : [])));
    anchorCache.set(file, found);
  }
  return found;
}

function links(tokens: Token[]): { href: string; line: number }[] {
  const out: { href: string; line: number }[] = [];
  let line = 0;
  for (const t of tokens) {
    if (t.map) line = t.map[0] + 1;
    for (const c of t.children ?? []) {
      if (c.type === 'link_open' || c.type === 'image') {
        const href = c.attrGet(c.type === 'image' ? 'src' : 'href');
        if (href) out.push({ href: String(href), line });
      }
    }
  }
  return out;
}

for (const page of pages) {
  test(`${page}: every link resolves`, () => {
    const file = path.join(PROJECT_ROOT, page);
    const dead: string[] = [];
    let checked = 0;
    for (const { href, line } of links(md.parse(readFileSync(file, 'utf8'), {}))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(href)) continue; // https:, mailto:, …: another site
      checked++;
      const [target = '', fragment] = href.split('#', 2);
      const resolved = target === '' ? file : path.resolve(path.dirname(file), decodeURIComponent(target));
      if (!existsSync(resolved)) {
        dead.push(`${page}:${line} ${href}: no such file`);
        continue;
      }
      if (fragment === undefined || fragment === '') continue;
      if (!resolved.endsWith('.md') || statSync(resolved).isDirectory()) {
        dead.push(`${page}:${line} ${href}: a #fragment into a file that is not Markdown`);
      } else if (!anchors(resolved).has(decodeURIComponent(fragment))) {
        dead.push(`${page}:${line} ${href}: no heading '#${fragment}' in ${path.relative(PROJECT_ROOT, resolved)}`);
      }
    }
    assert.deepEqual(dead, [], `dead links (${checked} checked)`);
  });
}

test('the link check sees anchors the way GitHub makes them', () => {
  const slugger = new GithubSlugger();
  const [, inline] = md.parse('## API keys and the `database` (libSQL)\n', {});
  assert.equal(slugger.slug(text(inline!)), 'api-keys-and-the-database-libsql');
  assert.ok(pages.length > 1 && pages.includes('README.md'));
});

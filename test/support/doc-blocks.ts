/**
 * The code blocks of a Markdown page, read with a Markdown parser (markdown-it), so a test can run what a page shows
 * and the page stays the single source of it.
 */
import { readFileSync } from 'node:fs';
import MarkdownIt from 'markdown-it';

export interface CodeBlock {
  /** The fence's info string (`ini`, `sh`, `bat`, …). */
  lang: string;
  content: string;
  /** The text of the paragraph just before the block (what introduces it, e.g. the file name it is meant for). */
  lead: string;
  /** 1-based line of the opening fence. */
  line: number;
}

export function codeBlocks(file: string): CodeBlock[] {
  const tokens = new MarkdownIt().parse(readFileSync(file, 'utf8'), {});
  const blocks: CodeBlock[] = [];
  let lead = '';
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t.type === 'paragraph_open') lead = tokens[i + 1]?.content ?? '';
    else if (t.type === 'heading_open') lead = '';
    else if (t.type === 'fence') {
      blocks.push({ lang: t.info.trim(), content: t.content, lead, line: (t.map?.[0] ?? 0) + 1 });
    }
  }
  return blocks;
}

/** The one block of `lang` whose introducing paragraph mentions `leadIncludes`; throws when there is not exactly one. */
export function codeBlock(file: string, lang: string, leadIncludes: string): CodeBlock {
  const found = codeBlocks(file).filter((b) => b.lang === lang && b.lead.includes(leadIncludes));
  if (found.length !== 1) {
    throw new Error(`${file}: expected one \`\`\`${lang} block introduced by '${leadIncludes}', found ${found.length}`);
  }
  return found[0]!;
}

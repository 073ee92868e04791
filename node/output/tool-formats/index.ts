/** The tool-call families by name (see node/output/traits.ts for how a model's is chosen). */
import type { ToolFormatName } from '../traits.ts';
import { hermes } from './hermes.ts';
import { llama3Json } from './llama3-json.ts';
import { mistral, mistralV11 } from './mistral.ts';
import { phi4 } from './phi4.ts';
import type { ToolFormat } from './tool-format.ts';

export type { ToolCallParser, ToolFormat, ToolParse } from './tool-format.ts';

const FORMATS: Record<ToolFormatName, ToolFormat> = {
  hermes,
  'llama3-json': llama3Json,
  mistral,
  'mistral-v11': mistralV11,
  phi4,
};

/** The family called `name`. */
export function toolFormat(name: ToolFormatName): ToolFormat {
  return FORMATS[name];
}

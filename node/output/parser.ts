/**
 * Reads one generation's raw text per its plan: the reasoning block first, then tool calls in the answer part only
 * (a call the model drafts while thinking is not a call).
 */
import type { ToolCallDelta } from '../../shared/protocol/frames.ts';
import type { OutputPlan } from './plan.ts';
import { ReasoningSplitter, type ReasoningPhase } from './reasoning.ts';
import { toolFormat, type ToolCallParser } from './tool-formats/index.ts';

/** What a piece of raw output became: answer text, reasoning text, tool-call pieces. */
export interface OutputParse {
  text: string;
  reasoning: string;
  toolCalls: ToolCallDelta[];
}

export class OutputParser {
  readonly #reasoning: ReasoningSplitter | undefined;
  readonly #tools: ToolCallParser | undefined;

  constructor(plan: OutputPlan) {
    if (plan.parseReasoning && plan.traits.reasoning) this.#reasoning = new ReasoningSplitter(plan.traits.reasoning);
    if (plan.parseTools) this.#tools = toolFormat(plan.traits.toolFormat).createParser();
  }

  /** Calls parsed so far. */
  get calls(): number {
    return this.#tools?.calls ?? 0;
  }

  /** Where the reasoning splitter is (`answer` when the plan does not read reasoning). */
  get phase(): ReasoningPhase {
    return this.#reasoning?.phase ?? 'answer';
  }

  /** Whether the output had a reasoning block. */
  get reasoned(): boolean {
    return this.#reasoning?.opened ?? false;
  }

  push(piece: string): OutputParse {
    const split = this.#reasoning ? this.#reasoning.push(piece) : { reasoning: '', text: piece };
    return this.#answer(split.reasoning, split.text, false);
  }

  /** The end of the output; `cut` when the token limit stopped it (see ToolCallParser.end). */
  end(cut = false): OutputParse {
    const split = this.#reasoning ? this.#reasoning.end() : { reasoning: '', text: '' };
    return this.#answer(split.reasoning, split.text, true, cut);
  }

  #answer(reasoning: string, text: string, end: boolean, cut = false): OutputParse {
    if (!this.#tools) return { text, reasoning, toolCalls: [] };
    const parsed = this.#tools.push(text);
    if (end) {
      const tail = this.#tools.end(cut);
      parsed.text += tail.text;
      parsed.toolCalls.push(...tail.toolCalls);
    }
    return { text: parsed.text, reasoning, toolCalls: parsed.toolCalls };
  }
}

/**
 * The tunnel codec both sides run on every frame: what each side accepts, what it refuses and what the refusal says.
 * In process, no sockets.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodeAgentFrame, decodeEdgeFrame, encodeFrame, FrameError } from '../../shared/protocol/codec.ts';
import type { AgentFrame, EdgeFrame, ModelInfo } from '../../shared/protocol/frames.ts';
import { MAX_FRAME_CHARS } from '../../shared/protocol/version.ts';

const model: ModelInfo = {
  id: 'qwen',
  kind: 'chat',
  device: 'NPU',
  sizeBytes: 1_234_567,
  digest: `sha256:${'a'.repeat(64)}`,
  capabilities: ['completion', 'tools'],
};

describe('agent → edge frames', () => {
  test('the model-management frames (models, progress, managed) and an error ending a manage op round-trip unchanged', () => {
    const frames: AgentFrame[] = [
      { type: 'models', models: [model, { id: 'bge', kind: 'embedding', device: 'CPU', dimensions: 384 }] },
      {
        type: 'progress',
        id: 'op-1',
        status: 'pulling onnx/model.onnx',
        digest: 'sha256:abc',
        total: 1000,
        completed: 250,
      },
      { type: 'progress', id: 'op-1', status: 'verifying sha256 digest' },
      { type: 'managed', id: 'op-1', loadDurationMs: 812.5 },
      { type: 'managed', id: 'op-2', wasLoaded: false },
      { type: 'error', id: 'op-3', code: 'unknown_model', message: "model 'x' is not here" },
    ];
    for (const frame of frames) assert.deepEqual(decodeAgentFrame(encodeFrame(frame)), frame);
  });

  test('a chunk with text, reasoning and a tool-call piece, and an end with usage, decode as sent', () => {
    const chunk: AgentFrame = {
      type: 'chunk',
      id: 'r1',
      text: 'Hé',
      tokens: 2,
      reasoning: 'hmm',
      toolCalls: [{ index: 0, id: 'call_1', name: 'f', arguments: '{"a"' }],
    };
    assert.deepEqual(decodeAgentFrame(encodeFrame(chunk)), chunk);
    const end: AgentFrame = {
      type: 'end',
      id: 'r1',
      finishReason: 'tool_calls',
      usage: { promptTokens: 9, completionTokens: 4 },
      device: 'NPU',
      durationMs: 40,
      ttftMs: 12,
      text: '!',
      tokens: 1,
    };
    assert.deepEqual(decodeAgentFrame(encodeFrame(end)), end);
  });

  test('bad frames are FrameErrors naming the field and the frame type, whatever the input', () => {
    const refused = (data: unknown, pattern: RegExp) =>
      assert.throws(
        () => decodeAgentFrame(data),
        (e: unknown) => e instanceof FrameError && e.code === 'bad_frame' && pattern.test(e.message),
        String(data).slice(0, 60),
      );
    refused(new Uint8Array([1, 2]), /JSON text messages, got a binary message/);
    refused('{', /not JSON/);
    refused('{"type":"progress","id":"op","status":"x","completed":-1}', /\(type "progress"\): completed:/);
    refused('{"type":"progress","id":"op","status":"x","total":1.5}', /total:/);
    refused(
      JSON.stringify({ type: 'models', models: [{ ...model, kind: 'vision' }] }),
      /\(type "models"\): models\.0\.kind:/,
    );
    refused(JSON.stringify({ type: 'managed' }), /\(type "managed"\): id:/);
    refused(JSON.stringify({ type: 'error', id: 'r', code: 'made_up', message: 'x' }), /code:/);
    refused('{"type":"manage","id":"op","op":{"action":"load","model":"m"}}', /type/);
    refused('"hello"', /bad frame: frame:/);
    refused('x'.repeat(MAX_FRAME_CHARS + 1), /exceeds the \d+-character frame limit/);
  });
});

describe('edge → agent frames', () => {
  test('every manage op decodes on the agent side; an unknown action or a missing field is refused by path', () => {
    const ops: EdgeFrame[] = [
      { type: 'manage', id: 'm1', op: { action: 'load', model: 'qwen', keepAliveMs: -1 } },
      { type: 'manage', id: 'm2', op: { action: 'unload', model: 'qwen' } },
      { type: 'manage', id: 'm3', op: { action: 'pull', model: 'onnx-community/Qwen2.5-0.5B-Instruct', name: 'qwen' } },
      { type: 'manage', id: 'm4', op: { action: 'delete', model: 'qwen' } },
      { type: 'manage', id: 'm5', op: { action: 'copy', source: 'qwen', destination: 'qwen-copy' } },
    ];
    for (const frame of ops) assert.deepEqual(decodeEdgeFrame(encodeFrame(frame)), frame);
    assert.throws(
      () => decodeEdgeFrame('{"type":"manage","id":"m","op":{"action":"format-disk"}}'),
      /\(type "manage"\): op\.action:/,
    );
    assert.throws(
      () => decodeEdgeFrame('{"type":"manage","id":"m","op":{"action":"copy","source":"a"}}'),
      /op\.destination:/,
    );
    assert.throws(
      () => decodeEdgeFrame('{"type":"manage","id":"m","op":{"action":"load","model":"m","keepAliveMs":-2}}'),
      /op\.keepAliveMs:/,
    );
    // The agent never receives agent frames: a `progress` sent to it is a bad frame, not silently taken.
    assert.throws(() => decodeEdgeFrame('{"type":"progress","id":"op","status":"x"}'), FrameError);
  });
});

/** What the agent tells the edge keeps the failure and drops the host's layout (node/tunnel/host-paths.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withoutHostPaths } from '../../node/tunnel/host-paths.ts';

test('absolute paths are cut to their last component; URLs, repo ids and fractions are left alone', () => {
  assert.equal(
    withoutHostPaths(
      "could not load model 'broken' from /srv/relay/models/broken: Load model from /srv/relay/models/broken/onnx/model.onnx failed: Protobuf parsing failed.",
    ),
    "could not load model 'broken' from …/broken: Load model from …/model.onnx failed: Protobuf parsing failed.",
  );
  assert.equal(
    withoutHostPaths("open '/tmp/a/b.onnx' failed; ~/models/x/y bad; C:\\Users\\me\\x.onnx missing"),
    "open '…/b.onnx' failed; …/y bad; …\\x.onnx missing",
  );
  const untouched =
    'fetching https://huggingface.co/org/repo/resolve/main/x.json for onnx-community/Qwen2.5-0.5B-Instruct: 1/2 files';
  assert.equal(withoutHostPaths(untouched), untouched);
});

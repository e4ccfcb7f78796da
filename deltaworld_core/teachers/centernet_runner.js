// CenterNet (MobileNetV3, 80 COCO classes) box teacher: a TF.js graph model run offline with the
// tfjs wasm backend. Reads frames from stdin, writes one JSON line of boxes per frame to stdout.
//
//   node centernet_runner.js MODEL_JSON [MIN_SCORE] [THREADS]
//
// Module folder: NODE_PATH must hold @tensorflow/tfjs-core, -converter and -backend-wasm.
// Input: frames of SIDE x SIDE x 3 RGB uint8 (SIDE = the model's input side, 512), back to back.
// Output: first a line {"ready": true, "side": SIDE, "backend": NAME}, then per frame
// {"boxes": [[x1, y1, x2, y2, score, coco_class], ...]} with corners as fractions of the frame
// (0..1) and coco_class the 0-based index of the 80 COCO classes. Errors: one line on stderr,
// exit status 2.
'use strict';

const fs = require('fs');
const path = require('path');

function fail(message) {
  process.stderr.write(`centernet: ${message}\n`);
  process.exit(2);
}

let tf;
let converter;
let wasm;
try {
  tf = require('@tensorflow/tfjs-core');
  converter = require('@tensorflow/tfjs-converter');
  wasm = require('@tensorflow/tfjs-backend-wasm');
} catch (err) {
  fail(`tfjs runtime not found on NODE_PATH (${err.message.split('\n')[0]})`);
}

// Reads the graph model and its weight shards from disk: no network, no file:// handler needed.
function diskHandler(modelJson) {
  return {
    load: async () => {
      const model = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
      const specs = [];
      const buffers = [];
      for (const group of model.weightsManifest) {
        specs.push(...group.weights);
        for (const shard of group.paths) buffers.push(fs.readFileSync(path.join(path.dirname(modelJson), shard)));
      }
      const joined = Buffer.concat(buffers);
      return {
        modelTopology: model.modelTopology,
        format: model.format,
        generatedBy: model.generatedBy,
        convertedBy: model.convertedBy,
        signature: model.signature,
        weightSpecs: specs,
        weightData: joined.buffer.slice(joined.byteOffset, joined.byteOffset + joined.byteLength),
      };
    },
  };
}

async function main() {
  const [modelJson, minScoreArg, threadsArg] = process.argv.slice(2);
  if (!modelJson || !fs.existsSync(modelJson)) fail(`model file not found: ${modelJson}`);
  const minScore = Number(minScoreArg || 0.1);
  const threads = Number(threadsArg || 1);
  const wasmDir = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')), path.sep);
  wasm.setWasmPaths(wasmDir);
  if (threads > 1) wasm.setThreadsCount(threads);
  if (!(await tf.setBackend('wasm'))) fail('the tfjs wasm backend did not start');
  await tf.ready();
  const model = await converter.loadGraphModel(diskHandler(modelJson));
  const side = model.inputs[0].shape[1];
  const frameBytes = side * side * 3;
  process.stdout.write(`${JSON.stringify({ ready: true, side, backend: tf.getBackend() })}\n`);

  let pending = Buffer.alloc(0);
  const queue = [];
  let busy = false;
  async function drain() {
    if (busy) return;
    busy = true;
    while (queue.length) {
      const frame = queue.shift();
      const rows = tf.tidy(() => {
        const input = tf.tensor4d(new Float32Array(frame), [1, side, side, 3], 'float32');
        return model.execute(input, 'tower_0/detections');
      });
      const data = await rows.data();
      rows.dispose();
      const boxes = [];
      for (let i = 0; i < data.length; i += 6) {
        const score = data[i + 4];
        if (score < minScore) continue;
        const clip = (v) => Math.min(1, Math.max(0, v / side));
        boxes.push([clip(data[i]), clip(data[i + 1]), clip(data[i + 2]), clip(data[i + 3]), score,
          Math.round(data[i + 5]) % 80]);
      }
      process.stdout.write(`${JSON.stringify({ boxes })}\n`);
    }
    busy = false;
  }
  process.stdin.on('data', (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= frameBytes) {
      queue.push(Uint8Array.from(pending.subarray(0, frameBytes)));
      pending = pending.subarray(frameBytes);
    }
    drain().catch((err) => fail(err.message.split('\n')[0]));
  });
  process.stdin.on('end', () => {
    const finish = () => (busy || queue.length ? setTimeout(finish, 5) : process.exit(0));
    if (pending.length) fail(`${pending.length} trailing bytes are not a whole ${side}x${side} RGB frame`);
    finish();
  });
}

main().catch((err) => fail(err.message.split('\n')[0]));

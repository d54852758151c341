// Unit tests of common/detector.mjs (no model file needed): node --test test/
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  ModelError, cocoResults, createDetector, detect, imageToInput, parseModelInfo,
  readOnnxMetadata, toDetections,
} from '../common/detector.mjs';

// --- a minimal protobuf writer, enough to build ModelProto-shaped bytes -------------------

function varint(n) {
  const out = [];
  while (n >= 128) {
    out.push((n % 128) | 128);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}
const utf8 = (s) => [...new TextEncoder().encode(s)];
const field = (number, wireType) => varint(number * 8 + wireType);
const lengthDelimited = (number, bytes) => [...field(number, 2), ...varint(bytes.length), ...bytes];
const entry = (key, value) => lengthDelimited(14, [...lengthDelimited(1, utf8(key)),
  ...lengthDelimited(2, utf8(value))]);

/** ModelProto-like bytes: ir_version, producer, opset, a 300-byte graph, some odd fields. */
function modelBytes(props, { graph = true } = {}) {
  return new Uint8Array([
    ...field(1, 0), ...varint(8), // ir_version
    ...lengthDelimited(2, utf8('pytorch')), // producer_name
    ...lengthDelimited(8, [...field(2, 0), ...varint(17)]), // opset_import {version: 17}
    ...(graph ? lengthDelimited(7, new Array(300).fill(0x2a)) : []), // graph (not parsed)
    ...field(90, 1), 1, 2, 3, 4, 5, 6, 7, 8, // an unknown fixed64
    ...field(91, 5), 1, 2, 3, 4, // an unknown fixed32
    ...Object.entries(props).flatMap(([k, v]) => entry(k, v)),
  ]);
}

const DETECTOR_INFO = JSON.stringify({ graph: 'detector', input_format: 'BGR',
  input_dtype: 'float32', opset: 17, other: { nested: [1, 2] } });
const CLASS_MAP = JSON.stringify([{ id: 1, name: 'person' }, { id: 3, name: 'car' },
  { id: 18, name: 'chien – dog' }]);

test('readOnnxMetadata reads metadata_props and skips the other fields', () => {
  const props = readOnnxMetadata(modelBytes({ retina_focal: DETECTOR_INFO, class_map: CLASS_MAP }));
  assert.deepEqual(props, { retina_focal: DETECTOR_INFO, class_map: CLASS_MAP });
  assert.deepEqual(readOnnxMetadata(modelBytes({})), {});
});

test('readOnnxMetadata refuses what is not an ONNX model', () => {
  const notOnnx = [
    new TextEncoder().encode('import torch\nprint("hello")\n'),
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]),
    modelBytes({ retina_focal: DETECTOR_INFO }).subarray(0, 100), // cut inside the graph
    modelBytes({ retina_focal: DETECTOR_INFO }, { graph: false }),
    new Uint8Array(0),
  ];
  for (const bytes of notOnnx) {
    assert.throws(() => readOnnxMetadata(bytes), (err) => err instanceof ModelError
      && /^not an ONNX model file/.test(err.message));
  }
});

test('parseModelInfo takes a detector graph and its class map', () => {
  const info = parseModelInfo({ retina_focal: DETECTOR_INFO, class_map: CLASS_MAP });
  assert.equal(info.inputFormat, 'BGR');
  assert.equal(info.inputDtype, 'float32');
  assert.equal(info.classMap[2].name, 'chien – dog');
  assert.deepEqual(info.info.other, { nested: [1, 2] });
  assert.equal(parseModelInfo({ retina_focal: DETECTOR_INFO, class_map: 'null' }).classMap, null);
  assert.equal(parseModelInfo({ retina_focal: DETECTOR_INFO }).classMap, null);
});

test('parseModelInfo refuses head graphs and bad metadata, saying what to do', () => {
  const reexport = /re-export it with --graph detector/;
  const head = JSON.stringify({ graph: 'head', input_format: 'BGR', input_dtype: 'float32' });
  const old = JSON.stringify({ input_format: 'BGR' }); // before the "graph" key existed
  assert.throws(() => parseModelInfo({ retina_focal: head }), reexport);
  assert.throws(() => parseModelInfo({ retina_focal: old }), reexport);
  assert.throws(() => parseModelInfo({}), /not a retina_focal export/);
  assert.throws(() => parseModelInfo({ retina_focal: '{bad' }), /not valid JSON/);
  const bad = (changes) => JSON.stringify({ ...JSON.parse(DETECTOR_INFO), ...changes });
  assert.throws(() => parseModelInfo({ retina_focal: bad({ input_format: 'L' }) }), /input_format/);
  assert.throws(() => parseModelInfo({ retina_focal: bad({ input_dtype: 'float16' }) }),
    /input_dtype/);
  assert.throws(() => parseModelInfo({ retina_focal: DETECTOR_INFO, class_map: '[{"id": 1}]' }),
    /class_map/);
});

test('imageToInput makes planar CHW in the model channel order and dtype', () => {
  // 2 x 1 image: pixel 0 = (10, 20, 30, alpha 0), pixel 1 = (40, 50, 60, alpha 255)
  const rgba = new Uint8ClampedArray([10, 20, 30, 0, 40, 50, 60, 255]);
  const bgr = imageToInput(rgba, 2, 1, { inputFormat: 'BGR', inputDtype: 'float32' });
  assert.ok(bgr instanceof Float32Array);
  assert.deepEqual([...bgr], [30, 60, 20, 50, 10, 40]);
  const rgb = imageToInput(rgba, 2, 1, { inputFormat: 'RGB', inputDtype: 'uint8' });
  assert.ok(rgb instanceof Uint8Array);
  assert.deepEqual([...rgb], [10, 40, 20, 50, 30, 60]);
  assert.throws(() => imageToInput(rgba, 3, 1, { inputFormat: 'RGB', inputDtype: 'uint8' }));
});

test('toDetections gives COCO boxes, category ids and names', () => {
  const boxes = new Float32Array([1.5, 2.25, 11.1, 20.7, 0, 0, 5, 5]);
  const scores = new Float32Array([0.9, 0.3]);
  const classes = new BigInt64Array([2n, 0n]);
  const classMap = JSON.parse(CLASS_MAP);
  const dets = toDetections(boxes, scores, classes, classMap);
  assert.equal(dets.length, 2);
  assert.deepEqual(dets[0].bbox.slice(0, 2), [1.5, 2.25]);
  // w, h as float32 arithmetic gives them (as detectron2's XYXY -> XYWH on float32)
  assert.equal(dets[0].bbox[2], Math.fround(boxes[2] - boxes[0]));
  assert.equal(dets[0].bbox[3], Math.fround(boxes[3] - boxes[1]));
  assert.equal(dets[0].score, scores[0]);
  assert.deepEqual([dets[0].category_id, dets[0].class_index, dets[0].class_name],
    [18, 2, 'chien – dog']);
  assert.deepEqual([dets[1].category_id, dets[1].class_name], [1, 'person']);
  const plain = toDetections(boxes, scores, classes, null);
  assert.deepEqual([plain[0].category_id, plain[0].class_name], [2, '2']);
  assert.deepEqual(toDetections(new Float32Array(0), new Float32Array(0),
    new BigInt64Array(0), classMap), []);
  assert.throws(() => toDetections(boxes, scores, new BigInt64Array([3n, 0n]), classMap),
    /outside its class_map/);
  assert.throws(() => toDetections(boxes, scores, new BigInt64Array([1n]), null), /disagree/);
  assert.deepEqual(cocoResults(7, dets)[1],
    { image_id: 7, category_id: 1, bbox: dets[1].bbox, score: dets[1].score });
});

// --- createDetector / detect against a stand-in for the onnxruntime module ---------------

function fakeOrt({ inputs = ['image'], outputs = ['boxes', 'scores', 'classes'],
  inputType = 'uint8' } = {}) {
  const fed = [];
  class Tensor {
    constructor(type, data, dims) {
      Object.assign(this, { type, data, dims });
    }
  }
  const session = {
    inputNames: inputs,
    outputNames: outputs,
    inputMetadata: [{ name: 'image', isTensor: true, type: inputType, shape: [3, 'h', 'w'] }],
    async run(feeds, names) {
      fed.push({ feeds, names });
      return {
        boxes: new Tensor('float32', new Float32Array([1, 2, 4, 8]), [1, 4]),
        scores: new Tensor('float32', new Float32Array([0.5]), [1]),
        classes: new Tensor('int64', new BigInt64Array([1n]), [1]),
      };
    },
  };
  return { Tensor, fed, InferenceSession: { create: async () => session } };
}

test('createDetector and detect run the session with the right tensor', async () => {
  const rgbU8 = JSON.stringify({ graph: 'detector', input_format: 'RGB', input_dtype: 'uint8' });
  const bytes = modelBytes({ retina_focal: rgbU8, class_map: CLASS_MAP });
  const ort = fakeOrt();
  const detector = await createDetector(ort, bytes);
  const rgba = new Uint8Array(2 * 3 * 4).fill(7);
  const dets = await detect(ort, detector, rgba, 2, 3);
  const { feeds, names } = ort.fed[0];
  assert.deepEqual(names, ['boxes', 'scores', 'classes']);
  assert.equal(feeds.image.type, 'uint8');
  assert.deepEqual(feeds.image.dims, [3, 3, 2]);
  assert.deepEqual(dets, [{ bbox: [1, 2, 3, 6], score: 0.5, category_id: 3, class_index: 1,
    class_name: 'car' }]);

  await assert.rejects(createDetector(fakeOrt({ inputType: 'float32' }), bytes),
    /input is float32 but its metadata says input_dtype uint8/);
  await assert.rejects(createDetector(fakeOrt({ outputs: ['logits_p3', 'deltas_p3'] }), bytes),
    /--graph detector/);
  const failing = { InferenceSession: { create: async () => { throw new Error('bad\nmore'); } } };
  await assert.rejects(createDetector(failing, bytes), /cannot load the model: bad$/);
});

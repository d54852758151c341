// Unit tests of common/detector.mjs (no model file needed): node --test test/
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  CategoryError, ModelError, aboveScore, cocoResults, createDetector, detect, drawingOrder,
  imageToInput, matchCategories, offTestSize, parseModelInfo, parseScoreThresh, readOnnxMetadata,
  testResizeShape, testSizeNote, toDetections,
} from '../common/detector.mjs';
import { field, lengthDelimited, utf8, varint } from './fake_model.mjs';

// --- ModelProto-shaped bytes, with the protobuf writer of fake_model.mjs ------------------

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

test('createDetector / detect: another class map (matched ids) and a score threshold', async () => {
  const bytes = modelBytes({ retina_focal: DETECTOR_INFO, class_map: CLASS_MAP });
  const ort = fakeOrt({ inputType: 'float32' });
  const detector = await createDetector(ort, bytes);
  const rgba = new Uint8Array(4).fill(7);
  const other = [{ id: 1, name: 'person' }, { id: 99, name: 'car' }, { id: 18, name: 'x' }];
  const [d] = await detect(ort, detector, rgba, 1, 1, { classMap: other });
  assert.deepEqual([d.category_id, d.class_name], [99, 'car']);
  // 0.5 is not above 0.5
  assert.deepEqual(await detect(ort, detector, rgba, 1, 1, { scoreThresh: 0.5 }), []);
  assert.equal((await detect(ort, detector, rgba, 1, 1, { scoreThresh: 0.49 })).length, 1);
  // class_map null passed on purpose: the class index
  const [plain] = await detect(ort, detector, rgba, 1, 1, { classMap: null });
  assert.deepEqual([plain.category_id, plain.class_name], [1, '1']);
});

// --- the model's classes against a COCO json's categories --------------------------------

const MODEL_MAP = [{ id: 3, name: 'ellipse' }, { id: 7, name: 'rectangle' },
  { id: 12, name: 'triangle' }];

test('matchCategories: the same names under the same ids (any order): the class map', () => {
  const json = [{ id: 12, name: 'triangle', supercategory: 'shape' }, { id: 3, name: 'ellipse' },
    { id: 7, name: 'rectangle' }];
  const { classMap, warning } = matchCategories(MODEL_MAP, 3, json, 'val.json');
  assert.deepEqual(classMap, MODEL_MAP);
  assert.equal(warning, null);
});

test('matchCategories: the same names under other ids: the json\'s ids, one warning', () => {
  const json = [{ id: 12, name: 'ellipse' }, { id: 7, name: 'rectangle' },
    { id: 3, name: 'triangle' }];
  const { classMap, warning } = matchCategories(MODEL_MAP, 3, json, 'val.json');
  assert.deepEqual(classMap, [{ id: 12, name: 'ellipse' }, { id: 7, name: 'rectangle' },
    { id: 3, name: 'triangle' }]);
  assert.equal(warning, 'val.json gives the model\'s classes other ids: matched by name '
    + '(ellipse 3 -> 12, triangle 12 -> 3)');
  assert.ok(!warning.includes('\n'));
  // the same order under other ids is matched the same way
  const renumbered = [{ id: 1, name: 'ellipse' }, { id: 2, name: 'rectangle' },
    { id: 3, name: 'triangle' }];
  assert.deepEqual(matchCategories(MODEL_MAP, 3, renumbered).classMap, renumbered);
});

test('matchCategories: other names are refused in one line naming them', () => {
  const refused = (json, pattern) => assert.throws(() => matchCategories(MODEL_MAP, 3, json),
    (err) => err instanceof CategoryError && pattern.test(err.message)
      && !err.message.includes('\n'));
  // a model class missing from the json
  refused([{ id: 3, name: 'ellipse' }, { id: 7, name: 'rectangle' }],
    /only in the model: triangle; only in the json: none/);
  // the json has a class the model lacks
  refused([...MODEL_MAP, { id: 20, name: 'star' }],
    /only in the model: none; only in the json: star/);
  // one renamed
  refused([{ id: 3, name: 'circle' }, { id: 7, name: 'rectangle' }, { id: 12, name: 'triangle' }],
    /only in the model: ellipse; only in the json: circle/);
  // the same set of names, another count (a name twice)
  refused([...MODEL_MAP, { id: 30, name: 'ellipse' }], /ellipse \(twice in the json\)/);
  // not categories
  refused(undefined, /no "categories" list/);
  refused([], /no "categories" list/);
  refused([{ id: '3', name: 'ellipse' }], /categories\[0\] has no numeric "id"/);
  refused([{ id: 3, name: 'ellipse' }, { id: 3, name: 'triangle' }], /category id 3 appears/);
});

test('matchCategories: no class map: the json\'s categories sorted by id, as many as C', () => {
  const json = [{ id: 12, name: 'triangle' }, { id: 3, name: 'ellipse' },
    { id: 7, name: 'rectangle' }];
  const { classMap, warning } = matchCategories(null, 3, json);
  assert.deepEqual(classMap, MODEL_MAP);
  assert.equal(warning, null);
  assert.throws(() => matchCategories(null, 4, json), (err) => err instanceof CategoryError
    && /has 4 classes and no class_map, the json 3 categories \(ellipse, rectangle, triangle\)/
      .test(err.message));
  assert.throws(() => matchCategories(null, null, json), /MODEL\.RETINANET\.NUM_CLASSES/);
});

test('parseModelInfo reads the class count and the test size (older files: none)', () => {
  const meta = (extra) => ({ retina_focal: JSON.stringify({ ...JSON.parse(DETECTOR_INFO),
    ...extra }) });
  const info = parseModelInfo(meta({ config: { 'MODEL.RETINANET.NUM_CLASSES': 3 },
    test_size: { min_size: 800, max_size: 1333 } }));
  assert.equal(info.numClasses, 3);
  assert.deepEqual(info.testSize, { minSize: 800, maxSize: 1333 });
  const old = parseModelInfo({ retina_focal: DETECTOR_INFO });
  assert.equal(old.numClasses, null);
  assert.equal(old.testSize, null);
  assert.throws(() => parseModelInfo(meta({ test_size: { min_size: '800' } })), /test_size/);
});

// --- the test size -------------------------------------------------------------------------

test('testResizeShape is Detectron2\'s ResizeShortestEdge output shape', () => {
  assert.deepEqual(testResizeShape(96, 160, 128, 128), [77, 128]);
  assert.deepEqual(testResizeShape(160, 96, 128, 128), [128, 77]);
  assert.deepEqual(testResizeShape(480, 640, 800, 1333), [800, 1067]);
  assert.deepEqual(testResizeShape(640, 480, 800, 1333), [1067, 800]);
  assert.deepEqual(testResizeShape(128, 128, 128, 128), [128, 128]);
  assert.deepEqual(testResizeShape(100, 1000, 800, 1333), [133, 1333]); // the long side capped
  assert.deepEqual(testResizeShape(64, 64, 128, 128), [128, 128]); // enlarged too
  assert.deepEqual(testResizeShape(96, 160, 0, 128), [96, 160]); // min_size 0: no resize
  // the values Python's get_output_shape gives (its float steps, int(x + 0.5))
  assert.deepEqual(testResizeShape(333, 500, 800, 1333), [800, 1201]);
  assert.deepEqual(testResizeShape(427, 640, 800, 1333), [800, 1199]);
});

test('offTestSize and testSizeNote: which images are not at the test size, in one line', () => {
  const t = { minSize: 128, maxSize: 128 };
  assert.equal(offTestSize(t, 128, 128), null);
  assert.equal(offTestSize(null, 160, 96), null); // an older file: no check
  assert.equal(offTestSize({ minSize: 0, maxSize: 0 }, 160, 96), null);
  const resized = offTestSize(t, 160, 96); // width 160, height 96
  assert.deepEqual(resized, { width: 128, height: 77 });
  const note = testSizeNote(t, [{ name: 'x.png', width: 96, height: 160,
    resized: offTestSize(t, 96, 160) }, { name: 'y.png', width: 1, height: 2, resized }], 8);
  assert.equal(note, '2 of 8 images are not at the model\'s test size (INPUT.MIN_SIZE_TEST 128, '
    + 'MAX_SIZE_TEST 128; e.g. x.png is 96x160, the test resize gives 77x128): the graph runs '
    + 'them as they are, so their detections differ from Python\'s eval, which resizes them; '
    + 'resize them first');
  const one = testSizeNote(t, [{ name: 'x.png', width: 96, height: 160,
    resized: { width: 77, height: 128 } }], 1);
  assert.equal(one, 'the image is not at the model\'s test size (INPUT.MIN_SIZE_TEST 128, '
    + 'MAX_SIZE_TEST 128; it is 96x160, the test resize gives 77x128): the graph runs it as it '
    + 'is, so its detections differ from Python\'s eval, which resizes it; resize it first');
});

// --- score threshold, drawing order --------------------------------------------------------

test('parseScoreThresh takes a number in [0, 1], else one line naming the value', () => {
  assert.equal(parseScoreThresh('0'), 0);
  assert.equal(parseScoreThresh('0.3'), 0.3);
  assert.equal(parseScoreThresh('1'), 1);
  assert.equal(parseScoreThresh('.5'), 0.5);
  assert.equal(parseScoreThresh('5e-1'), 0.5);
  for (const bad of ['-0.1', '1.5', 'abc', '', ' ', 'NaN', 'Infinity', '0x1', '0.3.1']) {
    assert.throws(() => parseScoreThresh(bad, '--score-thresh'),
      new RegExp(`^Error: --score-thresh wants a number in \\[0, 1\\], got `));
  }
  assert.throws(() => parseScoreThresh('-1', '--score-thresh'), { message:
    '--score-thresh wants a number in [0, 1], got -1' });
});

test('aboveScore keeps the scores strictly above the threshold, in order', () => {
  const dets = [{ score: 0.9 }, { score: 0.5 }, { score: 0.3 }, { score: 0.1 }];
  assert.deepEqual(aboveScore(dets, 0.3), [{ score: 0.9 }, { score: 0.5 }]);
  assert.deepEqual(aboveScore(dets, 0), dets);
  assert.deepEqual(aboveScore(dets, 1), []);
});

test('drawingOrder: lowest score first, the best last (on top)', () => {
  const dets = [{ score: 0.9, n: 'a' }, { score: 0.5, n: 'b' }, { score: 0.5, n: 'c' },
    { score: 0.1, n: 'd' }];
  assert.deepEqual(drawingOrder(dets).map((d) => d.n), ['d', 'c', 'b', 'a']);
  assert.deepEqual(dets.map((d) => d.n), ['a', 'b', 'c', 'd']); // not changed in place
  assert.deepEqual(drawingOrder([{ score: 0.2, n: 'x' }, { score: 0.7, n: 'y' }]).map((d) => d.n),
    ['x', 'y']);
});

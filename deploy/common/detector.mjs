// Shared by the Node.js client (node/detect.mjs) and the web page (web/app.mjs): pure
// JavaScript (no Node-only APIs), so both run an exported retina_focal detector the same way.
//
// The model contract (a retina_focal export with `--graph detector`, ONNX opset 17):
//   input   image    (3, H, W)  float32 or uint8 (metadata input_dtype), CHW planar, 0-255,
//                               channels in metadata input_format ("BGR" or "RGB"), any H, W
//   outputs boxes    (N, 4)     float32  x1, y1, x2, y2 in the input image's pixels
//           scores   (N,)       float32
//           classes  (N,)       int64    contiguous class index 0..C-1
//   metadata_props  retina_focal  JSON {graph: "detector", input_format, input_dtype,
//                                 config: {"MODEL.RETINANET.NUM_CLASSES": C, ...},
//                                 test_size: {min_size, max_size} (newer exports), ...}
//                   class_map     JSON null, or [{id: <COCO category id>, name}, ...] by index
//
// The ONNX Runtime JavaScript APIs (onnxruntime-node, onnxruntime-web 1.31) expose no custom
// metadata_props, so readOnnxMetadata() reads them from the model file's protobuf itself.

/** The graph's input and output names. */
export const INPUT_NAME = 'image';
export const OUTPUT_NAMES = ['boxes', 'scores', 'classes'];

/** A problem with the model file, worded for a user (one line, no stack trace needed). */
export class ModelError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ModelError';
  }
}

// ---------------------------------------------------------------------------------------
// metadata_props from the ONNX protobuf
// ---------------------------------------------------------------------------------------

// ModelProto fields used here (onnx.proto): 1 ir_version (varint), 7 graph (message),
// 14 metadata_props (repeated StringStringEntryProto {1: key, 2: value}).
const IR_VERSION_FIELD = 1;
const GRAPH_FIELD = 7;
const METADATA_FIELD = 14;

/** Reads a base-128 varint at `pos` of `bytes`; returns [value (a Number), next position]. */
function readVarint(bytes, pos, end) {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new ModelError(`truncated varint at byte ${pos}`);
    const byte = bytes[pos++];
    value += (byte & 0x7f) * scale; // arithmetic, not bit ops: lengths can pass 2^31
    if ((byte & 0x80) === 0) return [value, pos];
    scale *= 128;
  }
  throw new ModelError(`overlong varint at byte ${pos}`);
}

/**
 * Walks the protobuf fields of bytes[start, end) and calls visit(field, wireType, value,
 * pos) for each; value: a Number for varints, [begin, end) offsets for length-delimited
 * fields (never copied: a model's graph field is the whole weights), null otherwise.
 */
function walkFields(bytes, start, end, visit) {
  let pos = start;
  while (pos < end) {
    const fieldStart = pos;
    let key;
    [key, pos] = readVarint(bytes, pos, end);
    const field = Math.floor(key / 8);
    const wireType = key % 8;
    if (field === 0) throw new ModelError(`field number 0 at byte ${fieldStart}`);
    let value = null;
    if (wireType === 0) {
      [value, pos] = readVarint(bytes, pos, end);
    } else if (wireType === 1) {
      pos += 8; // fixed64
    } else if (wireType === 2) {
      let length;
      [length, pos] = readVarint(bytes, pos, end);
      value = [pos, pos + length];
      pos += length;
    } else if (wireType === 5) {
      pos += 4; // fixed32
    } else {
      throw new ModelError(`unsupported wire type ${wireType} at byte ${fieldStart}`);
    }
    if (pos > end) throw new ModelError(`field ${field} at byte ${fieldStart} runs past the end`);
    visit(field, wireType, value);
  }
}

/**
 * The metadata_props of an ONNX model file.
 *
 * @param {Uint8Array} bytes  the whole .onnx file
 * @returns {Object<string, string>}  key -> value (both strings, as stored)
 * @throws {ModelError}  when the bytes are not an ONNX ModelProto
 */
export function readOnnxMetadata(bytes) {
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const props = {};
  let hasIrVersion = false;
  let hasGraph = false;
  try {
    walkFields(bytes, 0, bytes.length, (field, wireType, value) => {
      if (field === IR_VERSION_FIELD && wireType === 0) hasIrVersion = true;
      if (field === GRAPH_FIELD && wireType === 2) hasGraph = true;
      if (field !== METADATA_FIELD || wireType !== 2) return;
      let key = '';
      let text = '';
      walkFields(bytes, value[0], value[1], (f, wt, v) => {
        if (wt !== 2) return;
        if (f === 1) key = utf8.decode(bytes.subarray(v[0], v[1]));
        if (f === 2) text = utf8.decode(bytes.subarray(v[0], v[1]));
      });
      props[key] = text;
    });
  } catch (err) {
    throw new ModelError(`not an ONNX model file (${err.message})`);
  }
  if (!hasIrVersion || !hasGraph) {
    throw new ModelError('not an ONNX model file (no ir_version or graph field)');
  }
  return props;
}

// ---------------------------------------------------------------------------------------
// the retina_focal metadata
// ---------------------------------------------------------------------------------------

/**
 * @typedef {Object} ModelInfo
 * @property {'BGR'|'RGB'} inputFormat  channel order of the input planes
 * @property {'float32'|'uint8'} inputDtype  element type of the input tensor
 * @property {Array<{id: number, name: string}>|null} classMap  entry k: class index k
 * @property {number|null} numClasses  the graph's class count C (the metadata's config
 *     "MODEL.RETINANET.NUM_CLASSES"), null where the metadata lacks it
 * @property {{minSize: number, maxSize: number}|null} testSize  the resize Python's eval applies
 *     first (INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST; minSize 0: none); null for older exports
 * @property {Object} info  the whole parsed `retina_focal` metadata object
 */

/** Parses one JSON metadata value, naming the key when it is not JSON. */
function parseJsonProp(props, key) {
  try {
    return JSON.parse(props[key]);
  } catch (err) {
    throw new ModelError(`metadata '${key}' is not valid JSON (${err.message})`);
  }
}

/**
 * Checks and extracts what the clients need from the metadata_props of a retina_focal export.
 *
 * @param {Object<string, string>} props  from readOnnxMetadata()
 * @returns {ModelInfo}
 * @throws {ModelError}  not a retina_focal export, not a detector graph, or bad values
 */
export function parseModelInfo(props) {
  if (!('retina_focal' in props)) {
    throw new ModelError("no 'retina_focal' metadata: not a retina_focal export "
      + '(export the model with retina_focal\'s export command and --graph detector)');
  }
  const info = parseJsonProp(props, 'retina_focal');
  if (info === null || typeof info !== 'object' || Array.isArray(info)) {
    throw new ModelError("metadata 'retina_focal' is not a JSON object");
  }
  if (info.graph !== 'detector') {
    // older exports have no "graph" key: they are head-only graphs (raw logits and deltas)
    const graph = info.graph === undefined ? 'head (no graph key)' : JSON.stringify(info.graph);
    throw new ModelError(`the model is a ${graph} graph whose outputs are raw head outputs, `
      + 'not detections: re-export it with --graph detector');
  }
  if (info.input_format !== 'BGR' && info.input_format !== 'RGB') {
    throw new ModelError(`metadata input_format is ${JSON.stringify(info.input_format)}, `
      + 'expected "BGR" or "RGB"');
  }
  if (info.input_dtype !== 'float32' && info.input_dtype !== 'uint8') {
    throw new ModelError(`metadata input_dtype is ${JSON.stringify(info.input_dtype)}, `
      + 'expected "float32" or "uint8"');
  }
  const classMap = 'class_map' in props ? parseJsonProp(props, 'class_map') : null;
  if (classMap !== null) {
    const ok = Array.isArray(classMap) && classMap.every((e) => e !== null
      && typeof e === 'object' && Number.isFinite(e.id) && typeof e.name === 'string');
    if (!ok) {
      throw new ModelError('metadata class_map is neither null nor a list of {"id", "name"}');
    }
  }
  const config = info.config !== null && typeof info.config === 'object' ? info.config : {};
  const c = config['MODEL.RETINANET.NUM_CLASSES'];
  const numClasses = Number.isInteger(c) && c > 0 ? c : null;
  let testSize = null;
  if (info.test_size !== undefined && info.test_size !== null) {
    const t = info.test_size;
    const ok = typeof t === 'object' && Number.isInteger(t.min_size) && t.min_size >= 0
      && Number.isInteger(t.max_size) && t.max_size >= 0;
    if (!ok) {
      throw new ModelError(`metadata test_size is ${JSON.stringify(t)}, expected `
        + '{"min_size": <int >= 0>, "max_size": <int >= 0>}');
    }
    testSize = { minSize: t.min_size, maxSize: t.max_size };
  }
  return { inputFormat: info.input_format, inputDtype: info.input_dtype, classMap, numClasses,
    testSize, info };
}

/** readOnnxMetadata() then parseModelInfo(): the ModelInfo of a model file's bytes. */
export function modelInfoFromBytes(bytes) {
  return parseModelInfo(readOnnxMetadata(bytes));
}

// ---------------------------------------------------------------------------------------
// the model's classes against a COCO json's categories
// ---------------------------------------------------------------------------------------

/** A COCO json whose categories cannot be the model's classes (one line, for a user). */
export class CategoryError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CategoryError';
  }
}

/** "a, b, c", or "none". */
const listed = (names) => (names.length ? names.join(', ') : 'none');

/** The names that appear more than once in `names`, once each. */
const repeated = (names) => [...new Set(names.filter((n, i) => names.indexOf(n) !== i))];

/**
 * The class map to write COCO results with, for a COCO json's categories: results must carry
 * the json's category ids for the model's classes, matched by name (as Python's eval does).
 *
 * - the model's class_map has the json's names under the same ids: it, unchanged;
 * - the same names under other ids: class k gets the json's id for its name, with a warning;
 * - other names (one missing on either side, or another count): a CategoryError naming them;
 * - no class_map (null): the json's categories sorted by id are the classes 0..C-1, where
 *   they are exactly `numClasses` (C), else a CategoryError.
 *
 * @param {Array<{id: number, name: string}>|null} classMap  the model's (ModelInfo.classMap)
 * @param {number|null} numClasses  the graph's class count (ModelInfo.numClasses)
 * @param {*} categories  the json's "categories" value
 * @param {string} [jsonName]  how to name the json in the warning
 * @returns {{classMap: Array<{id: number, name: string}>, warning: string|null}}  warning:
 *     one line (no prefix) when the ids were matched by name
 * @throws {CategoryError}
 */
export function matchCategories(classMap, numClasses, categories, jsonName = 'the COCO json') {
  if (!Array.isArray(categories) || categories.length === 0) {
    throw new CategoryError('the json has no "categories" list (or it is empty)');
  }
  categories.forEach((c, i) => {
    if (c === null || typeof c !== 'object' || !Number.isFinite(c.id)
        || typeof c.name !== 'string') {
      throw new CategoryError(`categories[${i}] has no numeric "id" or no "name"`);
    }
  });
  const twiceIds = repeated(categories.map((c) => c.id));
  if (twiceIds.length) {
    throw new CategoryError(`category id ${twiceIds[0]} appears more than once in "categories"`);
  }
  const json = categories.map((c) => ({ id: c.id, name: c.name }));

  if (classMap === null) {
    const sorted = [...json].sort((a, b) => a.id - b.id);
    if (numClasses === null) {
      throw new CategoryError('the model has no class_map and its metadata does not give its '
        + 'class count (config MODEL.RETINANET.NUM_CLASSES): the json\'s categories cannot be '
        + 'matched to its classes');
    }
    if (sorted.length !== numClasses) {
      throw new CategoryError(`the model has ${numClasses} classes and no class_map, the json `
        + `${json.length} categories (${listed(sorted.map((c) => c.name))}): they cannot be `
        + 'its classes; use a json of the classes it was trained on');
    }
    return { classMap: sorted, warning: null };
  }

  const modelNames = classMap.map((c) => c.name);
  const jsonNames = json.map((c) => c.name);
  const jsonIdOf = new Map(json.map((c) => [c.name, c.id]));
  const sameIds = classMap.length === json.length
    && classMap.every((c) => json.some((j) => j.id === c.id && j.name === c.name))
    && json.every((j) => classMap.some((c) => j.id === c.id && j.name === c.name));
  if (sameIds) return { classMap, warning: null };

  const onlyModel = [...new Set(modelNames.filter((n) => !jsonIdOf.has(n)))];
  const onlyJson = [...new Set(jsonNames.filter((n) => !modelNames.includes(n)))];
  if (onlyModel.length || onlyJson.length) {
    throw new CategoryError('the json\'s categories are not the model\'s classes (only in the '
      + `model: ${listed(onlyModel)}; only in the json: ${listed(onlyJson)}): use a json of the `
      + 'classes the model was trained on');
  }
  const twice = repeated(modelNames).map((n) => `${n} (twice in the model)`)
    .concat(repeated(jsonNames).map((n) => `${n} (twice in the json)`));
  if (twice.length || classMap.length !== json.length) {
    throw new CategoryError(`the model's ${classMap.length} classes and the json's `
      + `${json.length} categories cannot be matched by name: ${listed(twice)}`);
  }
  const matched = classMap.map((c) => ({ id: jsonIdOf.get(c.name), name: c.name }));
  const moved = classMap.filter((c, k) => c.id !== matched[k].id)
    .map((c) => `${c.name} ${c.id} -> ${jsonIdOf.get(c.name)}`);
  return { classMap: matched,
    warning: `${jsonName} gives the model's classes other ids: matched by name `
      + `(${moved.join(', ')})` };
}

// ---------------------------------------------------------------------------------------
// the model's test size (the resize Python's eval applies before the model)
// ---------------------------------------------------------------------------------------

/**
 * The size Detectron2's ResizeShortestEdge(minSize, maxSize) gives an image of height x
 * width, computed as its get_output_shape does (the same float steps, so the same rounding).
 *
 * @param {number} height
 * @param {number} width
 * @param {number} minSize  INPUT.MIN_SIZE_TEST: the short side's length; 0: no resize
 * @param {number} maxSize  INPUT.MAX_SIZE_TEST: the long side's cap (0: none)
 * @returns {[number, number]}  [new height, new width]
 */
export function testResizeShape(height, width, minSize, maxSize) {
  if (!(minSize > 0)) return [height, width];
  const size = minSize;
  const scale = size / Math.min(height, width);
  let [newh, neww] = height < width ? [size, scale * width] : [scale * height, size];
  if (maxSize > 0 && Math.max(newh, neww) > maxSize) {
    const capScale = maxSize / Math.max(newh, neww);
    newh *= capScale;
    neww *= capScale;
  }
  return [Math.trunc(newh + 0.5), Math.trunc(neww + 0.5)];
}

/**
 * Where an image is not at the model's test size: the size the test resize would give it.
 *
 * @param {{minSize: number, maxSize: number}|null} testSize  ModelInfo.testSize
 * @param {number} width
 * @param {number} height
 * @returns {{width: number, height: number}|null}  null: at the test size, or no test size known
 */
export function offTestSize(testSize, width, height) {
  if (!testSize) return null;
  const [h, w] = testResizeShape(height, width, testSize.minSize, testSize.maxSize);
  return h === height && w === width ? null : { width: w, height: h };
}

/**
 * The one-line note for images that are not at the model's test size (no prefix).
 *
 * @param {{minSize: number, maxSize: number}} testSize
 * @param {Array<{name: string, width: number, height: number,
 *     resized: {width: number, height: number}}>} off  those images (at least one)
 * @param {number} total  how many images ran
 * @returns {string}
 */
export function testSizeNote(testSize, off, total) {
  const e = off[0];
  const keys = `INPUT.MIN_SIZE_TEST ${testSize.minSize}, MAX_SIZE_TEST ${testSize.maxSize}`;
  const sizes = `${e.width}x${e.height}, the test resize gives `
    + `${e.resized.width}x${e.resized.height}`;
  if (total === 1) {
    return `the image is not at the model's test size (${keys}; it is ${sizes}): `
      + 'the graph runs it as it is, so its detections differ from Python\'s eval, which '
      + 'resizes it; resize it first';
  }
  return `${off.length} of ${total} images are not at the model's test size (${keys}; e.g. `
    + `${e.name} is ${sizes}): the graph runs them as they are, so their detections differ `
    + 'from Python\'s eval, which resizes them; resize them first';
}

// ---------------------------------------------------------------------------------------
// score threshold and drawing order
// ---------------------------------------------------------------------------------------

/**
 * A score threshold typed by a user: a number in [0, 1].
 *
 * @param {string} text
 * @param {string} [what]  how the message names it
 * @returns {number}
 * @throws {Error}  one line: "<what> wants a number in [0, 1], got <text>"
 */
export function parseScoreThresh(text, what = 'the score threshold') {
  const value = Number(text);
  if (typeof text !== 'string' || !/^\s*(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/.test(text)
      || !(value >= 0 && value <= 1)) {
    throw new Error(`${what} wants a number in [0, 1], got ${text === '' ? '""' : text}`);
  }
  return value;
}

/** The detections whose score is above `thresh` (strictly, as Detectron2), in their order. */
export function aboveScore(detections, thresh) {
  return detections.filter((d) => d.score > thresh);
}

/**
 * The order to draw detections in: lowest score first, the best last (on top); of equal
 * scores, the one listed first is drawn last.
 */
export function drawingOrder(detections) {
  return detections.map((d, i) => [d, i])
    .sort((a, b) => a[0].score - b[0].score || b[1] - a[1])
    .map(([d]) => d);
}

// ---------------------------------------------------------------------------------------
// pre- and post-processing
// ---------------------------------------------------------------------------------------

/**
 * The input tensor's data for one decoded image.
 *
 * @param {Uint8Array|Uint8ClampedArray} rgba  (H, W, 4) row-major RGBA pixels, 0-255; alpha is
 *     dropped without compositing (as PIL's convert("RGB") does)
 * @param {number} width  W
 * @param {number} height  H
 * @param {ModelInfo} info  its inputFormat and inputDtype
 * @returns {Float32Array|Uint8Array}  (3, H, W) planar: all of channel 0, then 1, then 2, in
 *     info.inputFormat order, values 0-255
 */
export function imageToInput(rgba, width, height, info) {
  const n = width * height;
  if (!(n > 0) || rgba.length !== 4 * n) {
    throw new Error(`RGBA data of length ${rgba.length} does not match ${width}x${height}`);
  }
  const out = info.inputDtype === 'uint8' ? new Uint8Array(3 * n) : new Float32Array(3 * n);
  // the RGBA component that goes into planes 0, 1, 2
  const source = info.inputFormat === 'RGB' ? [0, 1, 2] : [2, 1, 0];
  for (let c = 0; c < 3; c++) {
    const plane = c * n;
    const s = source[c];
    for (let i = 0; i < n; i++) out[plane + i] = rgba[4 * i + s];
  }
  return out;
}

/**
 * @typedef {Object} Detection
 * @property {number[]} bbox  [x, y, w, h] (COCO) in the image's pixels
 * @property {number} score
 * @property {number} category_id  class_map[k].id, or k without a class map
 * @property {number} class_index  k, the model's contiguous class index
 * @property {string} class_name  class_map[k].name, or String(k)
 */

/**
 * The detections from the model's outputs, in the model's order.
 *
 * w and h are rounded to float32 (Math.fround) as the Python side computes them in float32
 * (detectron2's XYXY -> XYWH on a float32 array), so the numbers match its COCO results.
 *
 * @param {Float32Array} boxes  (N, 4) x1, y1, x2, y2
 * @param {Float32Array} scores  (N,)
 * @param {BigInt64Array|Int32Array|number[]} classes  (N,) class indices
 * @param {Array<{id: number, name: string}>|null} classMap
 * @returns {Detection[]}
 */
export function toDetections(boxes, scores, classes, classMap) {
  const n = scores.length;
  if (boxes.length !== 4 * n || classes.length !== n) {
    throw new ModelError(`model outputs disagree: ${boxes.length / 4} boxes, ${n} scores, `
      + `${classes.length} classes`);
  }
  const detections = [];
  for (let i = 0; i < n; i++) {
    const k = Number(classes[i]);
    let categoryId = k;
    let className = String(k);
    if (classMap !== null) {
      const entry = classMap[k];
      if (entry === undefined) {
        throw new ModelError(`model output class index ${k} is outside its class_map `
          + `(${classMap.length} classes)`);
      }
      categoryId = entry.id;
      className = entry.name;
    }
    const [x1, y1, x2, y2] = boxes.subarray(4 * i, 4 * i + 4);
    detections.push({
      bbox: [x1, y1, Math.fround(x2 - x1), Math.fround(y2 - y1)],
      score: scores[i],
      category_id: categoryId,
      class_index: k,
      class_name: className,
    });
  }
  return detections;
}

/**
 * COCO results entries ({image_id, category_id, bbox, score}) for one image.
 *
 * @param {number} imageId
 * @param {Detection[]} detections
 * @returns {Array<{image_id: number, category_id: number, bbox: number[], score: number}>}
 */
export function cocoResults(imageId, detections) {
  return detections.map((d) => ({
    image_id: imageId, category_id: d.category_id, bbox: d.bbox, score: d.score,
  }));
}

// ---------------------------------------------------------------------------------------
// running the model (with either onnxruntime-node or onnxruntime-web: pass its module)
// ---------------------------------------------------------------------------------------

/**
 * @typedef {Object} Detector
 * @property {Object} session  an ort.InferenceSession
 * @property {ModelInfo} info
 */

/**
 * Reads the model's metadata, refuses anything but a retina_focal detector graph, and
 * creates the inference session.
 *
 * @param {Object} ort  the onnxruntime-node or onnxruntime-web module
 * @param {Uint8Array} modelBytes  the whole .onnx file
 * @param {Object} [sessionOptions]  ort.InferenceSession.SessionOptions
 * @returns {Promise<Detector>}
 * @throws {ModelError}
 */
export async function createDetector(ort, modelBytes, sessionOptions = {}) {
  const info = modelInfoFromBytes(modelBytes);
  let session;
  try {
    session = await ort.InferenceSession.create(modelBytes, sessionOptions);
  } catch (err) {
    const message = String(err && err.message ? err.message : err).split('\n')[0];
    throw new ModelError(`ONNX Runtime cannot load the model: ${message}`);
  }
  const missing = [INPUT_NAME].filter((n) => !session.inputNames.includes(n))
    .concat(OUTPUT_NAMES.filter((n) => !session.outputNames.includes(n)));
  if (missing.length > 0) {
    throw new ModelError(`the graph has no ${missing.join(', ')} (inputs: `
      + `${session.inputNames.join(', ')}; outputs: ${session.outputNames.join(', ')}): `
      + 're-export it with --graph detector');
  }
  // the input's element type, where this onnxruntime version tells it (inputMetadata)
  const input = (session.inputMetadata || []).find((m) => m.name === INPUT_NAME);
  if (input && input.type && input.type !== info.inputDtype) {
    throw new ModelError(`the graph's input is ${input.type} but its metadata says `
      + `input_dtype ${info.inputDtype}`);
  }
  return { session, info };
}

/**
 * Runs the detector on one decoded image, at the image's own size.
 *
 * @param {Object} ort  the onnxruntime module the session came from
 * @param {Detector} detector  from createDetector()
 * @param {Uint8Array|Uint8ClampedArray} rgba  (H, W, 4) RGBA pixels
 * @param {number} width
 * @param {number} height
 * @param {Object} [options]
 * @param {Array<{id: number, name: string}>|null} [options.classMap]  the ids and names to
 *     give the classes (matchCategories()); default: the model's class_map
 * @param {number} [options.scoreThresh]  keep the detections scoring above it (default 0)
 * @returns {Promise<Detection[]>}  best score first, as the graph gives them
 */
export async function detect(ort, detector, rgba, width, height,
  { classMap = detector.info.classMap, scoreThresh = 0 } = {}) {
  const { session, info } = detector;
  const data = imageToInput(rgba, width, height, info);
  const image = new ort.Tensor(info.inputDtype, data, [3, height, width]);
  const outputs = await session.run({ [INPUT_NAME]: image }, OUTPUT_NAMES);
  return aboveScore(toDetections(outputs.boxes.data, outputs.scores.data,
    outputs.classes.data, classMap), scoreThresh);
}

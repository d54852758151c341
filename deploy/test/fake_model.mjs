// A real (runnable) ONNX model written here, for tests that need one but not a trained
// detector: input `image` (3, h, w) and Constant outputs boxes, scores, classes (the same
// detections for every image), with retina_focal metadata_props. Also a minimal protobuf
// writer used by the tests.

export function varint(n) {
  const out = [];
  while (n >= 128) {
    out.push((n % 128) | 128);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}
export const utf8 = (s) => [...new TextEncoder().encode(s)];
export const field = (number, wireType) => varint(number * 8 + wireType);
export const lengthDelimited = (number, bytes) => [...field(number, 2), ...varint(bytes.length),
  ...bytes];
const varintField = (number, n) => [...field(number, 0), ...varint(n)];
const stringField = (number, s) => lengthDelimited(number, utf8(s));

// onnx.proto TensorProto.DataType
const FLOAT = 1;
const UINT8 = 2;
const INT64 = 7;

/** A TensorProto with raw_data. */
function tensor(dims, dataType, typed) {
  return [...dims.flatMap((d) => varintField(1, d)), ...varintField(2, dataType),
    ...lengthDelimited(9, [...new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength)])];
}

/** NodeProto: Constant with its value attribute, producing `output`. */
function constant(output, dims, dataType, typed) {
  const attribute = [...stringField(1, 'value'), ...varintField(20, 4), // type TENSOR
    ...lengthDelimited(5, tensor(dims, dataType, typed))];
  return [...stringField(2, output), ...stringField(3, `const_${output}`),
    ...stringField(4, 'Constant'), ...lengthDelimited(5, attribute)];
}

/** ValueInfoProto with a tensor type; dims: numbers or names. */
function valueInfo(name, elemType, dims) {
  const shape = dims.map((d) => lengthDelimited(1, typeof d === 'number'
    ? varintField(1, d) : stringField(2, d))).flat();
  const tensorType = [...varintField(1, elemType), ...lengthDelimited(2, shape)];
  return [...stringField(1, name), ...lengthDelimited(2, lengthDelimited(1, tensorType))];
}

/**
 * The bytes of a runnable ONNX model file.
 *
 * @param {Object} [o]
 * @param {Array<{box: number[], score: number, cls: number}>} [o.detections]  its outputs
 * @param {Object} [o.info]  the retina_focal metadata (JSON-able); graph, input_format and
 *     input_dtype default to a float32 BGR detector
 * @param {*} [o.classMap]  the class_map metadata (JSON-able); undefined: none
 * @returns {Uint8Array}
 */
export function fakeModel({ detections = [], info = {}, classMap } = {}) {
  const meta = { graph: 'detector', input_format: 'BGR', input_dtype: 'float32', ...info };
  const n = detections.length;
  const nodes = [
    constant('boxes', [n, 4], FLOAT, new Float32Array(detections.flatMap((d) => d.box))),
    constant('scores', [n], FLOAT, new Float32Array(detections.map((d) => d.score))),
    constant('classes', [n], INT64, new BigInt64Array(detections.map((d) => BigInt(d.cls)))),
  ];
  const graph = [
    ...nodes.flatMap((node) => lengthDelimited(1, node)),
    ...stringField(2, 'fake_detector'),
    ...lengthDelimited(11, valueInfo('image', meta.input_dtype === 'uint8' ? UINT8 : FLOAT,
      [3, 'height', 'width'])),
    ...lengthDelimited(12, valueInfo('boxes', FLOAT, [n, 4])),
    ...lengthDelimited(12, valueInfo('scores', FLOAT, [n])),
    ...lengthDelimited(12, valueInfo('classes', INT64, [n])),
  ];
  const props = { retina_focal: JSON.stringify(meta) };
  if (classMap !== undefined) props.class_map = JSON.stringify(classMap);
  return new Uint8Array([
    ...varintField(1, 8), // ir_version
    ...stringField(2, 'retina_focal tests'), // producer_name
    ...lengthDelimited(8, [...stringField(1, ''), ...varintField(2, 17)]), // opset 17
    ...lengthDelimited(7, graph),
    ...Object.entries(props).flatMap(([k, v]) => lengthDelimited(14,
      [...stringField(1, k), ...stringField(2, v)])),
  ]);
}

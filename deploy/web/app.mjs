// The page: runs an exported retina_focal detector on one image with onnxruntime-web and
// draws the detections scoring above the "minimum score" (default 0.3), the best on top. The
// model and the image come from the file inputs, or from the URL parameters
// ?model=URL&image=URL[&score=X] (then it runs at once; used by web/test/run_page.mjs).
// When a run ends, window.retinaFocal = {done: true, detections (those shown, best first),
// error, width, height, sizeNote (null, or why the image is not at the model's test size),
// scoreThresh, total (the graph's detections)}, and the table's rows hold the same numbers in
// data attributes (data-x, data-y, data-w, data-h, data-score, data-category-id,
// data-class-index, data-class-name). Changing the minimum score redraws the last run.
// decodeImage() is exported for tests (import('/web/app.mjs') from the page).
import {
  aboveScore, createDetector, detect, drawingOrder, offTestSize, parseScoreThresh, testSizeNote,
} from '../common/detector.mjs';

// onnxruntime-web's WebAssembly build, from deploy/node_modules (deploy/ is the web root)
const ORT_DIST = new URL('../node_modules/onnxruntime-web/dist/', import.meta.url).href;

const $ = (id) => document.getElementById(id);

// one colour per class index (cycled)
const COLOURS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4',
  '#f032e6', '#9a6324', '#469990', '#800000', '#808000', '#000075'];
const colour = (k) => COLOURS[k % COLOURS.length];

let ortModule = null; // loaded on first use
let current = { key: null, detector: null }; // the session of the last model, reused
let queue = Promise.resolve(); // runs one after the other (a session runs one at a time)
let last = null; // the last successful run: {bitmap, detections (all), ...}, redrawn on a new
// minimum score

/** onnxruntime-web, set up for one WebAssembly thread (no cross-origin isolation needed). */
async function loadOrt() {
  if (ortModule) return ortModule;
  try {
    ortModule = await import(`${ORT_DIST}ort.wasm.min.mjs`);
  } catch (err) {
    throw new Error(`cannot load onnxruntime-web from ${ORT_DIST} (run npm ci in deploy/ and `
      + `serve deploy/ as the web root): ${err.message}`);
  }
  ortModule.env.wasm.numThreads = 1;
  ortModule.env.wasm.wasmPaths = ORT_DIST;
  return ortModule;
}

/** The bytes behind a URL (relative to the page), or an error naming it. */
async function fetchBytes(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new Error(`cannot fetch the ${what} ${url}: ${err.message}`);
  }
  if (!response.ok) throw new Error(`cannot fetch the ${what} ${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/**
 * The image's RGBA pixels, as decoded by the browser: EXIF orientation applied, no colour
 * management (colorSpaceConversion 'none') and alpha not premultiplied, so opaque PNGs give
 * the file's exact values. Read back through WebGL, which keeps the colour of transparent
 * pixels exactly; a 2D canvas (premultiplied) is the fallback where WebGL is missing.
 *
 * @param {Blob} blob  the image file
 * @returns {Promise<{bitmap: ImageBitmap, data: Uint8Array|Uint8ClampedArray, width: number,
 *     height: number, reader: string}>}
 */
export async function decodeImage(blob) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {
      premultiplyAlpha: 'none', colorSpaceConversion: 'none', imageOrientation: 'from-image',
    });
  } catch (err) {
    throw new Error(`the browser cannot decode the image: ${err.message}`);
  }
  const { width, height } = bitmap;
  const data = pixelsViaWebGL(bitmap);
  if (data) return { bitmap, data, width, height, reader: 'webgl' };
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  return { bitmap, data: ctx.getImageData(0, 0, width, height).data, width, height,
    reader: '2d-canvas' };
}

/** The bitmap's RGBA bytes (rows top to bottom) via a WebGL texture, or null. */
export function pixelsViaWebGL(bitmap) {
  const canvas = document.createElement('canvas');
  const gl = canvas.getContext('webgl2') || canvas.getContext('webgl');
  if (!gl) return null;
  const max = gl.getParameter(gl.MAX_TEXTURE_SIZE);
  if (bitmap.width > max || bitmap.height > max) return null;
  try {
    const texture = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, texture);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, bitmap);
    const framebuffer = gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, framebuffer);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, texture, 0);
    if (gl.checkFramebufferStatus(gl.FRAMEBUFFER) !== gl.FRAMEBUFFER_COMPLETE) return null;
    const data = new Uint8Array(bitmap.width * bitmap.height * 4);
    gl.pixelStorei(gl.PACK_ALIGNMENT, 1);
    // the texture's row 0 is the image's top row, and readPixels returns row 0 first
    gl.readPixels(0, 0, bitmap.width, bitmap.height, gl.RGBA, gl.UNSIGNED_BYTE, data);
    return gl.getError() === gl.NO_ERROR ? data : null;
  } finally {
    const lose = gl.getExtension('WEBGL_lose_context');
    if (lose) lose.loseContext();
  }
}

/**
 * Draws the image 1:1 and each detection's box and "class score" label, the lowest score
 * first, so the best boxes and labels are on top.
 */
function draw(bitmap, detections) {
  const canvas = $('canvas');
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(bitmap, 0, 0);
  ctx.lineWidth = 2;
  ctx.font = '12px sans-serif';
  ctx.textBaseline = 'top';
  for (const d of drawingOrder(detections)) {
    const [x, y, w, h] = d.bbox;
    ctx.strokeStyle = colour(d.class_index);
    ctx.strokeRect(x, y, w, h);
    const label = `${d.class_name} ${d.score.toFixed(2)}`;
    const textWidth = ctx.measureText(label).width + 6;
    const top = y >= 16 ? y - 16 : y; // above the box, or inside it at the image's top
    ctx.fillStyle = colour(d.class_index);
    ctx.fillRect(x, top, textWidth, 16);
    ctx.fillStyle = '#fff';
    ctx.fillText(label, x + 3, top + 2);
  }
}

/** Fills the table: one row per detection, its exact numbers in data attributes. */
function fillTable(detections) {
  const body = $('detections').querySelector('tbody');
  body.replaceChildren();
  detections.forEach((d, i) => {
    const row = document.createElement('tr');
    const [x, y, w, h] = d.bbox;
    // String(number) round-trips exactly: the test reads these back with Number()
    Object.assign(row.dataset, {
      index: String(i), classIndex: String(d.class_index), className: d.class_name,
      categoryId: String(d.category_id), score: String(d.score),
      x: String(x), y: String(y), w: String(w), h: String(h),
    });
    const cells = [String(i), d.class_name, String(d.category_id), d.score.toFixed(3),
      x.toFixed(1), y.toFixed(1), w.toFixed(1), h.toFixed(1)];
    cells.forEach((text, c) => {
      const cell = document.createElement('td');
      if (c === 1) {
        cell.className = 'name';
        const swatch = document.createElement('span');
        swatch.className = 'swatch';
        swatch.style.background = colour(d.class_index);
        cell.append(swatch);
      }
      cell.append(text);
      row.append(cell);
    });
    body.append(row);
  });
  $('detections').hidden = false;
}

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

/** The minimum score input's value, or an Error saying what is wrong with it. */
function minimumScore() {
  return parseScoreThresh($('min-score').value, 'the minimum score');
}

/** Shows the last run with the detections above the minimum score; sets window.retinaFocal. */
function render(scoreThresh) {
  const { bitmap, all, modelName, imageName, inputFormat, inputDtype, ms, sizeNote } = last;
  const detections = aboveScore(all, scoreThresh);
  draw(bitmap, detections);
  fillTable(detections);
  $('size-note').textContent = sizeNote ? `Note: ${sizeNote}.` : '';
  $('size-note').hidden = !sizeNote;
  const shown = detections.length === all.length ? `${all.length}`
    : `${detections.length} of ${all.length}`;
  setStatus(`${modelName} (${inputFormat} ${inputDtype} input) on ${imageName} `
    + `(${bitmap.width}x${bitmap.height}): ${shown} detection${all.length === 1 ? '' : 's'} `
    + `(scores above ${scoreThresh}) in ${ms.toFixed(0)} ms`);
  window.retinaFocal = { done: true, detections, error: null, width: bitmap.width,
    height: bitmap.height, pixelReader: last.reader, ms, sizeNote, scoreThresh,
    total: all.length };
}

/** Clears what an earlier run showed and reports the error. */
function showError(err) {
  const message = err && err.message ? err.message : String(err);
  setStatus(`Error: ${message}`, true);
  $('canvas').width = 0; // nothing from an earlier run stays
  $('detections').querySelector('tbody').replaceChildren();
  $('detections').hidden = true;
  $('size-note').hidden = true;
  last = null;
  window.retinaFocal = { done: true, detections: [], error: message };
}

/**
 * Runs the model on the image and shows the result; reports through window.retinaFocal.
 * @param {{key: string, name: string, bytes: () => Promise<Uint8Array>}} model
 * @param {{name: string, blob: () => Promise<Blob>}} image
 */
async function run(model, image) {
  window.retinaFocal = { done: false, detections: [], error: null };
  try {
    const scoreThresh = minimumScore();
    setStatus('Loading onnxruntime-web…');
    const ort = await loadOrt();
    if (current.key !== model.key) {
      setStatus(`Loading the model ${model.name}…`);
      current = { key: null, detector: null };
      const detector = await createDetector(ort, await model.bytes(), {
        executionProviders: ['wasm'],
      });
      current = { key: model.key, detector };
    }
    const { inputFormat, inputDtype, testSize } = current.detector.info;
    setStatus(`Decoding ${image.name}…`);
    const pixels = await decodeImage(await image.blob());
    setStatus(`Running on ${pixels.width}x${pixels.height}…`);
    const start = performance.now();
    // every detection of the graph: the minimum score only selects what is shown
    const all = await detect(ort, current.detector, pixels.data, pixels.width, pixels.height);
    const ms = performance.now() - start;
    const resized = offTestSize(testSize, pixels.width, pixels.height);
    const sizeNote = resized ? testSizeNote(testSize, [{ name: image.name,
      width: pixels.width, height: pixels.height, resized }], 1) : null;
    last = { bitmap: pixels.bitmap, all, modelName: model.name, imageName: image.name,
      inputFormat, inputDtype, ms, sizeNote, reader: pixels.reader };
    render(scoreThresh);
  } catch (err) {
    showError(err);
  }
}

/** A new minimum score: the last run's detections shown again (the model does not rerun). */
let scoreErrorShown = false; // the status shows a wrong minimum score, not a run's error
function onMinimumScore() {
  let scoreThresh;
  try {
    scoreThresh = minimumScore();
  } catch (err) {
    setStatus(`Error: ${err.message}`, true);
    scoreErrorShown = true;
    return;
  }
  queue = queue.then(() => {
    if (last) render(scoreThresh);
    else if (scoreErrorShown) setStatus('Choose a model and an image.');
    scoreErrorShown = false;
  });
}

/** Runs when both file inputs have a file. */
function onFileChosen() {
  const modelFile = $('model-file').files[0];
  const imageFile = $('image-file').files[0];
  if (!modelFile || !imageFile) return;
  queue = queue.then(() => run({
    key: `file:${modelFile.name}:${modelFile.size}:${modelFile.lastModified}`,
    name: modelFile.name,
    bytes: async () => new Uint8Array(await modelFile.arrayBuffer()),
  }, { name: imageFile.name, blob: async () => imageFile }));
}

$('model-file').addEventListener('change', onFileChosen);
$('image-file').addEventListener('change', onFileChosen);
$('min-score').addEventListener('input', onMinimumScore);

const params = new URLSearchParams(window.location.search);
let urlError = null;
if (params.has('score')) {
  // checked here: a number input would turn a wrong value into '' before it can be named
  try {
    $('min-score').value = String(parseScoreThresh(params.get('score'),
      'the URL parameter score'));
  } catch (err) {
    urlError = err;
  }
}
if (urlError) {
  showError(urlError);
} else if (params.has('model') && params.has('image')) {
  const modelUrl = params.get('model');
  const imageUrl = params.get('image');
  queue = queue.then(() => run(
    { key: `url:${modelUrl}`, name: modelUrl, bytes: () => fetchBytes(modelUrl, 'model') },
    { name: imageUrl, blob: async () => new Blob([await fetchBytes(imageUrl, 'image')]) }));
}

#!/usr/bin/env node
// Runs an exported retina_focal detector (model.onnx, --graph detector) on images with
// onnxruntime-node and writes COCO results JSON: [{image_id, category_id, bbox, score}, ...].
//
//   node deploy/node/detect.mjs --model model.onnx --coco ann.json --image-dir DIR \
//       --output results.json [--max-images N] [--score-thresh X]
//   node deploy/node/detect.mjs --model model.onnx --image a.png [--image b.jpg ...] \
//       --output results.json          (image_id: the image's 0-based position)
//
// Each image runs at its own size: where the model's metadata gives its test size and an image
// is not at it, one warning line says so (Python's eval resizes the images first). With --coco,
// the results carry the json's category ids for the model's classes, matched by name.
// Errors in the input (options, files, model, an undecodable image) are one line on stderr and
// exit status 2, and write nothing; set RETINA_FOCAL_TRACEBACK=1 for the stack trace.
import fs from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';

import {
  CategoryError, ModelError, cocoResults, createDetector, detect, matchCategories,
  modelInfoFromBytes, offTestSize, parseScoreThresh, testSizeNote,
} from '../common/detector.mjs';
import { ImageError, decodeImage } from './images.mjs';
import {
  UsageError, internalErrorLine, parseOptions, positiveInt, wantsHelp, wantsTraceback,
  writeAtomically,
} from './cli.mjs';

const USAGE = `usage: node detect.mjs --model MODEL.onnx --output RESULTS.json
         (--coco ANN.json --image-dir DIR [--max-images N] | --image FILE [--image FILE ...])
         [--score-thresh X] [--threads N] [--progress N]
  --model         an ONNX file exported by retina_focal with --graph detector
  --coco          a COCO json: every entry of its "images" runs, in its order, as
                  DIR/file_name (an absolute file_name as it is), with image_id = its "id";
                  the results carry its category ids, matched to the model's classes by name
  --image-dir     the folder the COCO json's file_name values are relative to
  --max-images    run only the first N images of the COCO json
  --image         an image file (PNG or JPEG), repeatable; image_id = its 0-based position,
                  category_id = the model's class_map id (its class index without one)
  --output        the COCO results JSON to write: [{image_id, category_id, bbox, score}]
                  (a file; nothing is written when the run fails)
  --score-thresh  keep the detections scoring above X, in [0, 1] (default 0: every detection
                  of the graph)
  --threads       ONNX Runtime intra-op threads (default 2)
  --progress      a progress line on stderr every N images (default 100; 0: none)`;

const OPTIONS = {
  model: { type: 'string' },
  coco: { type: 'string' },
  'image-dir': { type: 'string' },
  image: { type: 'string', multiple: true },
  output: { type: 'string' },
  'max-images': { type: 'string' },
  'score-thresh': { type: 'string', default: '0' },
  threads: { type: 'string', default: '2' },
  progress: { type: 'string', default: '100' },
  help: { type: 'boolean', short: 'h' },
};

/**
 * The command line as {model, output, images: [{id, file, size}], categories (the COCO json's,
 * or null), cocoPath, scoreThresh, threads, progress}.
 */
function parseCommandLine(argv) {
  if (wantsHelp(argv)) {
    console.log(USAGE);
    process.exit(0);
  }
  const o = parseOptions(argv, OPTIONS);
  // the values first: a wrong value is named even where other options are missing
  let scoreThresh;
  try {
    scoreThresh = parseScoreThresh(o['score-thresh'], '--score-thresh');
  } catch (err) {
    throw new UsageError(err.message);
  }
  const threads = positiveInt('threads', o.threads);
  const progress = positiveInt('progress', o.progress, true);
  const maxImages = o['max-images'] === undefined ? Infinity
    : positiveInt('max-images', o['max-images']);
  for (const name of ['model', 'output']) {
    if (o[name] === undefined) throw new UsageError(`--${name} is required`);
  }
  if ((o.coco === undefined) === (o.image === undefined)) {
    throw new UsageError('give either --coco (with --image-dir) or --image, not both or none');
  }
  if (o.coco !== undefined && o['image-dir'] === undefined) {
    throw new UsageError('--coco needs --image-dir');
  }
  if (o.image !== undefined && o['image-dir'] !== undefined) {
    throw new UsageError('--image-dir goes with --coco only (give --image paths in full)');
  }
  if (o.image !== undefined && o['max-images'] !== undefined) {
    throw new UsageError('--max-images goes with --coco only (give fewer --image)');
  }
  const options = {
    model: o.model, output: o.output, scoreThresh, threads, progress,
    cocoPath: o.coco, categories: null, images: null,
  };
  if (o.coco !== undefined) {
    Object.assign(options, readCoco(o.coco, o['image-dir']));
    options.images = options.images.slice(0, maxImages);
  } else {
    options.images = o.image.map((file, id) => ({ id, file }));
  }
  return options;
}

/** The images a COCO json lists, as [{id, file, size}] in its order, and its categories. */
function readCoco(cocoPath, imageDir) {
  let coco;
  try {
    coco = JSON.parse(fs.readFileSync(cocoPath, 'utf8'));
  } catch (err) {
    const why = { ENOENT: 'no such file', EISDIR: 'a folder, not a file' }[err.code]
      || err.message.split('\n')[0];
    throw new UsageError(`--coco ${cocoPath}: cannot read the COCO json: ${why}`);
  }
  const images = coco && coco.images;
  if (!Array.isArray(images) || images.length === 0) {
    throw new UsageError(`--coco ${cocoPath}: the json has no "images" list (or it is empty)`);
  }
  if (!fs.existsSync(imageDir) || !fs.statSync(imageDir).isDirectory()) {
    throw new UsageError(`--image-dir ${imageDir}: no such folder`);
  }
  const seen = new Map();
  const list = images.map((entry, i) => {
    if (!entry || typeof entry.file_name !== 'string' || entry.id === undefined) {
      throw new UsageError(`--coco ${cocoPath}: images[${i}] has no "file_name" or "id"`);
    }
    const key = JSON.stringify(entry.id);
    if (seen.has(key)) {
      throw new UsageError(`--coco ${cocoPath}: image id ${key} appears twice (images[`
        + `${seen.get(key)}] and images[${i}])`);
    }
    seen.set(key, i);
    // as Python's os.path.join(image_dir, file_name): an absolute file_name stays as it is
    const file = path.isAbsolute(entry.file_name) ? entry.file_name
      : path.join(imageDir, entry.file_name);
    return { id: entry.id, file,
      size: [entry.width, entry.height] };
  });
  return { images: list, categories: coco.categories };
}

/** "1 image", "2 images". */
function count(n, noun) {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/** The file's bytes; a missing or unreadable file is a UsageError naming `what`. */
function readFile(file, what) {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const why = { ENOENT: 'no such file', EISDIR: 'a folder, not a file' }[err.code]
      || err.code || err.message;
    throw new UsageError(`${what} ${file}: ${why}`);
  }
}

async function main() {
  const options = parseCommandLine(process.argv.slice(2));
  const outputDir = path.dirname(path.resolve(options.output));
  if (!fs.existsSync(outputDir)) {
    throw new UsageError(`--output ${options.output}: no folder ${outputDir}`);
  }
  if (fs.existsSync(options.output) && fs.statSync(options.output).isDirectory()) {
    throw new UsageError(`--output ${options.output}: a folder; name the results file to write`);
  }

  // every image file before the model loads: a typo fails at once, not after N images
  const absent = options.images.filter(({ file }) => !fs.existsSync(file));
  if (absent.length) {
    throw new UsageError(`image ${absent[0].file}: no such file`
      + (absent.length > 1 ? ` (and ${count(absent.length - 1, 'other')} missing)` : ''));
  }
  const modelBytes = readFile(options.model, '--model');
  let classMap;
  try {
    // the metadata first: a json of other classes is refused before the session loads
    const info = modelInfoFromBytes(modelBytes);
    classMap = info.classMap;
    if (options.categories !== null) {
      const matched = matchCategories(info.classMap, info.numClasses, options.categories,
        options.cocoPath);
      classMap = matched.classMap;
      if (matched.warning) console.error(`detect: warning: ${matched.warning}`);
    }
  } catch (err) {
    if (err instanceof ModelError) throw new UsageError(`--model ${options.model}: ${err.message}`);
    if (err instanceof CategoryError) {
      throw new UsageError(`--coco ${options.cocoPath}: ${err.message}`);
    }
    throw err;
  }
  let detector;
  try {
    detector = await createDetector(ort, modelBytes, {
      executionProviders: ['cpu'],
      intraOpNumThreads: options.threads,
      interOpNumThreads: 1,
    });
  } catch (err) {
    if (err instanceof ModelError) throw new UsageError(`--model ${options.model}: ${err.message}`);
    throw err;
  }
  const { inputFormat, inputDtype, testSize } = detector.info;
  console.error(`detect: ${options.model} (${inputFormat} ${inputDtype} input), `
    + `${count(options.images.length, 'image')}`
    + (options.scoreThresh > 0 ? `, scores above ${options.scoreThresh}` : ''));

  const results = [];
  const offSize = []; // the images not at the model's test size
  const start = Date.now();
  for (let i = 0; i < options.images.length; i++) {
    const { id, file, size } = options.images[i];
    let image;
    try {
      image = await decodeImage(readFile(file, 'image'));
    } catch (err) {
      if (err instanceof ImageError) {
        throw new UsageError(`image ${file}: ${err.message} (nothing written)`);
      }
      throw err;
    }
    if (size && size[0] !== undefined
        && (size[0] !== image.width || size[1] !== image.height)) {
      console.error(`detect: warning: ${file} is ${image.width}x${image.height}, `
        + `the COCO json says ${size[0]}x${size[1]}`);
    }
    const resized = offTestSize(testSize, image.width, image.height);
    if (resized) offSize.push({ name: file, width: image.width, height: image.height, resized });
    let detections;
    try {
      detections = await detect(ort, detector, image.data, image.width, image.height,
        { classMap, scoreThresh: options.scoreThresh });
    } catch (err) {
      if (err instanceof ModelError) {
        throw new UsageError(`--model ${options.model}: on ${file}: ${err.message}`);
      }
      throw err;
    }
    results.push(...cocoResults(id, detections));
    const done = i + 1;
    if (options.progress > 0 && (done % options.progress === 0
        || done === options.images.length)) {
      const seconds = (Date.now() - start) / 1000;
      console.error(`detect: ${done}/${count(options.images.length, 'image')}, `
        + `${count(results.length, 'detection')}, ${(done / seconds).toFixed(2)} images/s`);
    }
  }
  if (offSize.length) {
    console.error(`detect: warning: ${testSizeNote(testSize, offSize, options.images.length)}`);
  }

  // write next to the output and rename: an interrupted run leaves no half-written file
  writeAtomically(options.output, JSON.stringify(results), '--output');
  console.error(`detect: wrote ${count(results.length, 'detection')} of `
    + `${count(options.images.length, 'image')} to ${options.output}`);
}

main().catch((err) => {
  const traceback = wantsTraceback();
  if (traceback) console.error(err);
  if (err instanceof UsageError) {
    console.error(`detect: error: ${err.message}`);
    process.exit(2);
  }
  console.error(internalErrorLine('detect', err));
  process.exit(1);
});

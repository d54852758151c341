#!/usr/bin/env node
// Runs an exported retina_focal detector (model.onnx, --graph detector) on images with
// onnxruntime-node and writes COCO results JSON: [{image_id, category_id, bbox, score}, ...].
//
//   node deploy/node/detect.mjs --model model.onnx --coco ann.json --image-dir DIR \
//       --output results.json [--max-images N]
//   node deploy/node/detect.mjs --model model.onnx --image a.png [--image b.jpg ...] \
//       --output results.json          (image_id: the image's 0-based position)
//
// Each image runs at its own size (resize it beforehand as the model's test size wants).
// Errors in the input (options, files, model) are one line on stderr and exit status 2;
// set RETINA_FOCAL_TRACEBACK=1 for the stack trace.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';

import { ModelError, cocoResults, createDetector, detect } from '../common/detector.mjs';
import { ImageError, decodeImage } from './images.mjs';

const USAGE = `usage: node detect.mjs --model MODEL.onnx --output RESULTS.json
         (--coco ANN.json --image-dir DIR [--max-images N] | --image FILE [--image FILE ...])
         [--threads N] [--progress N]
  --model       an ONNX file exported by retina_focal with --graph detector
  --coco        a COCO json: every entry of its "images" runs, in its order, as
                DIR/file_name, with image_id = its "id"
  --image-dir   the folder the COCO json's file_name values are relative to
  --image       an image file (PNG or JPEG), repeatable; image_id = its 0-based position
  --max-images  run only the first N images
  --output      the COCO results JSON to write: [{image_id, category_id, bbox, score}]
  --threads     ONNX Runtime intra-op threads (default 2)
  --progress    a progress line on stderr every N images (default 100; 0: none)`;

/** A mistake in the command line or its files: reported as one line, exit status 2. */
class UsageError extends Error {}

function positiveInt(name, text, allowZero = false) {
  const value = Number(text);
  if (!/^\d+$/.test(text) || (value === 0 && !allowZero)) {
    throw new UsageError(`--${name} wants a ${allowZero ? 'non-negative' : 'positive'} `
      + `integer, got ${JSON.stringify(text)}`);
  }
  return value;
}

/** The command line as {model, output, images: [{id, file}], threads, progress}. */
function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        model: { type: 'string' },
        coco: { type: 'string' },
        'image-dir': { type: 'string' },
        image: { type: 'string', multiple: true },
        output: { type: 'string' },
        'max-images': { type: 'string' },
        threads: { type: 'string', default: '2' },
        progress: { type: 'string', default: '100' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    throw new UsageError(`${err.message.split('\n')[0]} (--help lists the options)`);
  }
  const o = parsed.values;
  if (o.help) {
    console.log(USAGE);
    process.exit(0);
  }
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
  const options = {
    model: o.model,
    output: o.output,
    threads: positiveInt('threads', o.threads),
    progress: positiveInt('progress', o.progress, true),
    images: o.coco !== undefined ? cocoImages(o.coco, o['image-dir'])
      : o.image.map((file, id) => ({ id, file })),
  };
  if (o['max-images'] !== undefined) {
    options.images = options.images.slice(0, positiveInt('max-images', o['max-images']));
  }
  return options;
}

/** The images a COCO json lists, as [{id, file}], in its order. */
function cocoImages(cocoPath, imageDir) {
  let coco;
  try {
    coco = JSON.parse(fs.readFileSync(cocoPath, 'utf8'));
  } catch (err) {
    const why = err.code === 'ENOENT' ? 'no such file' : err.message.split('\n')[0];
    throw new UsageError(`--coco ${cocoPath}: cannot read the COCO json: ${why}`);
  }
  const images = coco && coco.images;
  if (!Array.isArray(images) || images.length === 0) {
    throw new UsageError(`--coco ${cocoPath}: the json has no "images" list (or it is empty)`);
  }
  if (!fs.existsSync(imageDir) || !fs.statSync(imageDir).isDirectory()) {
    throw new UsageError(`--image-dir ${imageDir}: no such folder`);
  }
  return images.map((entry, i) => {
    if (!entry || typeof entry.file_name !== 'string' || entry.id === undefined) {
      throw new UsageError(`--coco ${cocoPath}: images[${i}] has no "file_name" or "id"`);
    }
    return { id: entry.id, file: path.join(imageDir, entry.file_name),
      size: [entry.width, entry.height] };
  });
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

  // every image file before the model loads: a typo fails at once, not after N images
  const absent = options.images.filter(({ file }) => !fs.existsSync(file));
  if (absent.length) {
    throw new UsageError(`image ${absent[0].file}: no such file`
      + (absent.length > 1 ? ` (and ${count(absent.length - 1, 'other')} missing)` : ''));
  }
  const modelBytes = readFile(options.model, '--model');
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
  const { inputFormat, inputDtype } = detector.info;
  console.error(`detect: ${options.model} (${inputFormat} ${inputDtype} input), `
    + `${count(options.images.length, 'image')}`);

  const results = [];
  const start = Date.now();
  for (let i = 0; i < options.images.length; i++) {
    const { id, file, size } = options.images[i];
    let image;
    try {
      image = await decodeImage(readFile(file, 'image'));
    } catch (err) {
      if (err instanceof ImageError) throw new UsageError(`image ${file}: ${err.message}`);
      throw err;
    }
    if (size && size[0] !== undefined
        && (size[0] !== image.width || size[1] !== image.height)) {
      console.error(`detect: warning: ${file} is ${image.width}x${image.height}, `
        + `the COCO json says ${size[0]}x${size[1]}`);
    }
    const detections = await detect(ort, detector, image.data, image.width, image.height);
    results.push(...cocoResults(id, detections));
    const done = i + 1;
    if (options.progress > 0 && (done % options.progress === 0
        || done === options.images.length)) {
      const seconds = (Date.now() - start) / 1000;
      console.error(`detect: ${done}/${count(options.images.length, 'image')}, `
        + `${count(results.length, 'detection')}, ${(done / seconds).toFixed(2)} images/s`);
    }
  }

  // write next to the output and rename: an interrupted run leaves no half-written file
  const partial = `${options.output}.partial`;
  fs.writeFileSync(partial, JSON.stringify(results));
  fs.renameSync(partial, options.output);
  console.error(`detect: wrote ${count(results.length, 'detection')} of `
    + `${count(options.images.length, 'image')} to ${options.output}`);
}

main().catch((err) => {
  if (process.env.RETINA_FOCAL_TRACEBACK) console.error(err);
  if (err instanceof UsageError) {
    console.error(`detect: error: ${err.message}`);
    process.exit(2);
  }
  console.error(`detect: internal error: ${String(err && err.message ? err.message : err)
    .split('\n')[0]} (RETINA_FOCAL_TRACEBACK=1 shows the stack trace)`);
  process.exit(1);
});

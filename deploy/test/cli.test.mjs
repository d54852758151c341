// Unit tests of node/cli.mjs, and node/detect.mjs / web/test/run_page.mjs run as commands on
// a small runnable ONNX model written here (test/fake_model.mjs; no trained model needed):
// node --test test/
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import pngjs from 'pngjs';

import {
  UsageError, internalErrorLine, parseOptions, positiveInt, wantsTraceback, writeAtomically,
} from '../node/cli.mjs';
import { fakeModel } from './fake_model.mjs';

const DEPLOY = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DETECT = path.join(DEPLOY, 'node', 'detect.mjs');
const RUN_PAGE = path.join(DEPLOY, 'web', 'test', 'run_page.mjs');

// --- node/cli.mjs --------------------------------------------------------------------------

const OPTIONS = {
  model: { type: 'string' },
  image: { type: 'string', multiple: true },
  output: { type: 'string' },
  'max-images': { type: 'string' },
  progress: { type: 'string', default: '100' },
  help: { type: 'boolean', short: 'h' },
};
const usage = (pattern) => (err) => err instanceof UsageError && pattern.test(err.message);

test('parseOptions: values, = values, repeated options, defaults', () => {
  assert.deepEqual(parseOptions(['--model', 'm.onnx', '--image', 'a.png', '--image=b.png',
    '--output', 'out.json'], OPTIONS),
  { model: 'm.onnx', image: ['a.png', 'b.png'], output: 'out.json', progress: '100' });
  assert.deepEqual(parseOptions(['-h'], OPTIONS), { help: true, progress: '100' });
  assert.deepEqual(parseOptions(['--output='], OPTIONS), { output: '', progress: '100' });
});

test('parseOptions: a value starting with - is a value, for the option\'s own check', () => {
  assert.equal(parseOptions(['--max-images', '-1'], OPTIONS)['max-images'], '-1');
  assert.equal(parseOptions(['--progress', '-5'], OPTIONS).progress, '-5');
  assert.equal(parseOptions(['--output', '-'], OPTIONS).output, '-');
  assert.throws(() => positiveInt('max-images', '-1'),
    usage(/^--max-images wants a positive integer, got -1$/));
  assert.throws(() => positiveInt('progress', '-5', true),
    usage(/^--progress wants a non-negative integer, got -5$/));
  assert.throws(() => positiveInt('threads', ''), usage(/got ""$/));
  assert.equal(positiveInt('progress', '0', true), 0);
});

test('parseOptions: a missing value, a repeated option, unknown ones: one clear line', () => {
  assert.throws(() => parseOptions(['--image', '--output', 'r.json'], OPTIONS),
    usage(/^--image needs a value$/));
  assert.throws(() => parseOptions(['--output'], OPTIONS), usage(/^--output needs a value$/));
  assert.throws(() => parseOptions(['--model', '-h'], OPTIONS), usage(/^--model needs a value$/));
  assert.throws(() => parseOptions(['--model', 'a', '--model', 'b'], OPTIONS),
    usage(/^give --model once$/));
  assert.throws(() => parseOptions(['--bogus', '1'], OPTIONS),
    usage(/^unknown option --bogus \(--help lists the options\)$/));
  assert.throws(() => parseOptions(['a.png'], OPTIONS), usage(/^unexpected argument "a.png"/));
  assert.throws(() => parseOptions(['--help=1'], OPTIONS), usage(/^--help takes no value$/));
  assert.throws(() => parseOptions(['--__proto__', 'x'], OPTIONS), usage(/unknown option/));
});

test('internalErrorLine points to RETINA_FOCAL_TRACEBACK only where it is not set', () => {
  const err = new Error('boom\nmore');
  assert.equal(internalErrorLine('detect', err, {}),
    'detect: internal error: boom (RETINA_FOCAL_TRACEBACK=1 shows the stack trace)');
  assert.equal(internalErrorLine('detect', err, { RETINA_FOCAL_TRACEBACK: '0' }),
    'detect: internal error: boom (RETINA_FOCAL_TRACEBACK=1 shows the stack trace)');
  assert.equal(internalErrorLine('detect', err, { RETINA_FOCAL_TRACEBACK: '1' }),
    'detect: internal error: boom');
  assert.equal(wantsTraceback({ RETINA_FOCAL_TRACEBACK: '' }), false);
  assert.equal(wantsTraceback({ RETINA_FOCAL_TRACEBACK: 'yes' }), true);
});

/** A fresh temporary folder. */
const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'retina-focal-cli-'));

test('writeAtomically writes the file and never leaves <file>.partial behind', () => {
  const dir = tmpDir();
  const out = path.join(dir, 'r.json');
  writeAtomically(out, '[1]');
  assert.equal(fs.readFileSync(out, 'utf8'), '[1]');
  assert.ok(!fs.existsSync(`${out}.partial`));
  // the rename fails (the target is a folder): the partial file goes, the error is one line
  const folder = path.join(dir, 'folder');
  fs.mkdirSync(folder);
  fs.writeFileSync(path.join(folder, 'keep'), 'x');
  assert.throws(() => writeAtomically(folder, '[2]'), usage(/^--output .*folder: cannot write it/));
  assert.ok(!fs.existsSync(`${folder}.partial`));
  // a folder in the partial file's place is not ours: left alone
  fs.mkdirSync(`${out}.partial`);
  assert.throws(() => writeAtomically(out, '[3]'), usage(/is in the way/));
  assert.ok(fs.statSync(`${out}.partial`).isDirectory());
  fs.rmSync(dir, { recursive: true });
});

// --- detect.mjs and run_page.mjs as commands ---------------------------------------------

/** Runs a script with node; {status, stdout, stderr, lines (stderr's)}. */
function runScript(script, args, env = {}) {
  const proc = spawnSync(process.execPath, [script, ...args], {
    encoding: 'utf8', timeout: 60000,
    env: { ...process.env, RETINA_FOCAL_TRACEBACK: '', ...env },
  });
  return { ...proc, lines: proc.stderr.trim().split('\n').filter(Boolean) };
}
const detectCli = (args, env) => runScript(DETECT, args, env);

/** A PNG file of width x height (grey). */
function writePng(file, width, height) {
  const image = new pngjs.PNG({ width, height });
  image.data.fill(128);
  fs.writeFileSync(file, pngjs.PNG.sync.write(image));
}

const CLASSES = [{ id: 3, name: 'ellipse' }, { id: 7, name: 'rectangle' },
  { id: 12, name: 'triangle' }];
const DETECTIONS = [{ box: [10, 10, 50, 60], score: 0.9, cls: 2 },
  { box: [20, 5, 40, 30], score: 0.5, cls: 0 }, { box: [0, 0, 8, 8], score: 0.2, cls: 1 }];

/** A folder with model.onnx, images a.png (128x128) and b.png (96x160), and COCO jsons. */
function setup({ classMap = CLASSES, testSize = { min_size: 128, max_size: 128 },
  detections = DETECTIONS } = {}) {
  const dir = tmpDir();
  const info = { config: { 'MODEL.RETINANET.NUM_CLASSES': 3 } };
  if (testSize) info.test_size = testSize;
  fs.writeFileSync(path.join(dir, 'model.onnx'), fakeModel({ detections, info, classMap }));
  fs.mkdirSync(path.join(dir, 'images'));
  writePng(path.join(dir, 'images', 'a.png'), 128, 128);
  writePng(path.join(dir, 'images', 'b.png'), 96, 160); // width 96, height 160
  const coco = (categories, images = [{ id: 5, file_name: 'a.png' },
    { id: 9, file_name: 'b.png' }]) => {
    const file = path.join(dir, `coco${fs.readdirSync(dir).length}.json`);
    fs.writeFileSync(file, JSON.stringify({ images, annotations: [], categories }));
    return file;
  };
  const p = (...names) => path.join(dir, ...names);
  return { dir, p, coco, model: p('model.onnx'), images: p('images') };
}

test('detect --coco: the json\'s category ids, matched to the model\'s classes by name', () => {
  const s = setup();
  const out = s.p('r.json');
  // the same ids: as they are, no warning
  let proc = detectCli(['--model', s.model, '--coco', s.coco(CLASSES), '--image-dir', s.images,
    '--output', out, '--progress', '0']);
  assert.equal(proc.status, 0, proc.stderr);
  assert.ok(!proc.stderr.includes('matched by name'), proc.stderr);
  let results = JSON.parse(fs.readFileSync(out, 'utf8'));
  assert.deepEqual(results.filter((r) => r.image_id === 5).map((r) => r.category_id), [12, 3, 7]);

  // other ids for the same names: the json's, and one warning line
  const swapped = s.coco([{ id: 12, name: 'ellipse' }, { id: 7, name: 'rectangle' },
    { id: 3, name: 'triangle' }]);
  proc = detectCli(['--model', s.model, '--coco', swapped, '--image-dir', s.images,
    '--output', out, '--progress', '0']);
  assert.equal(proc.status, 0, proc.stderr);
  const warnings = proc.lines.filter((l) => l.includes('matched by name'));
  assert.deepEqual(warnings, [`detect: warning: ${swapped} gives the model's classes other ids: `
    + 'matched by name (ellipse 3 -> 12, triangle 12 -> 3)']);
  results = JSON.parse(fs.readFileSync(out, 'utf8'));
  assert.deepEqual(results.filter((r) => r.image_id === 5).map((r) => r.category_id), [3, 12, 7]);

  // other names: refused in one line naming them, nothing written
  fs.rmSync(out);
  proc = detectCli(['--model', s.model, '--coco', s.coco([{ id: 3, name: 'ellipse' },
    { id: 7, name: 'rectangle' }, { id: 12, name: 'star' }]), '--image-dir', s.images,
  '--output', out]);
  assert.equal(proc.status, 2, proc.stderr);
  assert.equal(proc.lines.length, 1, proc.stderr);
  assert.match(proc.lines[0],
    /^detect: error: --coco .*only in the model: triangle; only in the json: star/);
  assert.ok(!fs.existsSync(out) && !fs.existsSync(`${out}.partial`));
  fs.rmSync(s.dir, { recursive: true });
});

test('detect --coco, a model without class_map: the json\'s categories by id, as many as C', () => {
  const s = setup({ classMap: null });
  const out = s.p('r.json');
  let proc = detectCli(['--model', s.model, '--coco', s.coco([{ id: 40, name: 'c' },
    { id: 2, name: 'a' }, { id: 30, name: 'b' }]), '--image-dir', s.images, '--output', out,
  '--progress', '0']);
  assert.equal(proc.status, 0, proc.stderr);
  const results = JSON.parse(fs.readFileSync(out, 'utf8'));
  assert.deepEqual(results.filter((r) => r.image_id === 5).map((r) => r.category_id), [40, 2, 30]);
  proc = detectCli(['--model', s.model, '--coco', s.coco([{ id: 1, name: 'a' }]),
    '--image-dir', s.images, '--output', s.p('r2.json')]);
  assert.equal(proc.status, 2);
  assert.equal(proc.lines.length, 1, proc.stderr);
  assert.match(proc.lines[0], /has 3 classes and no class_map, the json 1 categories/);
  // single images: the class index, as before
  proc = detectCli(['--model', s.model, '--image', s.p('images', 'a.png'), '--output', out]);
  assert.equal(proc.status, 0, proc.stderr);
  assert.deepEqual(JSON.parse(fs.readFileSync(out, 'utf8')).map((r) => r.category_id), [2, 0, 1]);
  fs.rmSync(s.dir, { recursive: true });
});

test('detect: one warning line for the images not at the model\'s test size', () => {
  const s = setup();
  const out = s.p('r.json');
  const args = ['--model', s.model, '--image', s.p('images', 'a.png'), '--image',
    s.p('images', 'b.png'), '--image', s.p('images', 'b.png'), '--output', out];
  let proc = detectCli(args);
  assert.equal(proc.status, 0, proc.stderr);
  const warnings = proc.lines.filter((l) => l.includes('test size'));
  assert.deepEqual(warnings, ['detect: warning: 2 of 3 images are not at the model\'s test size '
    + `(INPUT.MIN_SIZE_TEST 128, MAX_SIZE_TEST 128; e.g. ${s.p('images', 'b.png')} is 96x160, `
    + 'the test resize gives 77x128): the graph runs them as they are, so their detections '
    + 'differ from Python\'s eval, which resizes them; resize them first']);
  // at the test size: no warning; an older model (no test_size): no check
  proc = detectCli(['--model', s.model, '--image', s.p('images', 'a.png'), '--output', out]);
  assert.ok(!proc.stderr.includes('test size'), proc.stderr);
  const old = setup({ testSize: null });
  proc = detectCli(args.map((a) => (a === s.model ? old.model : a)));
  assert.equal(proc.status, 0, proc.stderr);
  assert.ok(!proc.stderr.includes('test size'), proc.stderr);
  fs.rmSync(s.dir, { recursive: true });
  fs.rmSync(old.dir, { recursive: true });
});

test('detect --score-thresh keeps the scores strictly above it', () => {
  const s = setup();
  const out = s.p('r.json');
  const run = (...extra) => {
    const proc = detectCli(['--model', s.model, '--image', s.p('images', 'a.png'), '--output',
      out, ...extra]);
    assert.equal(proc.status, 0, proc.stderr);
    return JSON.parse(fs.readFileSync(out, 'utf8')).map((r) => Math.round(r.score * 10) / 10);
  };
  assert.deepEqual(run(), [0.9, 0.5, 0.2]); // default 0: every detection
  assert.deepEqual(run('--score-thresh', '0.3'), [0.9, 0.5]);
  assert.deepEqual(run('--score-thresh', String(Math.fround(0.5))), [0.9]); // 0.5 is not above 0.5
  for (const bad of ['-1', '1.5', 'x']) {
    const proc = detectCli(['--model', s.model, '--image', s.p('images', 'a.png'), '--output',
      out, '--score-thresh', bad]);
    assert.equal(proc.status, 2);
    assert.deepEqual(proc.lines,
      [`detect: error: --score-thresh wants a number in [0, 1], got ${bad}`]);
  }
  fs.rmSync(s.dir, { recursive: true });
});

test('detect: an undecodable image stops the run, exit 2, nothing written', () => {
  const s = setup();
  const out = s.p('r.json');
  fs.writeFileSync(s.p('images', 'bad.png'), 'not an image');
  const proc = detectCli(['--model', s.model, '--image', s.p('images', 'a.png'), '--image',
    s.p('images', 'bad.png'), '--output', out]);
  assert.equal(proc.status, 2);
  assert.match(proc.lines.at(-1), /^detect: error: image .*bad\.png: /);
  assert.ok(!fs.existsSync(out) && !fs.existsSync(`${out}.partial`));
  fs.rmSync(s.dir, { recursive: true });
});

test('detect: command-line mistakes are one line, exit 2, before anything runs', () => {
  const s = setup();
  const a = s.p('images', 'a.png');
  const base = ['--model', s.model, '--output', s.p('r.json')];
  const cases = [
    [['--max-images', '-1'], '--max-images wants a positive integer, got -1'],
    [['--progress', '-5'], '--progress wants a non-negative integer, got -5'],
    [['--image', '--output', 'r.json'], '--image needs a value'],
    [[...base, '--model', s.model, '--image', a], 'give --model once'],
    [[...base, '--image', a, '--max-images', '2'], '--max-images goes with --coco only'],
    [['--model', s.model, '--image', a, '--output', s.dir],
      `--output ${s.dir}: a folder; name the results file to write`],
    [[...base, '--coco', s.coco(CLASSES, [{ id: 5, file_name: 'a.png' },
      { id: 5, file_name: 'b.png' }]), '--image-dir', s.images],
    'image id 5 appears twice (images[0] and images[1])'],
  ];
  for (const [args, expected] of cases) {
    const proc = detectCli(args);
    assert.equal(proc.status, 2, `${args.join(' ')}: ${proc.stderr}`);
    assert.equal(proc.lines.length, 1, proc.stderr);
    assert.ok(proc.lines[0].startsWith('detect: error: ') && proc.lines[0].includes(expected),
      `${proc.lines[0]} lacks ${expected}`);
  }
  assert.ok(!fs.existsSync(s.p('r.json')));
  const help = detectCli(['--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^usage: node detect\.mjs/);
  assert.match(help.stdout, /--score-thresh/);
  fs.rmSync(s.dir, { recursive: true });
});

test('detect --coco: an absolute file_name is used as it is (as os.path.join)', () => {
  const s = setup();
  const out = s.p('r.json');
  const elsewhere = tmpDir();
  writePng(path.join(elsewhere, 'c.png'), 128, 128);
  const json = s.coco(CLASSES, [{ id: 1, file_name: 'a.png' },
    { id: 2, file_name: path.join(elsewhere, 'c.png') }]);
  const proc = detectCli(['--model', s.model, '--coco', json, '--image-dir', s.images,
    '--output', out]);
  assert.equal(proc.status, 0, proc.stderr);
  assert.deepEqual([...new Set(JSON.parse(fs.readFileSync(out, 'utf8')).map((r) => r.image_id))],
    [1, 2]);
  fs.rmSync(s.dir, { recursive: true });
  fs.rmSync(elsewhere, { recursive: true });
});

test('run_page: --help, and command-line mistakes in one line (exit 2)', () => {
  const help = runScript(RUN_PAGE, ['--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^usage: node run_page\.mjs/);
  const cases = [
    [['--timeout', '-1'], '--timeout wants seconds > 0, got -1'],
    [['--image', '--output', 'r.json'], '--image needs a value'],
    [['--model', 'a', '--model', 'b'], 'give --model once'],
    [['--image', 'a', '--image', 'b'], 'give --image once'],
    [['--score-thresh', '2'], '--score-thresh wants a number in [0, 1], got 2'],
  ];
  for (const [args, expected] of cases) {
    const proc = runScript(RUN_PAGE, args);
    assert.equal(proc.status, 2, proc.stderr);
    assert.deepEqual(proc.lines, [`run_page: error: ${expected}`]);
  }
});

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

test('run_page: the page\'s minimum score (--score-thresh) and its test-size note',
  { skip: !fs.existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM}` }, () => {
    const s = setup();
    const out = s.p('page.json');
    const proc = runScript(RUN_PAGE, ['--model', s.model, '--image', s.p('images', 'b.png'),
      '--output', out, '--score-thresh', '0.3']);
    assert.equal(proc.status, 0, proc.stderr);
    const page = JSON.parse(fs.readFileSync(out, 'utf8'));
    assert.deepEqual(page.detections.map((d) => d.category_id), [12, 3]); // 0.9, 0.5; not 0.2
    assert.match(page.size_note, /it is 96x160, the test resize gives 77x128/);
    assert.deepEqual(proc.lines.filter((l) => l.includes('warning')),
      [`run_page: warning: ${page.size_note}`]);
    // the default: every detection; at the test size: no note
    const all = runScript(RUN_PAGE, ['--model', s.model, '--image', s.p('images', 'a.png'),
      '--output', out]);
    assert.equal(all.status, 0, all.stderr);
    const full = JSON.parse(fs.readFileSync(out, 'utf8'));
    assert.equal(full.detections.length, 3);
    assert.equal(full.size_note, null);
    fs.rmSync(s.dir, { recursive: true });
  });

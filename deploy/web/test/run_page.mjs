#!/usr/bin/env node
// Runs the web page (deploy/web/index.html) on one model and one image in headless Chromium
// and writes the detections the page drew, read back from its table:
//
//   node deploy/web/test/run_page.mjs --model model.onnx --image img.png \
//       --output detections.json [--screenshot shot.png] [--timeout 120] [--score-thresh 0]
//
// It serves deploy/ (the web root) and the two files (as /files/...) on 127.0.0.1 at a free
// port, opens web/index.html?model=...&image=...&score=..., waits for window.retinaFocal.done
// and writes {image, width, height, size_note, detections: [{bbox, score, category_id,
// class_index, class_name}]} (the Node client's detections). The page's minimum score is
// --score-thresh (default 0: every detection of the graph, not the page's 0.3 for a person).
// Chromium: $CHROMIUM, else /usr/bin/chromium (Debian: apt-get install chromium). Exit status:
// 0 done, 1 the page reported an error or timed out, 2 a mistake in the command line or its
// files.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

import { parseScoreThresh } from '../../common/detector.mjs';
import {
  UsageError, parseOptions, shown, wantsHelp, wantsTraceback, writeAtomically,
} from '../../node/cli.mjs';

const DEPLOY_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CONTENT_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.onnx': 'application/octet-stream',
};

const USAGE = `usage: node run_page.mjs --model MODEL.onnx --image IMAGE --output OUT.json
         [--screenshot SHOT.png] [--timeout SECONDS] [--score-thresh X]
  --model         an ONNX file exported by retina_focal with --graph detector
  --image         the image (PNG or JPEG) the page runs on
  --output        the JSON to write: {image, width, height, size_note, detections}
  --screenshot    a PNG of the page when it is done
  --timeout       seconds to wait for the page (default 120)
  --score-thresh  the page's minimum score, in [0, 1] (default 0: every detection)
Chromium: $CHROMIUM, else /usr/bin/chromium. Exit status 0 done, 1 the page reported an
error or timed out, 2 a mistake in the command line.`;

const OPTIONS = {
  model: { type: 'string' },
  image: { type: 'string' },
  output: { type: 'string' },
  screenshot: { type: 'string' },
  timeout: { type: 'string', default: '120' },
  'score-thresh': { type: 'string', default: '0.0' },
  help: { type: 'boolean', short: 'h' },
};

function parseCommandLine(argv) {
  if (wantsHelp(argv)) {
    console.log(USAGE);
    process.exit(0);
  }
  const values = parseOptions(argv, OPTIONS);
  const timeout = Number(values.timeout);
  if (!/^\s*\d*\.?\d+\s*$/.test(values.timeout) || !(timeout > 0)) {
    throw new UsageError(`--timeout wants seconds > 0, got ${shown(values.timeout)}`);
  }
  try {
    parseScoreThresh(values['score-thresh'], '--score-thresh');
  } catch (err) {
    throw new UsageError(err.message);
  }
  for (const name of ['model', 'image', 'output']) {
    if (values[name] === undefined) throw new UsageError(`--${name} is required`);
  }
  for (const name of ['model', 'image']) {
    if (!fs.existsSync(values[name]) || !fs.statSync(values[name]).isFile()) {
      throw new UsageError(`--${name} ${values[name]}: no such file`);
    }
  }
  for (const name of ['output', 'screenshot']) {
    if (values[name] === undefined) continue;
    const dir = path.dirname(path.resolve(values[name]));
    if (!fs.existsSync(dir)) throw new UsageError(`--${name} ${values[name]}: no folder ${dir}`);
    if (fs.existsSync(values[name]) && fs.statSync(values[name]).isDirectory()) {
      throw new UsageError(`--${name} ${values[name]}: a folder; name the file to write`);
    }
  }
  return { ...values, timeout, scoreThresh: values['score-thresh'] };
}

/**
 * A static HTTP server on 127.0.0.1 (a free port): deploy/ as the web root, and `files`
 * ({url path: file}) at their paths. GET and HEAD only; nothing outside deploy/.
 * @returns {Promise<{server: http.Server, origin: string}>}
 */
async function startServer(files) {
  const server = http.createServer((request, response) => {
    let urlPath;
    try {
      urlPath = decodeURIComponent(new URL(request.url, 'http://x').pathname);
    } catch {
      response.writeHead(400).end();
      return;
    }
    let file = files[urlPath];
    if (file === undefined) {
      file = path.join(DEPLOY_ROOT, path.normalize(urlPath));
      if (!file.startsWith(DEPLOY_ROOT + path.sep)) file = null; // '..' tricks
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405).end();
      return;
    }
    if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      response.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    const type = CONTENT_TYPES[path.extname(file).toLowerCase()] || 'application/octet-stream';
    response.writeHead(200, { 'Content-Type': type, 'Content-Length': fs.statSync(file).size,
      'Cache-Control': 'no-store' });
    if (request.method === 'HEAD') response.end();
    else fs.createReadStream(file).pipe(response);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

/** Chromium's executable: $CHROMIUM or /usr/bin/chromium, or a UsageError saying how to get it. */
function chromiumPath() {
  const executable = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(executable)) {
    throw new UsageError(`Chromium not found at ${executable}: install it (Debian: apt-get `
      + 'install chromium) or set CHROMIUM to its executable');
  }
  return executable;
}

/** The detections as the page's table holds them (row data attributes -> numbers). */
async function readTable(page) {
  const rows = await page.$$eval('#detections tbody tr', (trs) => trs.map((tr) => ({
    ...tr.dataset,
  })));
  return rows.map((r) => ({
    bbox: [Number(r.x), Number(r.y), Number(r.w), Number(r.h)],
    score: Number(r.score),
    category_id: Number(r.categoryId),
    class_index: Number(r.classIndex),
    class_name: r.className,
  }));
}

async function main() {
  const options = parseCommandLine(process.argv.slice(2));
  const executablePath = chromiumPath();
  const imageUrl = `/files/image${path.extname(options.image).toLowerCase()}`;
  const { server, origin } = await startServer({
    '/files/model.onnx': path.resolve(options.model),
    [imageUrl]: path.resolve(options.image),
  });
  let browser;
  try {
    const start = Date.now();
    // headless: true passes --headless=new
    browser = await puppeteer.launch({ executablePath, headless: true, args: ['--no-sandbox'] });
    const page = await browser.newPage();
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warn') {
        console.error(`page console ${message.type()}: ${message.text()}`);
      }
    });
    page.on('pageerror', (err) => console.error(`page error: ${err.message}`));
    page.on('response', (response) => {
      if (!response.ok()) console.error(`page: HTTP ${response.status()} for ${response.url()}`);
    });
    const query = new URLSearchParams({ model: '/files/model.onnx', image: imageUrl,
      score: options.scoreThresh });
    await page.goto(`${origin}/web/index.html?${query}`);
    try {
      await page.waitForFunction('window.retinaFocal && window.retinaFocal.done',
        { timeout: options.timeout * 1000, polling: 100 });
    } catch (err) {
      const status = await page.$eval('#status', (e) => e.textContent).catch(() => '?');
      throw new Error(`the page did not finish in ${options.timeout} s (its status: ${status})`);
    }
    const state = await page.evaluate(() => window.retinaFocal);
    if (options.screenshot) {
      // wide enough for the 1:1 canvas (which otherwise scrolls inside the page)
      await page.setViewport({ width: Math.max(800, (state.width || 0) + 80), height: 600 });
      await page.screenshot({ path: options.screenshot, fullPage: true });
    }
    if (state.error) throw new Error(`the page reports: ${state.error}`);

    const detections = await readTable(page);
    // the table must show what the page computed
    if (JSON.stringify(detections) !== JSON.stringify(state.detections)) {
      throw new Error('the table differs from window.retinaFocal.detections');
    }
    if (state.sizeNote) console.error(`run_page: warning: ${state.sizeNote}`);
    writeAtomically(options.output, JSON.stringify({
      image: options.image, width: state.width, height: state.height,
      size_note: state.sizeNote, detections,
    }, null, 1), '--output');
    console.error(`run_page: ${detections.length} detections on ${options.image} `
      + `(${state.width}x${state.height}, pixels read via ${state.pixelReader}, model run `
      + `${state.ms.toFixed(0)} ms, page ${((Date.now() - start) / 1000).toFixed(1)} s) `
      + `-> ${options.output}`);
  } finally {
    if (browser) await browser.close();
    server.close();
  }
}

main().catch((err) => {
  if (wantsTraceback()) console.error(err);
  const message = String(err && err.message ? err.message : err).split('\n')[0];
  console.error(`run_page: error: ${message}`);
  process.exit(err instanceof UsageError ? 2 : 1);
});

// Decodes PNG (pngjs) and JPEG (@jsquash/jpeg: mozjpeg compiled to WebAssembly) files to
// 8-bit RGBA pixels for the Node.js client, following what retina_focal's Python reader
// (retina_focal.data.mapper.read_image_any: PIL, EXIF orientation applied, then
// convert("RGB")) makes of the same file:
//   - 16-bit grey PNG: each value v becomes round(v / 257) (read_image_any's scaling);
//     16-bit grey+alpha, RGB and RGBA PNG: the high byte, v >> 8 (what PIL's decoder keeps).
//     pngjs would round(v / 257) all of them, so 16-bit files are decoded unscaled here.
//   - 1/2/4-bit grey and palette PNG: pngjs's scaling (v * 255 / (2^bits - 1)), as PIL's.
//   - a tRNS colour key in a grey or RGB PNG is ignored (PIL's convert("RGB") keeps those
//     pixels' colour; pngjs would zero them), so the chunk is dropped before decoding.
//   - alpha is left in the RGBA data; common/detector.mjs drops it without compositing.
//   - JPEG: mozjpeg decodes with libjpeg's defaults (integer IDCT, fancy upsampling), as the
//     libjpeg-turbo inside PIL does: the pixels are PIL's for YCbCr (chroma 4:4:4, 4:2:2,
//     4:2:0, 4:1:1), grey and RGB JPEGs, baseline or progressive. Known differences: chroma
//     halved only vertically (4:4:0, e.g. a 4:2:2 photo rotated losslessly) is upsampled
//     otherwise by mozjpeg (1-2 levels), and entropy-coded data damaged in a way libjpeg only
//     warns about may decode differently where it is damaged. The EXIF orientation is applied
//     as PIL's getexif() reads it (the Orientation entry in IFD0 of the Exif APP1 segments,
//     else an XMP tiff:Orientation) and detectron2's transposes for 2-8 do. A JPEG whose data
//     ends early is an error, as in PIL ("image file is truncated"). Refused with a one-line
//     ImageError although PIL decodes them: CMYK/YCCK JPEGs (4 colour components, which PIL
//     turns into RGB with its own formula; this mozjpeg build cannot output them) and
//     arithmetic-coded JPEGs (not built into this mozjpeg).
import fs from 'node:fs';
import { createRequire } from 'node:module';

import decodeMozjpeg, { init as initMozjpeg } from '@jsquash/jpeg/decode.js';
import pngjs from 'pngjs';

const { PNG } = pngjs;

/** An image file that cannot be decoded, worded for a user. */
export class ImageError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ImageError';
  }
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function isPng(bytes) {
  return bytes.length >= 8 && PNG_SIGNATURE.every((b, i) => bytes[i] === b);
}

function isJpeg(bytes) {
  return bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

/**
 * The PNG's chunks without tRNS when its colour type is grey (0) or RGB (2).
 * @param {Buffer} buf  a whole PNG file
 * @returns {{buf: Buffer, depth: number, colorType: number}}
 */
function pngWithoutColourKey(buf) {
  // IHDR is the first chunk: length(4) type(4) width(4) height(4) depth(1) colour type(1)
  if (buf.length < 33 || buf.toString('latin1', 12, 16) !== 'IHDR') {
    throw new ImageError('PNG without an IHDR chunk');
  }
  const depth = buf[24];
  const colorType = buf[25];
  if (colorType !== 0 && colorType !== 2) return { buf, depth, colorType };
  const kept = [buf.subarray(0, 8)];
  let pos = 8;
  while (pos + 12 <= buf.length) {
    const end = pos + 12 + buf.readUInt32BE(pos); // length, type, data, CRC
    if (buf.toString('latin1', pos + 4, pos + 8) !== 'tRNS') kept.push(buf.subarray(pos, end));
    pos = end;
  }
  kept.push(buf.subarray(pos)); // a truncated tail, left for pngjs to report
  return { buf: Buffer.concat(kept), depth, colorType };
}

/** Decodes a PNG to 8-bit RGBA (see the module comment for bit depths and tRNS). */
function decodePng(bytes) {
  const { buf, depth, colorType } = pngWithoutColourKey(Buffer.from(bytes.buffer,
    bytes.byteOffset, bytes.byteLength));
  // 16-bit: ask pngjs for the raw values (a Uint16Array of RGBA) and scale them here
  const png = PNG.sync.read(buf, { skipRescale: depth === 16 });
  const { width, height } = png;
  if (depth !== 16) {
    return { data: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.length),
      width, height };
  }
  const raw = png.data;
  const data = new Uint8Array(raw.length);
  if (colorType === 0) {
    for (let i = 0; i < raw.length; i++) data[i] = Math.round(raw[i] / 257);
  } else {
    for (let i = 0; i < raw.length; i++) data[i] = raw[i] >> 8;
  }
  return { data, width, height };
}

/** The JPEG's segments that PIL reads, up to its first scan (SOS). */
function jpegSegments(bytes) {
  const exif = []; // payloads of APP1 segments that start "Exif\0\0", in file order
  let xmp = null; // the last XMP APP1 segment's packet (after its "...xap/1.0/\0" name)
  let components = null; // the frame's (SOF's) number of colour components
  const latin1 = (from, to) => Buffer.from(bytes.buffer, bytes.byteOffset + from, to - from)
    .toString('latin1');
  let pos = 2; // after SOI
  while (pos + 1 < bytes.length) {
    if (bytes[pos] !== 0xff) { pos += 1; continue; } // junk between segments
    const marker = bytes[pos + 1];
    if (marker === 0xff) { pos += 1; continue; } // fill byte
    pos += 2;
    if (marker === 0x00 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd9)) continue;
    if (pos + 2 > bytes.length) break;
    const length = (bytes[pos] << 8) | bytes[pos + 1];
    if (length < 2) break;
    const from = pos + 2;
    const to = Math.min(pos + length, bytes.length);
    pos += length;
    if (marker === 0xda) break; // SOS
    if (marker === 0xe1) {
      if (latin1(from, Math.min(from + 6, to)) === 'Exif\0\0') exif.push(bytes.subarray(from, to));
      const name = 'http://ns.adobe.com/xap/1.0/\0';
      if (latin1(from, Math.min(from + name.length, to)) === name) {
        xmp = latin1(from + name.length, to);
      }
    } else if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8
        && marker !== 0xcc && from + 5 < to) {
      components = bytes[from + 5]; // precision(1) height(2) width(2) components(1)
    }
  }
  return { exif, xmp, components };
}

// TIFF field types PIL reads as numbers: type -> [bytes per value, DataView getter]
const TIFF_NUMBERS = {
  3: [2, 'getUint16'], 4: [4, 'getUint32'], 6: [1, 'getInt8'], 8: [2, 'getInt16'],
  9: [4, 'getInt32'], 11: [4, 'getFloat32'], 12: [8, 'getFloat64'], 13: [4, 'getUint32'],
  16: [8, 'getBigUint64'],
};
// unit sizes of the other types PIL knows: BYTE, ASCII, RATIONAL, UNDEFINED, SRATIONAL
const TIFF_OTHERS = { 1: 1, 2: 1, 5: 8, 7: 1, 10: 8 };

/**
 * The EXIF orientation that detectron2's _apply_exif_orientation() (what read_image_any uses)
 * acts on, or 1 for none: PIL 13's getexif() of the Exif APP1 payloads (later segments
 * appended to the first, as PIL does), whose IFD0 Orientation entry (the first, of any
 * numeric type; its first value) counts when it equals 2..8. A TIFF header PIL refuses makes
 * getexif() raise, which detectron2 takes as no orientation; without an Orientation entry
 * the XMP packet's tiff:Orientation is used, as getexif() does.
 */
function pilOrientation({ exif, xmp }) {
  const fromXmp = () => {
    const match = xmp === null ? null : /tiff:Orientation(="|>)([0-9])/.exec(xmp);
    return match && match[2] >= '2' && match[2] <= '8' ? Number(match[2]) : 1;
  };
  if (!exif.length) return fromXmp();
  let tiff = Buffer.concat([exif[0], ...exif.slice(1).map((s) => s.subarray(6))]);
  for (let i = 0; i < 2 && tiff.toString('latin1', 0, 6) === 'Exif\0\0'; i++) {
    tiff = tiff.subarray(6);
  }
  if (!tiff.length) return fromXmp();
  const head = tiff.toString('latin1', 0, 4);
  if (!['MM\0*', 'II*\0', 'MM*\0', 'II\0*'].includes(head) || tiff.length < 8) return 1;
  const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  const little = head.startsWith('II');
  const ifd = view.getUint32(4, little);
  if (ifd + 2 > tiff.length) return fromXmp(); // PIL: corrupt, no entries read
  let found = null; // [type, the value bytes] of the first Orientation entry PIL keeps
  const seen = new Set();
  let outOfLine = 0;
  for (let i = 0, n = view.getUint16(ifd, little); i < n; i++) {
    const entry = ifd + 2 + 12 * i;
    if (entry + 12 > tiff.length) break; // PIL stops reading, keeping the entries before
    const [tag, type, count] = [view.getUint16(entry, little), view.getUint16(entry + 2, little),
      view.getUint32(entry + 4, little)];
    if (seen.has(tag)) continue;
    const unit = TIFF_NUMBERS[type] ? TIFF_NUMBERS[type][0] : TIFF_OTHERS[type];
    if (!unit) continue;
    const size = count * unit;
    let at = entry + 8;
    if (size > 4) {
      outOfLine += size;
      if (outOfLine > tiff.length) continue;
      at = view.getUint32(entry + 8, little);
      if (at + size > tiff.length) break;
    }
    if (size === 0) continue;
    seen.add(tag);
    if (tag === 0x0112 && found === null) found = [type, at];
  }
  if (found === null) return fromXmp();
  const [type, at] = found;
  let value = NaN; // BYTE, ASCII and UNDEFINED values are bytes or text in PIL: never 2..8
  if (TIFF_NUMBERS[type]) value = Number(view[TIFF_NUMBERS[type][1]](at, little));
  else if (type === 5 || type === 10) {
    const get = type === 5 ? 'getUint32' : 'getInt32';
    const [num, den] = [view[get](at, little), view[get](at + 4, little)];
    value = den === 0 ? NaN : num / den;
    if (value !== Math.round(value) || num !== value * den) value = NaN;
  }
  return Number.isInteger(value) && value >= 2 && value <= 8 ? value : 1;
}

/**
 * The RGBA image turned upright for EXIF orientation o, as PIL's transposes do (2: mirror,
 * 3: rotate 180, 4: flip, 5: transpose, 6: rotate 90 clockwise, 7: transverse, 8: rotate
 * 90 counter-clockwise).
 */
function applyOrientation(data, width, height, o) {
  if (o === 1) return { data, width, height };
  const swap = o >= 5;
  const w = swap ? height : width;
  const h = swap ? width : height;
  const out = new Uint8Array(data.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      // (sx, sy): the source pixel shown at (x, y)
      let sx;
      let sy;
      switch (o) {
        case 2: sx = width - 1 - x; sy = y; break;
        case 3: sx = width - 1 - x; sy = height - 1 - y; break;
        case 4: sx = x; sy = height - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = height - 1 - x; break;
        case 7: sx = width - 1 - y; sy = height - 1 - x; break;
        default: sx = width - 1 - y; sy = x; break; // 8
      }
      const s = 4 * (sy * width + sx);
      const d = 4 * (y * w + x);
      out[d] = data[s];
      out[d + 1] = data[s + 1];
      out[d + 2] = data[s + 2];
      out[d + 3] = data[s + 3];
    }
  }
  return { data: out, width: w, height: h };
}

const MOZJPEG_WASM = '@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm';
let mozjpegWasm = null; // Promise of the compiled WebAssembly.Module, made on first use
let mozjpegReady = false; // whether @jsquash/jpeg holds a usable instance
let mozjpegMessages = []; // what libjpeg printed (warnings, the error) during one decode
let jpegQueue = Promise.resolve(); // one decode at a time: the messages are per decode

/**
 * Decodes a JPEG with mozjpeg to RGBA, as stored (no orientation applied).
 * libjpeg's fatal errors end its emscripten "program" (an ExitStatus exception) and leave the
 * instance's memory inconsistent (later decodes crash), so any error drops the instance and
 * the next decode makes a fresh one from the compiled module.
 */
async function mozjpegDecode(bytes) {
  if (!mozjpegWasm) {
    const file = createRequire(import.meta.url).resolve(MOZJPEG_WASM);
    mozjpegWasm = fs.promises.readFile(file).then((wasm) => WebAssembly.compile(wasm));
  }
  if (!mozjpegReady) {
    const log = (line) => { mozjpegMessages.push(String(line)); };
    await initMozjpeg(await mozjpegWasm, { print: log, printErr: log });
    mozjpegReady = true;
  }
  mozjpegMessages = [];
  const input = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  let image;
  try {
    image = await decodeMozjpeg(input, { preserveOrientation: false });
  } catch (err) {
    mozjpegReady = false;
    if (err && err.name === 'ExitStatus') {
      const message = mozjpegMessages.filter((line) => line.trim()).pop() || 'libjpeg error';
      throw new ImageError(/arithmetic/i.test(message)
        ? `arithmetic-coded JPEG, not supported here (${message})`
        : `cannot decode the JPEG (truncated or corrupt?): ${message}`);
    }
    throw err;
  }
  // libjpeg only warns where its data ends early (and decodes grey there); PIL refuses such
  // a file ("image file is truncated"), so it is refused here too. (libjpeg prints only the
  // first warning of a decode: data that ends early after another warning goes unnoticed.)
  if (mozjpegMessages.some((line) => line.startsWith('Premature end of JPEG file'))) {
    throw new ImageError('cannot decode the JPEG (truncated or corrupt?): '
      + 'Premature end of JPEG file');
  }
  const { data, width, height } = image;
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width, height };
}

/** Decodes a JPEG to RGBA, EXIF orientation applied (see the module comment). */
async function decodeJpegNow(bytes) {
  const segments = jpegSegments(bytes);
  if (segments.components === 4) {
    throw new ImageError('CMYK JPEG (4 colour components), not supported here: '
      + 'convert it to an RGB JPEG or PNG first');
  }
  const image = await mozjpegDecode(bytes);
  return applyOrientation(image.data, image.width, image.height, pilOrientation(segments));
}

function decodeJpeg(bytes) {
  const result = jpegQueue.then(() => decodeJpegNow(bytes));
  jpegQueue = result.catch(() => {});
  return result;
}

/**
 * Decodes a PNG or JPEG file's bytes (the format told by its first bytes, not its name).
 *
 * @param {Uint8Array} bytes  the whole file
 * @returns {Promise<{data: Uint8Array, width: number, height: number}>}  data: (H, W, 4) RGBA
 * @throws {ImageError}  (rejects with) not a PNG or JPEG, or one that cannot be decoded
 */
export async function decodeImage(bytes) {
  let image;
  if (isPng(bytes)) {
    try {
      image = decodePng(bytes);
    } catch (err) {
      if (err instanceof ImageError) throw err;
      throw new ImageError('cannot decode the PNG (truncated or corrupt?): '
        + `${String(err && err.message ? err.message : err).split('\n')[0]}`);
    }
  } else if (isJpeg(bytes)) {
    image = await decodeJpeg(bytes);
  } else {
    throw new ImageError('not a PNG or JPEG file (only these are supported)');
  }
  if (!(image.width > 0 && image.height > 0)) throw new ImageError('image of size 0');
  return image;
}

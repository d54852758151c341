// Decodes PNG (pngjs) and JPEG (jpeg-js) files to 8-bit RGBA pixels for the Node.js client,
// following what retina_focal's Python reader (retina_focal.data.mapper.read_image_any: PIL,
// EXIF orientation applied, then convert("RGB")) makes of the same file:
//   - 16-bit grey PNG: each value v becomes round(v / 257) (read_image_any's scaling);
//     16-bit grey+alpha, RGB and RGBA PNG: the high byte, v >> 8 (what PIL's decoder keeps).
//     pngjs would round(v / 257) all of them, so 16-bit files are decoded unscaled here.
//   - 1/2/4-bit grey and palette PNG: pngjs's scaling (v * 255 / (2^bits - 1)), as PIL's.
//   - a tRNS colour key in a grey or RGB PNG is ignored (PIL's convert("RGB") keeps those
//     pixels' colour; pngjs would zero them), so the chunk is dropped before decoding.
//   - alpha is left in the RGBA data; common/detector.mjs drops it without compositing.
//   - JPEG: the EXIF orientation tag (2-8) is applied, as PIL-based reading does. jpeg-js's
//     IDCT and chroma upsampling differ from libjpeg's, so JPEG pixels may differ from PIL's
//     by a few levels (PNG pixels are identical).
import pngjs from 'pngjs';
import jpeg from 'jpeg-js';

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

/**
 * The EXIF orientation (1-8) in a TIFF structure, or 1 when there is none.
 * @param {Uint8Array} exif  jpeg-js's exifBuffer (the APP1 payload after "Exif\0")
 */
function exifOrientation(exif) {
  if (!exif) return 1;
  const tiff = exif[0] === 0 ? exif.subarray(1) : exif; // "Exif\0\0": one pad byte left
  if (tiff.length < 8) return 1;
  const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  const order = String.fromCharCode(tiff[0], tiff[1]);
  if (order !== 'II' && order !== 'MM') return 1;
  const little = order === 'II';
  const ifd = view.getUint32(4, little);
  if (ifd + 2 > tiff.length) return 1;
  const count = view.getUint16(ifd, little);
  for (let i = 0; i < count; i++) {
    const entry = ifd + 2 + 12 * i;
    if (entry + 12 > tiff.length) return 1;
    if (view.getUint16(entry, little) === 0x0112) { // Orientation, a SHORT
      const value = view.getUint16(entry + 8, little);
      return value >= 1 && value <= 8 ? value : 1;
    }
  }
  return 1;
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

/** Decodes a JPEG to RGBA, EXIF orientation applied. */
function decodeJpeg(bytes) {
  const image = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true });
  return applyOrientation(image.data, image.width, image.height,
    exifOrientation(image.exifBuffer));
}

/**
 * Decodes a PNG or JPEG file's bytes (the format told by its first bytes, not its name).
 *
 * @param {Uint8Array} bytes  the whole file
 * @returns {{data: Uint8Array, width: number, height: number}}  data: (H, W, 4) RGBA
 * @throws {ImageError}  not a PNG or JPEG, or a broken one
 */
export function decodeImage(bytes) {
  let image;
  try {
    if (isPng(bytes)) image = decodePng(bytes);
    else if (isJpeg(bytes)) image = decodeJpeg(bytes);
  } catch (err) {
    if (err instanceof ImageError) throw err;
    throw new ImageError(`cannot decode the ${isPng(bytes) ? 'PNG' : 'JPEG'} `
      + '(truncated or corrupt?): '
      + `${String(err && err.message ? err.message : err).split('\n')[0]}`);
  }
  if (!image) throw new ImageError('not a PNG or JPEG file (only these are supported)');
  if (!(image.width > 0 && image.height > 0)) throw new ImageError('image of size 0');
  return image;
}

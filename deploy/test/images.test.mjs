// Unit tests of node/images.mjs with small PNGs and JPEGs written here: node --test test/
import assert from 'node:assert/strict';
import { test } from 'node:test';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';

import { ImageError, decodeImage } from '../node/images.mjs';

const { PNG } = pngjs;

/** A PNG of width x 1 from RGBA samples (8 or 16 bits) written as colorType. */
function png(samples, colorType, bitDepth = 8) {
  const image = new PNG({ width: samples.length / 4, height: 1, colorType,
    inputColorType: 6, inputHasAlpha: true, bitDepth });
  image.data = bitDepth === 16 ? Buffer.from(new Uint16Array(samples).buffer)
    : Buffer.from(samples);
  return new Uint8Array(PNG.sync.write(image, { colorType, inputColorType: 6, bitDepth }));
}

const rgbOf = ({ data }) => [...data].filter((_, i) => i % 4 !== 3);

test('8-bit PNGs: RGB kept, alpha left in the data (even 0)', () => {
  const image = decodeImage(png([10, 20, 30, 0, 200, 100, 50, 255], 6));
  assert.deepEqual([image.width, image.height], [2, 1]);
  assert.deepEqual([...image.data], [10, 20, 30, 0, 200, 100, 50, 255]);
  const grey = decodeImage(png([77, 77, 77, 255, 5, 5, 5, 255], 0));
  assert.deepEqual(rgbOf(grey), [77, 77, 77, 5, 5, 5]);
});

test('16-bit PNGs: grey round(v / 257), colour or alpha the high byte (as PIL)', () => {
  // 0x00ff: grey -> round(255 / 257) = 1, but its high byte is 0
  const v = [0x00ff, 0x80ff, 0xffff];
  const rgba = v.flatMap((x) => [x, x, x, 0xffff]);
  assert.deepEqual(rgbOf(decodeImage(png(rgba, 0, 16))), [1, 1, 1, 128, 128, 128, 255, 255, 255]);
  assert.deepEqual(rgbOf(decodeImage(png(rgba, 2, 16))), [0, 0, 0, 128, 128, 128, 255, 255, 255]);
  assert.deepEqual(rgbOf(decodeImage(png(rgba, 6, 16))), [0, 0, 0, 128, 128, 128, 255, 255, 255]);
  assert.deepEqual(rgbOf(decodeImage(png(rgba, 4, 16))), [0, 0, 0, 128, 128, 128, 255, 255, 255]);
});

// CRC-32 of PNG chunks (zlib.crc32 is not in every Node version)
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

test('a tRNS colour key does not blank those pixels (PIL keeps their colour)', () => {
  const plain = Buffer.from(png([1, 2, 3, 255, 9, 9, 9, 255], 2));
  // tRNS for RGB: three 16-bit samples, here (1, 2, 3); inserted after IHDR (8 + 25 bytes)
  const body = Buffer.from([0x74, 0x52, 0x4e, 0x53, 0, 1, 0, 2, 0, 3]);
  const chunk = Buffer.alloc(4 + body.length + 4);
  chunk.writeUInt32BE(6, 0);
  body.copy(chunk, 4);
  chunk.writeUInt32BE(crc32(body), 4 + body.length);
  const keyed = Buffer.concat([plain.subarray(0, 33), chunk, plain.subarray(33)]);
  assert.deepEqual(rgbOf(decodeImage(new Uint8Array(keyed))), [1, 2, 3, 9, 9, 9]);
});

/** A JPEG (quality 100) of a 32 x 16 image: its top-left quarter red, the rest blue. */
function quarter() {
  const [width, height] = [32, 16];
  const data = Buffer.alloc(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const red = x < width / 2 && y < height / 2;
      data.set(red ? [255, 0, 0, 255] : [0, 0, 255, 255], 4 * (y * width + x));
    }
  }
  return jpeg.encode({ data, width, height }, 100).data;
}

/** The JPEG with an EXIF APP1 segment (big-endian TIFF, IFD0 = one Orientation entry). */
function withOrientation(jpegBytes, orientation) {
  const tiff = [0x4d, 0x4d, 0, 42, 0, 0, 0, 8, // "MM", 42, IFD0 at 8
    0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, orientation, 0, 0, 0, 0, 0, 0, 0, 0];
  const payload = [0x45, 0x78, 0x69, 0x66, 0, 0, ...tiff]; // "Exif\0\0"
  const app1 = [0xff, 0xe1, (payload.length + 2) >> 8, (payload.length + 2) & 0xff, ...payload];
  return new Uint8Array([...jpegBytes.subarray(0, 2), ...app1, ...jpegBytes.subarray(2)]);
}

test('JPEG: EXIF orientation applied as PIL\'s transposes do', () => {
  // where the red quarter ends up, per orientation (5-8 swap width and height)
  const expected = { 1: 'top-left', 2: 'top-right', 3: 'bottom-right', 4: 'bottom-left',
    5: 'top-left', 6: 'top-right', 7: 'bottom-right', 8: 'bottom-left' };
  for (const [orientation, corner] of Object.entries(expected)) {
    const image = decodeImage(withOrientation(quarter(), Number(orientation)));
    const size = Number(orientation) >= 5 ? [16, 32] : [32, 16];
    assert.deepEqual([image.width, image.height], size, `orientation ${orientation}`);
    const redCorners = ['top-left', 'top-right', 'bottom-left', 'bottom-right'].filter((c) => {
      const x = c.endsWith('left') ? image.width / 4 : (3 * image.width) / 4;
      const y = c.startsWith('top') ? image.height / 4 : (3 * image.height) / 4;
      return image.data[4 * (y * image.width + x)] > 200;
    });
    assert.deepEqual(redCorners, [corner], `orientation ${orientation}`);
  }
  assert.deepEqual([decodeImage(quarter()).width, decodeImage(quarter()).height], [32, 16]);
});

test('files that are not PNG or JPEG, or are broken, are ImageErrors', () => {
  const cases = [
    [new TextEncoder().encode('hello'), /not a PNG or JPEG/],
    [new Uint8Array([0x42, 0x4d, 0, 0, 0, 0]), /not a PNG or JPEG/], // BMP
    [png([1, 2, 3, 255], 2).subarray(0, 40), /PNG/],
    [quarter().subarray(0, 100), /JPEG/],
  ];
  for (const [bytes, message] of cases) {
    assert.throws(() => decodeImage(bytes), (err) => err instanceof ImageError
      && message.test(err.message));
  }
});

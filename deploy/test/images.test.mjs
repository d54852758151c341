// Unit tests of node/images.mjs with small PNGs written here and a small JPEG written by PIL
// (with the pixels the Python reader gives for it): node --test test/
import assert from 'node:assert/strict';
import { test } from 'node:test';
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

test('8-bit PNGs: RGB kept, alpha left in the data (even 0)', async () => {
  const image = await decodeImage(png([10, 20, 30, 0, 200, 100, 50, 255], 6));
  assert.deepEqual([image.width, image.height], [2, 1]);
  assert.deepEqual([...image.data], [10, 20, 30, 0, 200, 100, 50, 255]);
  const grey = await decodeImage(png([77, 77, 77, 255, 5, 5, 5, 255], 0));
  assert.deepEqual(rgbOf(grey), [77, 77, 77, 5, 5, 5]);
});

test('16-bit PNGs: grey round(v / 257), colour or alpha the high byte (as PIL)', async () => {
  // 0x00ff: grey -> round(255 / 257) = 1, but its high byte is 0
  const v = [0x00ff, 0x80ff, 0xffff];
  const rgba = v.flatMap((x) => [x, x, x, 0xffff]);
  const decoded = async (colorType) => rgbOf(await decodeImage(png(rgba, colorType, 16)));
  assert.deepEqual(await decoded(0), [1, 1, 1, 128, 128, 128, 255, 255, 255]);
  assert.deepEqual(await decoded(2), [0, 0, 0, 128, 128, 128, 255, 255, 255]);
  assert.deepEqual(await decoded(6), [0, 0, 0, 128, 128, 128, 255, 255, 255]);
  assert.deepEqual(await decoded(4), [0, 0, 0, 128, 128, 128, 255, 255, 255]);
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

test('a tRNS colour key does not blank those pixels (PIL keeps their colour)', async () => {
  const plain = Buffer.from(png([1, 2, 3, 255, 9, 9, 9, 255], 2));
  // tRNS for RGB: three 16-bit samples, here (1, 2, 3); inserted after IHDR (8 + 25 bytes)
  const body = Buffer.from([0x74, 0x52, 0x4e, 0x53, 0, 1, 0, 2, 0, 3]);
  const chunk = Buffer.alloc(4 + body.length + 4);
  chunk.writeUInt32BE(6, 0);
  body.copy(chunk, 4);
  chunk.writeUInt32BE(crc32(body), 4 + body.length);
  const keyed = Buffer.concat([plain.subarray(0, 33), chunk, plain.subarray(33)]);
  assert.deepEqual(rgbOf(await decodeImage(new Uint8Array(keyed))), [1, 2, 3, 9, 9, 9]);
});

// A 16 x 12 JPEG written by PIL (quality 90, 4:2:0, optimized Huffman tables): its top-left
// quarter red, the rest blue, a green bar in the top-right quarter and a white dash in the
// bottom-left one; and the RGB pixels retina_focal's Python reader gives for it
// (retina_focal.data.mapper.read_image_any(path, "RGB"): PIL 13, libjpeg-turbo). jpeg-js
// decoded it up to 101 levels away from these (chroma upsampling at the colour edges).
const EDGE_JPEG = Buffer.from(''
  + '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4R'
  + 'DgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU'
  + 'FBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCAAMABADASIAAhEBAxEB/8QAFgABAQEAAAAAAAAAAAAAAAAA'
  + 'BQEI/8QAJhAAAQQABgAHAQAAAAAAAAAAAgEDBAUABhETISISFBYxQVSi0f/EABUBAQEAAAAAAAAAAAAAAAAAAAMI'
  + '/8QAIREAAgEDBAMBAAAAAAAAAAAAAQIRAwYSAAQFMRMiMkH/2gAMAwEAAhEDEQA/AM6epK77H4L+YBtbOulZbo4c'
  + 'aJs2EXf82/tiO94jRQ7IupaJxz7fGJFzXNiZZl0IMVpQZTqPOOu1cVyWJIoroEom1ebHonUDQeS47FqNiqrYsHjb'
  + 'WqPU2j1CSwb2YH5V1E4on5UaQZEhSDI0V33nv70O2bkERfBkVwDCcwAZlmnoR1r/2Q==', 'base64');
const EDGE_PIXELS = Buffer.from(''
  + '6BIc6BIa6RIX6BQR4xgK5RcK6RQQuyBIPx+aBje3AEiIAEmLCzK9Gi3hEiXjFSnq5hMa5hMZ6BMX6BQT5hUO6BUO'
  + '6hITuyBMPyCfAjiyPZu9Q5/ECDO1DyLUFy3jDCHc4xUV5RUV5hQV6RMV7RAX7w8X7RAZux5ROh+kAkKuNqqTMqKK'
  + 'DUCtGC7cDyfSGDLd4hcR4hcR5RUR6RMT7w8Z7w8a6RIauCBRPByjATqrOquXOqeSCDuoEyfUESfTEirU4RgQ4RgO'
  + '4xgK6BUO6hIX6BIa3xcXsiRMRx6iEje7PZW9Q5vDEDe4FSTVHi7jEybctCFOtCFLtyFEuCBGuh5Oth9SsCJQkCt3'
  + 'NhmnEizBA0GkBUWnDSvBGSbXEyPaFCbeRBi1RBmvRRulRByhQR2jPx2nPxysNh+3JyrNEyzPBS7ECjHKEifQHSzd'
  + 'FivcEizbFyTvGCXmGybWGinMFCzKEyzRFSfjFyblFSnYEirVES/fES7hECPXGSrcECXWEizZEifiFSnWJDPEFiWk'
  + 'HTSmGTG1DCHSFynrFyfcFSnYDizcDSzcEyrcFSjcFSjeFSjeGjHhDyXJFiW25vX/3/b/1Oz/HDTfESbhGCfcGCfa'
  + 'EyneESreFCncFSjcFSffFCjfFCbOGCrUGyvZFCbSFCvPFjLUCSXOFCvZGCfYHCXcHCThHCPjHCTeGCfcEyrcECvc'
  + 'GyrPGSnWGCfkEyXnDyfhESzdCinRGjXaGifWHiTcISHlISHlISLfGyXcESvaDS3a', 'base64');

/** The largest |difference| between an RGBA image's RGB and RGB pixels, and where. */
function maxDifference({ data, width }, rgb) {
  let worst = { diff: 0, x: 0, y: 0 };
  for (let i = 0; i < rgb.length; i++) {
    const diff = Math.abs(data[4 * Math.floor(i / 3) + (i % 3)] - rgb[i]);
    const pixel = Math.floor(i / 3);
    if (diff > worst.diff) worst = { diff, x: pixel % width, y: Math.floor(pixel / width) };
  }
  return worst;
}

test('JPEG: pixels identical to the Python reader\'s (PIL) at 4:2:0 colour edges', async () => {
  const image = await decodeImage(EDGE_JPEG);
  assert.deepEqual([image.width, image.height], [16, 12]);
  const worst = maxDifference(image, EDGE_PIXELS);
  assert.equal(worst.diff, 0, `differs from PIL by ${worst.diff} at (${worst.x}, ${worst.y})`);
  assert.ok([...image.data].every((v, i) => i % 4 !== 3 || v === 255), 'alpha 255');
});

/** The JPEG with an APP1 segment (payload: bytes or text) inserted after SOI. */
function withApp1(jpegBytes, payload) {
  const bytes = typeof payload === 'string' ? [...Buffer.from(payload, 'latin1')] : payload;
  const app1 = [0xff, 0xe1, (bytes.length + 2) >> 8, (bytes.length + 2) & 0xff, ...bytes];
  return new Uint8Array([...jpegBytes.subarray(0, 2), ...app1, ...jpegBytes.subarray(2)]);
}

/** The JPEG with an EXIF APP1 segment (big-endian TIFF, IFD0 = one Orientation entry). */
function withOrientation(jpegBytes, orientation) {
  const tiff = [0x4d, 0x4d, 0, 42, 0, 0, 0, 8, // "MM", 42, IFD0 at 8
    0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, orientation, 0, 0, 0, 0, 0, 0, 0, 0];
  return withApp1(jpegBytes, [0x45, 0x78, 0x69, 0x66, 0, 0, ...tiff]); // "Exif\0\0"
}

/** Which quarters of the image are red (sampled at each quarter's centre). */
function redQuarters({ data, width, height }) {
  return ['top-left', 'top-right', 'bottom-left', 'bottom-right'].filter((c) => {
    const x = c.endsWith('left') ? width / 4 : (3 * width) / 4;
    const y = c.startsWith('top') ? height / 4 : (3 * height) / 4;
    const [r, g, b] = data.subarray(4 * (y * width + x), 4 * (y * width + x) + 3);
    return r > 150 && g < 100 && b < 100;
  });
}

test('JPEG: EXIF (or XMP) orientation applied as PIL\'s transposes do', async () => {
  // where the red quarter ends up, per orientation (5-8 swap width and height)
  const expected = { 1: 'top-left', 2: 'top-right', 3: 'bottom-right', 4: 'bottom-left',
    5: 'top-left', 6: 'top-right', 7: 'bottom-right', 8: 'bottom-left' };
  for (const [orientation, corner] of Object.entries(expected)) {
    const image = await decodeImage(withOrientation(EDGE_JPEG, Number(orientation)));
    const size = Number(orientation) >= 5 ? [12, 16] : [16, 12];
    assert.deepEqual([image.width, image.height], size, `orientation ${orientation}`);
    assert.deepEqual(redQuarters(image), [corner], `orientation ${orientation}`);
  }
  const upright = await decodeImage(EDGE_JPEG);
  assert.deepEqual([upright.width, upright.height, ...redQuarters(upright)], [16, 12, 'top-left']);
  // no EXIF orientation: PIL's getexif() takes the XMP packet's
  const xmp = await decodeImage(withApp1(EDGE_JPEG,
    'http://ns.adobe.com/xap/1.0/\0<x:xmpmeta><rdf:Description tiff:Orientation="6"/>'));
  assert.deepEqual([xmp.width, xmp.height, ...redQuarters(xmp)], [12, 16, 'top-right']);
});

test('files that are not PNG or JPEG, or are broken, are ImageErrors', async () => {
  // SOI, then a frame header (SOF0) with 4 components: a CMYK JPEG's
  const cmyk = new Uint8Array([0xff, 0xd8, 0xff, 0xc0, 0, 20, 8, 0, 8, 0, 8, 4,
    1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0, 4, 0x11, 0, 0xff, 0xd9]);
  const cases = [
    [new TextEncoder().encode('hello'), /not a PNG or JPEG/],
    [new Uint8Array([0x42, 0x4d, 0, 0, 0, 0]), /not a PNG or JPEG/], // BMP
    [png([1, 2, 3, 255], 2).subarray(0, 40), /PNG/],
    [EDGE_JPEG.subarray(0, 100), /JPEG/],
    // only the end-of-image marker missing: libjpeg decodes it, PIL says truncated
    [EDGE_JPEG.subarray(0, EDGE_JPEG.length - 2), /JPEG.*Premature end/],
    [cmyk, /CMYK/],
  ];
  for (const [bytes, message] of cases) {
    await assert.rejects(decodeImage(bytes), (err) => err instanceof ImageError
      && message.test(err.message) && !err.message.includes('\n'));
  }
});

test('JPEG: decoding still right after many undecodable files', async () => {
  // a libjpeg error leaves its WebAssembly instance unusable after ~100 errors unless replaced
  for (let i = 0; i < 120; i++) {
    await assert.rejects(decodeImage(EDGE_JPEG.subarray(0, 300)), ImageError);
  }
  const images = await Promise.all([decodeImage(EDGE_JPEG), decodeImage(EDGE_JPEG.subarray(0, 300)),
    decodeImage(EDGE_JPEG)].map((p) => p.catch((err) => err)));
  assert.ok(images[1] instanceof ImageError);
  for (const image of [images[0], images[2]]) {
    assert.equal(maxDifference(image, EDGE_PIXELS).diff, 0);
  }
});

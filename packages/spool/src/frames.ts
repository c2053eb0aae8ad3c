// The one on-disk framing for append-only logs (the record spool, the embedded bus's
// partition files): [u32 payload length][u32 crc32 of payload][payload]. A frame that is
// short or fails its CRC ends the valid part of a file: it is a torn tail from a crash.
import { crc32 } from 'node:zlib';

export const FRAME_HEADER_BYTES = 8;

export function frameHeader(payload: Uint8Array): Buffer {
  const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  header.writeUInt32LE(payload.byteLength, 0);
  header.writeUInt32LE(crc32(payload), 4);
  return header;
}

export interface ScannedFrames {
  /** Payloads of the valid frames, in order (views into the scanned buffer). */
  payloads: Buffer[];
  /** Bytes up to the end of the last valid frame. */
  validBytes: number;
  /** 1 when anything follows the valid frames (a torn or corrupt tail), else 0. */
  torn: number;
}

export function scanFrames(data: Buffer): ScannedFrames {
  const payloads: Buffer[] = [];
  let offset = 0;
  while (offset + FRAME_HEADER_BYTES <= data.byteLength) {
    const len = data.readUInt32LE(offset);
    const end = offset + FRAME_HEADER_BYTES + len;
    if (end > data.byteLength) break;
    const payload = data.subarray(offset + FRAME_HEADER_BYTES, end);
    if (crc32(payload) !== data.readUInt32LE(offset + 4)) break;
    payloads.push(payload);
    offset = end;
  }
  return { payloads, validBytes: offset, torn: offset < data.byteLength ? 1 : 0 };
}

// UUIDv7 (RFC 9562): 48-bit Unix ms timestamp, then random bits; sorts by creation time.
// Random bytes come from a pooled buffer refilled 256 ids at a time (one syscall).
import { randomFillSync } from 'node:crypto';

const POOL_IDS = 256;
let pool: Buffer | null = null; // allocated on first use
let next = POOL_IDS;
const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

export function uuidv7(now = Date.now()): string {
  if (next === POOL_IDS || pool === null) {
    pool ??= Buffer.alloc(16 * POOL_IDS);
    randomFillSync(pool);
    next = 0;
  }
  const b = pool.subarray(next * 16, next * 16 + 16);
  next++;
  // 48-bit big-endian timestamp; Math.floor/% keep it exact beyond 32 bits.
  const hi = Math.floor(now / 0x10000);
  b[0] = (hi >>> 24) & 0xff;
  b[1] = (hi >>> 16) & 0xff;
  b[2] = (hi >>> 8) & 0xff;
  b[3] = hi & 0xff;
  b[4] = (now >>> 8) & 0xff;
  b[5] = now & 0xff;
  b[6] = 0x70 | (b[6]! & 0x0f); // version 7
  b[8] = 0x80 | (b[8]! & 0x3f); // variant 10
  let s = '';
  for (let i = 0; i < 16; i++) {
    s += HEX[b[i]!]!;
    if (i === 3 || i === 5 || i === 7 || i === 9) s += '-';
  }
  return s;
}

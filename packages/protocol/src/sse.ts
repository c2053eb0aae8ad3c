// Incremental Server-Sent Events parser (WHATWG HTML §9.2.6) fed with byte chunks split
// anywhere: mid-line, mid-UTF-8 sequence, between the CR and LF of a CRLF.
//
// Lines are cut on bytes (CR and LF never occur inside a UTF-8 sequence), so a line is
// decoded only once it is complete and no multi-byte character is ever split.

export interface SseEvent {
  /** `event:` field; `message` when the event had none. */
  event: string;
  /** `data:` lines joined with `\n`. */
  data: string;
  /** `id:` field when the event set one. */
  id?: string;
  /** `retry:` field when the event set one. */
  retry?: number;
}

const LF = 0x0a;
const CR = 0x0d;
const BOM = [0xef, 0xbb, 0xbf] as const;

function hasLineBreak(buf: Buffer, from: number): boolean {
  for (let i = from; i < buf.length; i++) {
    const b = buf[i];
    if (b === LF || b === CR) return true;
  }
  return false;
}

export class SseParser {
  private partial: Buffer[] = []; // bytes of an unterminated line
  private skipLf = false; // the previous chunk ended on CR: a leading LF belongs to it
  private bomChecked = false;
  private eventType = '';
  private data: string[] = [];
  private id: string | undefined;
  private retry: number | undefined;
  private hasFields = false;

  /** Feeds bytes; returns the events completed by them, in order. */
  push(chunk: Uint8Array): SseEvent[] {
    const out: SseEvent[] = [];
    let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let start = 0;
    if (this.skipLf && buf.length > 0) {
      if (buf[0] === LF) start = 1;
      this.skipLf = false;
    }
    if (this.partial.length > 0) {
      // A long line arrives in many chunks: join them only once its end is here.
      if (!hasLineBreak(buf, start)) {
        this.keep(buf.subarray(start));
        return out;
      }
      this.partial.push(buf.subarray(start));
      buf = Buffer.concat(this.partial);
      this.partial = [];
      start = 0;
    }
    if (!this.bomChecked) {
      const n = buf.length - start;
      if (n < 3 && buf.subarray(start).every((b, k) => b === BOM[k])) {
        this.keep(buf.subarray(start)); // could still become a BOM
        return out;
      }
      if (buf[start] === BOM[0] && buf[start + 1] === BOM[1] && buf[start + 2] === BOM[2]) start += 3;
      this.bomChecked = true;
    }
    let i = start;
    while (i < buf.length) {
      const b = buf[i]!;
      if (b !== LF && b !== CR) {
        i++;
        continue;
      }
      this.line(buf.toString('utf8', start, i), out);
      if (b === CR) {
        if (i + 1 < buf.length) {
          if (buf[i + 1] === LF) i++;
        } else {
          this.skipLf = true;
        }
      }
      i++;
      start = i;
    }
    if (start < buf.length) this.keep(buf.subarray(start));
    return out;
  }

  /** Keeps an unterminated line's bytes; copied because the caller may reuse its chunk. */
  private keep(bytes: Buffer): void {
    if (bytes.length > 0) this.partial.push(Buffer.from(bytes));
  }

  /**
   * End of stream. Per the spec an event not terminated by a blank line is discarded;
   * `true` tells the caller that such a trailing fragment existed.
   */
  end(): { truncated: boolean } {
    const truncated = this.partial.length > 0 || this.hasFields;
    this.partial = [];
    this.reset();
    return { truncated };
  }

  private reset(): void {
    this.eventType = '';
    this.data = [];
    this.id = undefined;
    this.retry = undefined;
    this.hasFields = false;
  }

  private line(line: string, out: SseEvent[]): void {
    if (line.length === 0) {
      if (this.data.length > 0) {
        const ev: SseEvent = { event: this.eventType || 'message', data: this.data.join('\n') };
        if (this.id !== undefined) ev.id = this.id;
        if (this.retry !== undefined) ev.retry = this.retry;
        out.push(ev);
      }
      this.reset();
      return;
    }
    if (line.charCodeAt(0) === 0x3a) return; // ':' comment
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    this.hasFields = true;
    switch (field) {
      case 'event':
        this.eventType = value;
        break;
      case 'data':
        this.data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.id = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored
    }
  }
}

/** Parses a complete event stream at once. */
export function parseSse(bytes: Uint8Array): SseEvent[] {
  const p = new SseParser();
  const events = p.push(bytes);
  p.end();
  return events;
}

// The values of a few top-level keys of a JSON object text, found without parsing the rest.
// A Claude Code request body is tens of KB to MBs of messages, tools and system prompt; the
// recorder needs only `model` and `metadata` from it. JSON.parse would build every message
// object to throw them away (it was the largest single cost of building a record); this walks
// the structure instead, jumping over strings with indexOf, and parses only the wanted values.

/** Index just past the closing quote of the string whose opening quote is at `at`; -1 if it never closes. */
function stringEnd(s: string, at: number): number {
  let q = s.indexOf('"', at + 1);
  while (q !== -1) {
    let backslashes = 0;
    for (let k = q - 1; s.charCodeAt(k) === 0x5c /* \ */; k--) backslashes++;
    if ((backslashes & 1) === 0) return q + 1;
    q = s.indexOf('"', q + 1);
  }
  return -1;
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function skipSpace(s: string, at: number): number {
  while (at < s.length && isSpace(s.charCodeAt(at))) at++;
  return at;
}

/** Index just past the value starting at `at` (an object, array, string or scalar); -1 if it is cut off or unbalanced. */
function valueEnd(s: string, at: number): number {
  const c = s.charCodeAt(at);
  if (c === 0x22 /* " */) return stringEnd(s, at);
  if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
    // Brackets must nest properly: a stack of the closers we expect.
    const closers: number[] = [];
    let i = at;
    while (i < s.length) {
      const d = s.charCodeAt(i);
      if (d === 0x22) {
        i = stringEnd(s, i);
        if (i === -1) return -1;
        continue;
      }
      if (d === 0x7b) closers.push(0x7d);
      else if (d === 0x5b) closers.push(0x5d);
      else if (d === 0x7d || d === 0x5d) {
        if (closers.pop() !== d) return -1;
        if (closers.length === 0) return i + 1;
      }
      i++;
    }
    return -1;
  }
  // A number, true, false or null: runs to the next delimiter.
  let i = at;
  while (i < s.length) {
    const d = s.charCodeAt(i);
    if (d === 0x2c /* , */ || d === 0x7d || d === 0x5d || isSpace(d)) break;
    i++;
  }
  return i === at ? -1 : i;
}

/**
 * Where the values of the `wanted` top-level keys of the JSON object `s` are: [start, end)
 * offsets (the last occurrence wins, as with JSON.parse); null when `s` is not a complete
 * JSON object. Only JSON's ASCII structure is looked at, so `s` may be UTF-8 bytes decoded as
 * latin1 (one char per byte: the offsets are byte offsets). The object's structure (quotes,
 * brackets, commas, colons) is checked, so a body cut off mid-upload gives null as JSON.parse
 * would; the tokens in between are not validated, so a body JSON.parse would refuse for a bad
 * number or literal elsewhere can still yield its values.
 */
export function topLevelValueRanges(s: string, wanted: readonly string[]): Map<string, [start: number, end: number]> | null {
  const found = new Map<string, [number, number]>();
  let i = skipSpace(s, 0);
  if (s.charCodeAt(i) !== 0x7b) return null;
  i = skipSpace(s, i + 1);
  if (s.charCodeAt(i) === 0x7d) return skipSpace(s, i + 1) === s.length ? found : null;
  for (;;) {
    if (s.charCodeAt(i) !== 0x22) return null;
    const keyEnd = stringEnd(s, i);
    if (keyEnd === -1) return null;
    const rawKey = s.slice(i + 1, keyEnd - 1);
    i = skipSpace(s, keyEnd);
    if (s.charCodeAt(i) !== 0x3a /* : */) return null;
    const valueAt = skipSpace(s, i + 1);
    const end = valueEnd(s, valueAt);
    if (end === -1) return null;
    let key = rawKey;
    if (rawKey.includes('\\')) {
      try {
        key = JSON.parse(`"${rawKey}"`) as string;
      } catch {
        return null; // a bad escape in a key
      }
    }
    if (wanted.includes(key)) found.set(key, [valueAt, end]);
    i = skipSpace(s, end);
    const c = s.charCodeAt(i);
    if (c === 0x7d) return skipSpace(s, i + 1) === s.length ? found : null;
    if (c !== 0x2c) return null;
    i = skipSpace(s, i + 1);
  }
}

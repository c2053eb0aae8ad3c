// Splits a SQL script into statements. The ClickHouse HTTP interface runs one statement
// per request, so migration files and `glitch sql "a; b"` are split here, respecting
// string literals, quoted identifiers and comments (a `;` inside them is not a separator).

/** Statements of `script` in order, trimmed, without empty or comment-only ones. */
export function splitStatements(script: string): string[] {
  const out: string[] = [];
  let start = 0;
  let i = 0;
  const n = script.length;
  while (i < n) {
    const c = script[i];
    const next = script[i + 1];
    if (c === '-' && next === '-') {
      i = lineEnd(script, i);
    } else if (c === '#' && (next === ' ' || next === '!')) {
      i = lineEnd(script, i); // ClickHouse also accepts `# ` line comments
    } else if (c === '/' && next === '*') {
      const end = script.indexOf('*/', i + 2);
      i = end === -1 ? n : end + 2;
    } else if (c === "'" || c === '"' || c === '`') {
      i = quotedEnd(script, i, c);
    } else if (c === ';') {
      push(out, script.slice(start, i));
      start = i + 1;
      i++;
    } else {
      i++;
    }
  }
  push(out, script.slice(start));
  return out;
}

function lineEnd(s: string, i: number): number {
  const end = s.indexOf('\n', i);
  return end === -1 ? s.length : end + 1;
}

/** Index just past the closing quote; `\x` escapes and doubled quotes stay inside. */
function quotedEnd(s: string, i: number, quote: string): number {
  let j = i + 1;
  while (j < s.length) {
    const c = s[j];
    if (c === '\\') j += 2;
    else if (c === quote && s[j + 1] === quote) j += 2;
    else if (c === quote) return j + 1;
    else j++;
  }
  return s.length;
}

function push(out: string[], statement: string): void {
  const trimmed = statement.trim();
  if (trimmed && stripComments(trimmed).trim()) out.push(trimmed);
}

function stripComments(s: string): string {
  return s.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|\n)\s*(--|# )[^\n]*/g, '$1');
}

// Running ad-hoc SQL for people (`glitch sql`): result sets as rows plus a column-aligned
// text table.
import type { ClickHouseClient } from '@clickhouse/client';
import { splitStatements } from './statements.js';

export interface QueryResult {
  statement: string;
  /** Empty for statements that return no result set (DDL, INSERT, OPTIMIZE, …). */
  columns: { name: string; type: string }[];
  rows: unknown[][];
}

// Statements that produce a result set; everything else runs as a command.
const RETURNS_ROWS = /^\s*(\(\s*)*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXPLAIN|EXISTS|CHECK)\b/i;

/** Runs each statement of `sql` in order and returns every result. */
export async function runStatements(client: ClickHouseClient, sql: string): Promise<QueryResult[]> {
  const statements = splitStatements(sql);
  if (statements.length === 0) throw new Error('no SQL statement given');
  const results: QueryResult[] = [];
  for (const statement of statements) {
    if (!RETURNS_ROWS.test(stripLeadingComments(statement))) {
      await client.command({ query: statement });
      results.push({ statement, columns: [], rows: [] });
      continue;
    }
    const rs = await client.query({ query: statement, format: 'JSONCompactEachRowWithNamesAndTypes' });
    const lines = await rs.json<unknown[]>();
    const [names, types, ...rows] = lines;
    const columns = ((names ?? []) as string[]).map((name, i) => ({ name, type: String((types as string[] | undefined)?.[i] ?? '') }));
    results.push({ statement, columns, rows });
  }
  return results;
}

function stripLeadingComments(s: string): string {
  let t = s;
  for (;;) {
    const before = t;
    t = t.replace(/^\s*--[^\n]*\n?/, '').replace(/^\s*\/\*[\s\S]*?\*\//, '');
    if (t === before) return t;
  }
}

export interface FormatOptions {
  /** Longer cells are cut with `…` (bodies can be megabytes). Default 120. */
  maxCellWidth?: number;
}

const NUMERIC = /^(Nullable\()?(U?Int\d+|Float\d+|Decimal)/;

/**
 * A column-aligned text table: header, dashes, rows (numbers right-aligned, NULL shown as
 * NULL, newlines escaped), then a row count.
 */
export function formatTable(result: QueryResult, opts: FormatOptions = {}): string {
  if (result.columns.length === 0) return 'OK';
  const max = opts.maxCellWidth ?? 120;
  const numeric = result.columns.map((c) => NUMERIC.test(c.type));
  const cells = result.rows.map((row) => result.columns.map((_, i) => cellText(row[i], max)));
  const widths = result.columns.map((c, i) => Math.max(width(c.name), ...cells.map((r) => width(r[i]!))));
  const pad = (text: string, i: number) => {
    const fill = ' '.repeat(widths[i]! - width(text));
    return numeric[i] ? fill + text : text + fill;
  };
  const line = (texts: string[]) => texts.map(pad).join('  ').trimEnd();
  const out = [line(result.columns.map((c) => c.name)), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const r of cells) out.push(line(r));
  out.push(`(${result.rows.length} row${result.rows.length === 1 ? '' : 's'})`);
  return out.join('\n');
}

function cellText(v: unknown, max: number): string {
  let s: string;
  if (v === null || v === undefined) s = 'NULL';
  else if (typeof v === 'string') s = v;
  else s = JSON.stringify(v);
  s = s.replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t');
  return width(s) > max ? [...s].slice(0, max - 1).join('') + '…' : s;
}

/** Display width in code points (close enough for a terminal table). */
function width(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

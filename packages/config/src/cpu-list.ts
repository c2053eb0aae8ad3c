// Linux CPU lists, as taskset takes them and /proc writes them (`0-3,8,10-11`).

/** `0-3,8,10-11` → [0,1,2,3,8,10,11] (sorted, unique); throws a TypeError on anything else. */
export function parseCpuList(text: string): number[] {
  const cpus = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^\s*(\d{1,4})\s*(?:-\s*(\d{1,4})\s*)?$/.exec(part);
    if (!m) throw new TypeError(`not a CPU list: ${JSON.stringify(text)} (e.g. 3 or 2-3 or 0,2)`);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (to < from) throw new TypeError(`not a CPU list: ${JSON.stringify(text)} (range ${from}-${to} runs backwards)`);
    for (let c = from; c <= to; c++) cpus.add(c);
  }
  return [...cpus].sort((a, b) => a - b);
}

/** [0,1,2,3,8] → `0-3,8`. */
export function formatCpuList(cpus: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    out.push(j === i ? String(cpus[i]) : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return out.join(',');
}

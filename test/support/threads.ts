// Per-thread CPU placement of a process, read from /proc (Linux).
import { readdirSync, readFileSync } from 'node:fs';

/** A thread's Cpus_allowed_list (e.g. `0-1`), or null once it is gone. */
export function threadCpuList(pid: number, tid: number): string | null {
  try {
    return /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}

/** Every thread of `pid` and its Cpus_allowed_list. */
export function threadCpuLists(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    const list = threadCpuList(pid, Number(t));
    if (list !== null) out.set(Number(t), list);
  }
  return out;
}

// Test-only ClickHouse fault injection. chDB runs inside its process, so ClickHouse cannot be
// stopped like a server; instead the client is wrapped so that, while `down` is set, every
// query, insert and command fails as a stopped server's would, and so that one chosen insert
// reaches ClickHouse but never answers (a crash after the rows landed, before the ack).
import type { ClickHouseClient } from '@glitch/store';

export interface ClickHouseFaults {
  /** Every query, insert and command throws while true. */
  down: boolean;
  /** Calls refused while down. */
  failedCalls: number;
  /** Inserts that reached ClickHouse, by table. */
  inserts: Record<string, number>;
  /** The insert into `table` whose count (1-based, per table) is `nth` lands and never answers. */
  hang: { table: string; nth: number } | null;
  /** Inserts that landed and were left hanging. */
  hungInserts: number;
}

export function faultyClickHouse(client: ClickHouseClient): { client: ClickHouseClient; faults: ClickHouseFaults } {
  const faults: ClickHouseFaults = { down: false, failedCalls: 0, inserts: {}, hang: null, hungInserts: 0 };
  const proxy = new Proxy(client, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      const fn = value as (...args: unknown[]) => Promise<unknown>;
      if (prop !== 'insert' && prop !== 'query' && prop !== 'command') return fn.bind(target);
      return async (...args: unknown[]) => {
        if (faults.down) {
          faults.failedCalls++;
          throw new Error('ClickHouse unavailable (injected by the test)');
        }
        const result = await fn.apply(target, args);
        const table = (args[0] as { table?: string } | undefined)?.table;
        if (prop === 'insert' && table !== undefined) {
          const n = (faults.inserts[table] = (faults.inserts[table] ?? 0) + 1);
          if (faults.hang !== null && faults.hang.table === table && faults.hang.nth === n) {
            faults.hang = null;
            faults.hungInserts++;
            return new Promise<never>(() => {});
          }
        }
        return result;
      };
    },
  });
  return { client: proxy, faults };
}

/** Makes the next insert into `table` land and never answer. */
export function hangNextInsert(faults: ClickHouseFaults, table: string): void {
  faults.hang = { table, nth: (faults.inserts[table] ?? 0) + 1 };
}

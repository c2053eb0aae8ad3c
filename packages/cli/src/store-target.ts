// Which ClickHouse the CLI talks to: GLITCH_CLICKHOUSE_URL when set, else the embedded chDB
// of `glitch up` under ${GLITCH_DATA_DIR}/clickhouse.
import type { StoreConfig } from '@glitch/config';
import { clickHouseTarget, type ClickHouseTarget } from '@glitch/store';
import { join, resolve } from 'node:path';

export function storeTarget(config: StoreConfig): ClickHouseTarget {
  return clickHouseTarget(config.GLITCH_CLICKHOUSE_URL, resolve(join(config.GLITCH_DATA_DIR, 'clickhouse')));
}

export function describeTarget(target: ClickHouseTarget, database: string): string {
  // Never print credentials that may sit in the URL.
  return target.kind === 'chdb' ? `chDB at ${target.path}, database ${database}` : `${target.url.replace(/\/\/[^@/]*@/, '//')} database ${database}`;
}

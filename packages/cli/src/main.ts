#!/usr/bin/env -S node --single-threaded-gc --initial-old-space-size=64 --max-semi-space-size=2
// The `glitch` command. Composition root: the only place that reads process.env.
import { ConfigError } from '@glitch/config';
import { migrate } from './migrate.js';
import { sql } from './sql.js';
import { forwarder } from './forwarder.js';
import { ingest } from './ingest.js';
import { up } from './up.js';

const USAGE = `usage: glitch <command>

commands:
  up              start the all-in-one sensor on 127.0.0.1:8787 (forwarder, recorder and
                  ingest in one process; in-memory bus, chDB under .glitch/)
  forwarder       the production edge: relay + recorder publishing to Kafka (GLITCH_KAFKA_BROKERS)
  ingest          the production consumer: Kafka → ClickHouse (GLITCH_KAFKA_BROKERS)
  sql "<query>"   run analytics SQL against ClickHouse (embedded chDB, or GLITCH_CLICKHOUSE_URL)
  migrate         create the database and apply pending migrations
  help            show this text`;

const out = (line: string) => process.stdout.write(line + '\n');

/** Runs until SIGINT/SIGTERM, then drains with `stop`. */
async function serve(stop: () => Promise<void>): Promise<number> {
  await new Promise<void>((resolve) => {
    // The first signal drains. A terminal's Ctrl-C reaches every process of the group and
    // the launcher forwards it too, so one keypress can arrive twice: only a second
    // signal a moment later means "stop now".
    let first = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      if (first === 0) {
        first = Date.now();
        process.stdout.write(`\n${signal}: draining in-flight requests… (again to stop at once)\n`);
        resolve();
      } else if (Date.now() - first > 1_000) {
        process.stdout.write(`${signal}: stopping without draining\n`);
        process.exit(130);
      }
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  await stop();
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command] = argv;
  switch (command) {
    case 'up':
      return serve(await up(process.env, out));
    case 'forwarder':
      return serve(await forwarder(process.env, out));
    case 'ingest':
      return serve(await ingest(process.env, out));
    case 'sql': {
      const query = argv.slice(1).join(' ').trim();
      if (!query) {
        process.stderr.write('usage: glitch sql "<query>"\n');
        return 2;
      }
      await sql(process.env, query, out);
      return 0;
    }
    case 'migrate':
      await migrate(process.env, out);
      return 0;
    case undefined:
    case 'help':
    case '--help':
      process.stdout.write(USAGE + '\n');
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`unknown command: ${command}\n${USAGE}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    // Expected failures (bad config, bad SQL, no database yet) read best as one message;
    // anything else is a bug and gets its stack.
    const expected = e instanceof ConfigError || (e instanceof Error && /DatabaseMissing|ClickHouse|Chdb/i.test(e.name + e.constructor.name));
    process.stderr.write(expected ? `glitch: ${(e as Error).message}\n` : `glitch: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);

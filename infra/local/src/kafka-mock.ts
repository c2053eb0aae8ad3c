// Launcher for librdkafka's Kafka-protocol mock cluster (see
// infra/local/kafka-mock/glitch-kafka-mock.c). Used where no Docker engine
// answers: kafkajs can produce, consume in groups and commit offsets against it.
// The mock has no controller: admin createTopics and idempotent producers fail
// ("Broker 0 not found in the cached metadata"), so topics are created through
// the launcher's control channel.
//
// Limits of the librdkafka 2.0.2 mock, measured with kafkajs 2.2.4:
// - Each partition keeps at most 5 MiB (and 100 000 batches). A produce that
//   crosses that drops the older batches, and (bug) the log start moves past
//   the new batch too, so it is unreadable. Keep a partition's total < 5 MiB.
// - No per-message limit like Kafka's message.max.bytes (~1 MB): a 20 MiB
//   message is accepted. Requests over 100 MB (the mock's
//   receive.message.max.bytes) close the connection instead of returning an error.
// - Topics are auto-created (4 partitions) on first use, even when the client
//   sets allowAutoTopicCreation: false, so a misspelt topic does not fail.
// - Group joins: the first join waits 3 s; after any membership change (join,
//   leave) the group waits the session timeout minus 1 s before electing.
// - Produce responses carry LogAppendTime 1234; record timestamps are the producer's.
// - Everything is in memory: a restart loses topics, data and committed offsets.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export interface KafkaMockOptions {
  /** Number of mock brokers (ids 1..N). Default 1. */
  brokers?: number;
  /** Fixed port for broker 1 so a restarted mock keeps its address; 0/undefined = any. */
  port?: number;
  /** Fixed control port; 0/undefined = any. */
  controlPort?: number;
  /** Topics created before the handle is returned. */
  topics?: { name: string; partitions: number }[];
  /** Receives the launcher's stderr lines (librdkafka logs, errors). */
  log?: (line: string) => void;
  /** Startup deadline in ms (build excluded). Default 10 000. */
  startTimeoutMs?: number;
}

export interface KafkaMockControl {
  /** "127.0.0.1:PORT" of the control channel. */
  controlAddress: string;
  ping(): Promise<void>;
  /** Creates a topic; rejects if it already exists. */
  createTopic(name: string, partitions: number): Promise<void>;
  /** Takes a broker down (connections closed, none accepted; data kept). No id = every broker. */
  setBrokerDown(id?: number): Promise<void>;
  /** Brings a broker back up. No id = every broker. */
  setBrokerUp(id?: number): Promise<void>;
  /**
   * The next requests of Kafka API `apiKey` (e.g. 14 = SyncGroup), from any client, are
   * answered with these error codes, one per request, in order (at most 16).
   */
  pushRequestErrors(apiKey: number, errorCodes: number[]): Promise<void>;
  /** Bootstrap list as the mock reports it, e.g. "127.0.0.1:39092,127.0.0.1:41234". */
  bootstrapServers(): Promise<string>;
  /** librdkafka version string of the launcher, e.g. "2.0.2". */
  librdkafkaVersion(): Promise<string>;
}

export interface KafkaMockHandle extends KafkaMockControl {
  kind: 'librdkafka-mock';
  /** "127.0.0.1:PORT" of broker 1. */
  bootstrap: string;
  /** Every broker's "host:port", for kafkajs `brokers`. */
  brokers: string[];
  /** Broker 1's port. */
  port: number;
  /** librdkafka version the launcher is linked against. */
  version: string;
  pid: number;
  /** Resolves with the exit code (or null when killed by a signal) once the launcher exits. */
  exited: Promise<number | null>;
  /** Kills the launcher (SIGTERM, then SIGKILL after 5 s) and waits for it to exit. */
  stop(): Promise<void>;
}

/** How to get what the launcher build needs (Debian/Ubuntu). */
export const KAFKA_MOCK_INSTALL_HINT = 'apt-get install -y librdkafka-dev gcc';
const INSTALL_HINT = KAFKA_MOCK_INSTALL_HINT;
const SOURCE = fileURLToPath(new URL('../kafka-mock/glitch-kafka-mock.c', import.meta.url));
const BUILD_DIR = fileURLToPath(new URL('../build/', import.meta.url));
const GCC_ARGS = ['-O2', '-Wall', '-Wextra', '-Werror'];
const LINK_ARGS = ['-lrdkafka', '-ldl'];
const COMMAND_TIMEOUT_MS = 10_000;

let building: Promise<string> | undefined;

/**
 * Compiles the launcher once per source hash into infra/local/build/ and
 * returns the binary path. Concurrent processes build to private temp names
 * and rename into place, so they never see a half-written binary.
 */
export function buildKafkaMock(): Promise<string> {
  building ??= build().catch((err: unknown) => {
    building = undefined; // let a later call retry, e.g. after installing gcc
    throw err;
  });
  return building;
}

async function build(): Promise<string> {
  const source = await readFile(SOURCE);
  const hash = createHash('sha256')
    .update(source)
    .update(JSON.stringify([GCC_ARGS, LINK_ARGS]))
    .digest('hex')
    .slice(0, 16);
  const binary = `${BUILD_DIR}glitch-kafka-mock-${hash}`;
  if (await exists(binary)) return binary;

  await mkdir(BUILD_DIR, { recursive: true });
  const tmp = `${binary}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const { code, output, spawnError } = await run('gcc', [...GCC_ARGS, '-o', tmp, SOURCE, ...LINK_ARGS]);
  if (spawnError) {
    throw new Error(
      `Cannot build the Kafka mock launcher: gcc is not available (${spawnError.message}). ` +
        `Install the toolchain and librdkafka headers: ${INSTALL_HINT}`,
    );
  }
  if (code !== 0) {
    await rm(tmp, { force: true });
    const missingLib = /rdkafka(_mock)?\.h|-lrdkafka/.test(output);
    throw new Error(
      (missingLib
        ? `Cannot build the Kafka mock launcher: librdkafka-dev is missing. Install it: ${INSTALL_HINT}`
        : `Cannot build the Kafka mock launcher (gcc exit ${code}); needs: ${INSTALL_HINT}`) +
        `\n${output.trim()}`,
    );
  }
  await rename(tmp, binary);
  // Binaries of earlier sources are dead weight (running ones keep their inode).
  for (const name of await readdir(BUILD_DIR)) {
    if (name.startsWith('glitch-kafka-mock-') && !name.includes('.tmp-') && `${BUILD_DIR}${name}` !== binary) {
      await rm(`${BUILD_DIR}${name}`, { force: true });
    }
  }
  return binary;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; output: string; spawnError?: Error }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', (spawnError) => resolve({ code: null, output, spawnError }));
    child.on('close', (code) => resolve({ code, output }));
  });
}

/** Sends one command line over a fresh connection and returns the reply line. */
function command(controlAddress: string, line: string): Promise<string> {
  const { host, port } = splitAddress(controlAddress);
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    let buf = '';
    let settled = false;
    const finish = (err: Error | undefined, reply?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(reply ?? '');
    };
    const timer = setTimeout(
      () => finish(new Error(`kafka mock control ${controlAddress}: no reply to "${line}" within ${COMMAND_TIMEOUT_MS} ms`)),
      COMMAND_TIMEOUT_MS,
    );
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${line}\n`));
    socket.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) finish(undefined, buf.slice(0, nl));
    });
    socket.on('error', (err) => finish(new Error(`kafka mock control ${controlAddress}: ${err.message}`)));
    socket.on('close', () => finish(new Error(`kafka mock control ${controlAddress}: closed before replying to "${line}"`)));
  });
}

async function expectOk(controlAddress: string, line: string): Promise<string> {
  const reply = await command(controlAddress, line);
  if (reply === 'ok') return '';
  if (reply.startsWith('ok ')) return reply.slice(3);
  throw new Error(`kafka mock: "${line}" failed: ${reply.replace(/^err /, '')}`);
}

function splitAddress(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  const port = Number(address.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new Error(`bad address "${address}", want host:port`);
  }
  return { host: address.slice(0, i), port };
}

function brokerArg(id: number | undefined): string {
  if (id === undefined) return 'all';
  if (!Number.isInteger(id) || id < 1) throw new Error(`bad broker id ${id}`);
  return String(id);
}

/**
 * Control client for a running launcher, e.g. one started by the test runner
 * and announced through GLITCH_TEST_KAFKA_CONTROL. Checks that it answers.
 */
export async function connectKafkaMockControl(controlAddress: string): Promise<KafkaMockControl> {
  const control = controlClient(controlAddress);
  await control.ping();
  return control;
}

function controlClient(controlAddress: string): KafkaMockControl {
  return {
    controlAddress,
    async ping() {
      const reply = await command(controlAddress, 'ping');
      if (reply !== 'pong') throw new Error(`kafka mock control ${controlAddress}: unexpected ping reply "${reply}"`);
    },
    async createTopic(name, partitions) {
      if (!/^[A-Za-z0-9._-]{1,249}$/.test(name)) throw new Error(`bad topic name "${name}"`);
      if (!Number.isInteger(partitions) || partitions < 1) throw new Error(`bad partition count ${partitions}`);
      await expectOk(controlAddress, `topic ${name} ${partitions}`);
    },
    async setBrokerDown(id) {
      await expectOk(controlAddress, `down ${brokerArg(id)}`);
    },
    async setBrokerUp(id) {
      await expectOk(controlAddress, `up ${brokerArg(id)}`);
    },
    async pushRequestErrors(apiKey, errorCodes) {
      if (!Number.isInteger(apiKey) || apiKey < 0) throw new Error(`bad API key ${apiKey}`);
      if (errorCodes.length === 0 || errorCodes.length > 16 || !errorCodes.every((c) => Number.isInteger(c) && c > 0)) throw new Error(`bad error codes ${JSON.stringify(errorCodes)}`);
      await expectOk(controlAddress, `errors ${apiKey} ${errorCodes.join(' ')}`);
    },
    bootstrapServers: () => expectOk(controlAddress, 'bootstrap'),
    librdkafkaVersion: () => expectOk(controlAddress, 'version'),
  };
}

/** Builds (if needed) and starts a mock cluster; resolves once it accepts connections. */
export async function startKafkaMock(opts: KafkaMockOptions = {}): Promise<KafkaMockHandle> {
  const binary = await buildKafkaMock();
  const args = ['--brokers', String(opts.brokers ?? 1), '--port', String(opts.port ?? 0)];
  args.push('--control-port', String(opts.controlPort ?? 0));
  for (const t of opts.topics ?? []) args.push('--topic', `${t.name}:${t.partitions}`);

  // stdin stays an open pipe: the launcher exits on EOF, i.e. when we exit.
  const child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const stderrTail: string[] = [];
  createInterface({ input: child.stderr }).on('line', (line) => {
    stderrTail.push(line);
    if (stderrTail.length > 20) stderrTail.shift();
    opts.log?.(line);
  });
  const exited = new Promise<number | null>((resolve) => {
    child.on('exit', (code) => resolve(code));
    child.on('error', () => resolve(child.exitCode)); // e.g. spawn failed: there is no 'exit'
  });
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.on('exit', killOnExit);
  void exited.then(() => process.off('exit', killOnExit));

  let ready: { bootstrap: string; controlPort: number };
  let control: KafkaMockControl;
  let version: string;
  try {
    ready = await waitForReady(child, exited, opts.startTimeoutMs ?? 10_000, () => stderrTail.join('\n'));
    control = controlClient(`127.0.0.1:${ready.controlPort}`);
    version = await control.librdkafkaVersion();
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    throw err;
  }
  const brokers = ready.bootstrap.split(',');
  const first = brokers[0] ?? '';
  const port = Number(first.slice(first.lastIndexOf(':') + 1));

  // Don't let an idle mock keep the owning process alive; stop() re-refs.
  unrefChild(child);

  const handle: KafkaMockHandle = {
    ...control,
    kind: 'librdkafka-mock',
    bootstrap: first,
    brokers,
    port,
    version,
    pid: child.pid ?? -1,
    exited,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.ref();
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
  return handle;
}

function unrefChild(child: ChildProcess): void {
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) {
    (stream as unknown as { unref?: () => void } | null)?.unref?.();
  }
}

function waitForReady(
  child: ChildProcess,
  exited: Promise<number | null>,
  timeoutMs: number,
  stderr: () => string,
): Promise<{ bootstrap: string; controlPort: number }> {
  return new Promise((resolve, reject) => {
    const stdout = child.stdout;
    if (!stdout) return reject(new Error('kafka mock: no stdout'));
    const rl = createInterface({ input: stdout });
    const timer = setTimeout(() => {
      rl.close();
      reject(new Error(`kafka mock: not READY within ${timeoutMs} ms\n${stderr()}`));
    }, timeoutMs);
    rl.once('line', (line) => {
      clearTimeout(timer);
      rl.close();
      const m = /^READY (\S+) (\d+)$/.exec(line);
      if (!m?.[1] || !m[2]) return reject(new Error(`kafka mock: unexpected first line "${line}"\n${stderr()}`));
      resolve({ bootstrap: m[1], controlPort: Number(m[2]) });
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`kafka mock: cannot start launcher: ${err.message}`));
    });
    void exited.then((code) => {
      clearTimeout(timer);
      // Give stderr a moment to drain so the message carries the reason.
      setTimeout(() => reject(new Error(`kafka mock: launcher exited (code ${code}) before READY\n${stderr()}`)), 50);
    });
  });
}

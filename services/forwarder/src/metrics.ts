// Relay metrics: plain counters and fixed-bucket histograms that each relay thread updates
// without allocation, snapshots as structured-cloneable data, and the main thread sums and
// renders in the Prometheus text format (0.0.4).

/** Upstream time to first byte: from milliseconds up to long extended-thinking turns. */
export const UPSTREAM_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
/** Time the forwarder itself adds: the target is well under a millisecond. */
export const ADDED_LATENCY_BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1];

export interface HistogramSnapshot {
  /** Per-bucket (non-cumulative) counts; the last entry is the +Inf overflow. */
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  constructor(readonly buckets: readonly number[]) {
    this.counts = new Float64Array(buckets.length + 1);
  }

  observe(value: number): void {
    const b = this.buckets;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }

  snapshot(): HistogramSnapshot {
    return { counts: Array.from(this.counts), sum: this.sum, count: this.count };
  }
}

export interface PoolSnapshot {
  connected: number;
  free: number;
  pending: number;
  running: number;
}

export interface MetricsSnapshot {
  /** `route \t status` → count. */
  requests: Array<[string, number]>;
  /** error code → count. */
  errors: Array<[string, number]>;
  upstreamLatency: HistogramSnapshot;
  addedLatency: HistogramSnapshot;
  openStreams: number;
  bytesIn: number;
  bytesOut: number;
  pool: PoolSnapshot;
}

/** Bounded label values: a few known routes, everything else is `other`. */
const ROUTES = ['/v1/messages', '/v1/messages/count_tokens', '/v1/models', '/v1/models/:id', '/api/hello', '/', 'other'] as const;

/** Index of the route label of a path in ROUTES. */
export function routeIndex(path: string): number {
  switch (path) {
    case '/v1/messages':
      return 0;
    case '/v1/messages/count_tokens':
      return 1;
    case '/v1/models':
      return 2;
    case '/api/hello':
      return 4;
    case '/':
      return 5;
    default:
      return path.startsWith('/v1/models/') ? 3 : 6;
  }
}

export function routeLabel(path: string): string {
  return ROUTES[routeIndex(path)]!;
}

export class RelayMetrics {
  /** routeIndex × 1000 + status → count: a number key, so counting allocates nothing. */
  private readonly requests = new Map<number, number>();
  private readonly errors = new Map<string, number>();
  readonly upstreamLatency = new Histogram(UPSTREAM_LATENCY_BUCKETS);
  readonly addedLatency = new Histogram(ADDED_LATENCY_BUCKETS);
  bytesIn = 0;
  bytesOut = 0;

  request(path: string, status: number): void {
    const key = routeIndex(path) * 1000 + status;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
  }

  error(code: string): void {
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }

  snapshot(openStreams: number, pool: PoolSnapshot): MetricsSnapshot {
    return {
      requests: Array.from(this.requests, ([k, v]): [string, number] => [`${ROUTES[Math.floor(k / 1000)]}\t${k % 1000}`, v]),
      errors: [...this.errors],
      upstreamLatency: this.upstreamLatency.snapshot(),
      addedLatency: this.addedLatency.snapshot(),
      openStreams,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      pool,
    };
  }
}

function addHist(a: HistogramSnapshot, b: HistogramSnapshot): HistogramSnapshot {
  return { counts: a.counts.map((c, i) => c + (b.counts[i] ?? 0)), sum: a.sum + b.sum, count: a.count + b.count };
}

function addPairs(a: Array<[string, number]>, b: Array<[string, number]>): Array<[string, number]> {
  const m = new Map(a);
  for (const [k, v] of b) m.set(k, (m.get(k) ?? 0) + v);
  return [...m];
}

export function emptySnapshot(): MetricsSnapshot {
  return new RelayMetrics().snapshot(0, { connected: 0, free: 0, pending: 0, running: 0 });
}

export function mergeSnapshots(list: readonly MetricsSnapshot[]): MetricsSnapshot {
  return list.reduce(
    (acc, s) => ({
      requests: addPairs(acc.requests, s.requests),
      errors: addPairs(acc.errors, s.errors),
      upstreamLatency: addHist(acc.upstreamLatency, s.upstreamLatency),
      addedLatency: addHist(acc.addedLatency, s.addedLatency),
      openStreams: acc.openStreams + s.openStreams,
      bytesIn: acc.bytesIn + s.bytesIn,
      bytesOut: acc.bytesOut + s.bytesOut,
      pool: {
        connected: acc.pool.connected + s.pool.connected,
        free: acc.pool.free + s.pool.free,
        pending: acc.pool.pending + s.pool.pending,
        running: acc.pool.running + s.pool.running,
      },
    }),
    emptySnapshot(),
  );
}

/** A single-valued metric owned by the main thread (recorder queue, threads, …). */
/** One sample; samples sharing a name (different labels) are rendered under one HELP/TYPE. */
export interface ScalarMetric {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  value: number;
  labels?: Readonly<Record<string, string>>;
}

function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function num(v: number): string {
  return Number.isFinite(v) ? String(v) : v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN';
}

function histogram(lines: string[], name: string, help: string, buckets: readonly number[], h: HistogramSnapshot): void {
  lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
  let cum = 0;
  buckets.forEach((le, i) => {
    cum += h.counts[i] ?? 0;
    lines.push(`${name}_bucket{le="${le}"} ${cum}`);
  });
  cum += h.counts[buckets.length] ?? 0;
  lines.push(`${name}_bucket{le="+Inf"} ${cum}`, `${name}_sum ${num(h.sum)}`, `${name}_count ${h.count}`);
}

export function renderPrometheus(s: MetricsSnapshot, extra: readonly ScalarMetric[] = []): string {
  const lines: string[] = [];
  const p = 'glitch_forwarder_';
  lines.push(`# HELP ${p}requests_total Requests answered, by route and HTTP status (0 = client left before a response).`);
  lines.push(`# TYPE ${p}requests_total counter`);
  for (const [key, v] of [...s.requests].sort()) {
    const [route, status] = key.split('\t');
    lines.push(`${p}requests_total{route="${esc(route ?? '')}",status="${esc(status ?? '')}"} ${v}`);
  }
  lines.push(`# HELP ${p}errors_total Glitch errors by catalogue code.`, `# TYPE ${p}errors_total counter`);
  for (const [code, v] of [...s.errors].sort()) lines.push(`${p}errors_total{code="${esc(code)}"} ${v}`);
  histogram(lines, `${p}upstream_latency_seconds`, 'Time from dispatch to the upstream response headers.', UPSTREAM_LATENCY_BUCKETS, s.upstreamLatency);
  histogram(lines, `${p}added_latency_seconds`, 'Time spent in the forwarder per exchange (before dispatch and between upstream bytes and client writes).', ADDED_LATENCY_BUCKETS, s.addedLatency);
  lines.push(`# HELP ${p}open_streams Exchanges in flight.`, `# TYPE ${p}open_streams gauge`, `${p}open_streams ${s.openStreams}`);
  lines.push(`# HELP ${p}bytes_total Body bytes: in = from clients, out = to clients.`, `# TYPE ${p}bytes_total counter`);
  lines.push(`${p}bytes_total{direction="in"} ${s.bytesIn}`, `${p}bytes_total{direction="out"} ${s.bytesOut}`);
  lines.push(`# HELP ${p}upstream_connections Upstream pool connections by state.`, `# TYPE ${p}upstream_connections gauge`);
  lines.push(`${p}upstream_connections{state="connected"} ${s.pool.connected}`, `${p}upstream_connections{state="free"} ${s.pool.free}`);
  lines.push(`# HELP ${p}upstream_requests Upstream requests by state.`, `# TYPE ${p}upstream_requests gauge`);
  lines.push(`${p}upstream_requests{state="pending"} ${s.pool.pending}`, `${p}upstream_requests{state="running"} ${s.pool.running}`);
  let previous: string | undefined;
  for (const m of extra) {
    if (m.name !== previous) lines.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} ${m.type}`);
    previous = m.name;
    const labels = m.labels ? Object.entries(m.labels).map(([k, v]) => `${k}="${esc(v)}"`) : [];
    lines.push(`${m.name}${labels.length ? `{${labels.join(',')}}` : ''} ${num(m.value)}`);
  }
  return lines.join('\n') + '\n';
}

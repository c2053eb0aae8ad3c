// Kafka's default partitioner for keyed messages (murmur2 of the key, as the Java client and
// kafkajs compute it), shared by both adapters so a key lands on the same partition either way.

/** Kafka's murmur2 (seed 0x9747b28c), as a signed 32-bit integer. */
export function murmur2(data: Buffer): number {
  const m = 0x5bd1e995;
  const length = data.length;
  let h = 0x9747b28c ^ length;
  const whole = length & ~3;
  for (let i = 0; i < whole; i += 4) {
    let k = data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
    k = Math.imul(k, m);
    k ^= k >>> 24;
    k = Math.imul(k, m);
    h = Math.imul(h, m);
    h ^= k;
  }
  const rest = length & 3;
  if (rest === 3) h ^= data[whole + 2]! << 16;
  if (rest >= 2) h ^= data[whole + 1]! << 8;
  if (rest >= 1) {
    h ^= data[whole]!;
    h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}

/** Partition for `key` among `partitions`; keyless messages rotate with `counter`. */
export function partitionFor(key: Buffer | null, partitions: number, counter: number): number {
  if (partitions <= 0) throw new Error('a topic has at least one partition');
  if (key === null) return counter % partitions;
  return (murmur2(key) & 0x7fffffff) % partitions;
}

export function keyBuffer(key: string | Buffer | null): Buffer | null {
  return key === null ? null : typeof key === 'string' ? Buffer.from(key, 'utf8') : key;
}

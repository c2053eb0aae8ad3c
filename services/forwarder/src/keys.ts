// Tenant keys. The hot path asks a KeyStore who a presented secret belongs to; the static
// store answers from a file that may hold only sha256 digests of the secrets.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

export interface StaticKey {
  id: string;
  tenantId: string;
  /** The secret itself (`glitch_sk_…`); optional when `secretSha256` is given. */
  secret?: string;
  /** Hex sha256 of the secret, so the file need not hold secrets. */
  secretSha256?: string;
}

export interface KeyIdentity {
  keyId: string;
  tenantId: string;
}

/** Synchronous, O(1): called on every request. */
export interface KeyStore {
  lookup(secret: string): KeyIdentity | null;
}

export class KeysFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeysFileError';
  }
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Checks a key list; throws KeysFileError naming every problem. */
export function validateKeys(keys: unknown, source = 'keys'): StaticKey[] {
  if (!Array.isArray(keys)) throw new KeysFileError(`${source}: "keys" must be an array`);
  const problems: string[] = [];
  const out: StaticKey[] = [];
  const seenIds = new Set<string>();
  const seenDigests = new Set<string>();
  keys.forEach((k: unknown, i) => {
    const at = `${source}: keys[${i}]`;
    if (typeof k !== 'object' || k === null || Array.isArray(k)) {
      problems.push(`${at} must be an object`);
      return;
    }
    const { id, tenantId, secret, secretSha256 } = k as Record<string, unknown>;
    const before = problems.length;
    if (typeof id !== 'string' || id === '') problems.push(`${at}.id must be a non-empty string`);
    if (typeof tenantId !== 'string' || tenantId === '') problems.push(`${at}.tenantId must be a non-empty string`);
    if (secret !== undefined && (typeof secret !== 'string' || secret.length < 8)) problems.push(`${at}.secret must be a string of at least 8 characters`);
    if (secretSha256 !== undefined && (typeof secretSha256 !== 'string' || !SHA256_HEX.test(secretSha256.toLowerCase()))) {
      problems.push(`${at}.secretSha256 must be 64 hex characters`);
    }
    if (secret === undefined && secretSha256 === undefined) problems.push(`${at} needs "secret" or "secretSha256"`);
    if (problems.length > before) return;
    const digest = typeof secret === 'string' ? sha256Hex(secret) : (secretSha256 as string).toLowerCase();
    if (typeof secret === 'string' && typeof secretSha256 === 'string' && secretSha256.toLowerCase() !== digest) {
      problems.push(`${at}: secretSha256 does not match secret`);
      return;
    }
    if (seenIds.has(id as string)) problems.push(`${at}.id "${String(id)}" is used twice`);
    if (seenDigests.has(digest)) problems.push(`${at}: the same secret is used by another key`);
    seenIds.add(id as string);
    seenDigests.add(digest);
    const key: StaticKey = { id: id as string, tenantId: tenantId as string };
    if (typeof secret === 'string') key.secret = secret;
    if (typeof secretSha256 === 'string') key.secretSha256 = secretSha256.toLowerCase();
    out.push(key);
  });
  if (problems.length) throw new KeysFileError(problems.join('\n'));
  return out;
}

/** Reads `{"keys":[{id, tenantId, secret | secretSha256}]}`; the error says what is wrong where. */
export function loadKeysFile(path: string): StaticKey[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new KeysFileError(`cannot read keys file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new KeysFileError(`keys file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || !('keys' in json)) {
    throw new KeysFileError(`keys file ${path} must be a JSON object {"keys":[...]}`);
  }
  return validateKeys((json as { keys: unknown }).keys, `keys file ${path}`);
}

/** Secrets recently verified, so a busy client's key is hashed once, not per request. */
const VERIFIED_CACHE_SIZE = 1024;

/**
 * KeyStore over a fixed list: a Map lookup per request, and one sha256 the first time a
 * secret is seen. Only valid secrets are cached (bounded: cleared when full), so unknown
 * keys cannot grow it; the cache holds nothing a request did not already carry.
 */
export function staticKeyStore(keys: StaticKey[]): KeyStore {
  const byDigest = new Map<string, KeyIdentity>();
  for (const k of validateKeys(keys)) {
    byDigest.set(k.secretSha256 ?? sha256Hex(k.secret!), { keyId: k.id, tenantId: k.tenantId });
  }
  const verified = new Map<string, KeyIdentity>();
  return {
    lookup(secret: string): KeyIdentity | null {
      const hit = verified.get(secret);
      if (hit !== undefined) return hit;
      if (secret.length === 0 || secret.length > 512) return null;
      const identity = byDigest.get(sha256Hex(secret)) ?? null;
      if (identity !== null) {
        if (verified.size >= VERIFIED_CACHE_SIZE) verified.clear();
        verified.set(secret, identity);
      }
      return identity;
    },
  };
}

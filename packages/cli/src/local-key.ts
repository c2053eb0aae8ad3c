// The all-in-one sensor's own tenant key: created on first run, kept under the data dir.
// The secret lives in a 0600 file; the key store holds only its sha256.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export interface LocalKey {
  keyFile: string; // JSON key store for the forwarder: {"keys":[{id, tenantId, secretSha256}]}
  secretFile: string; // the secret itself, for ANTHROPIC_CUSTOM_HEADERS
  created: boolean;
}

export function ensureLocalKey(dataDir: string): LocalKey {
  const dir = resolve(dataDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const secretFile = join(dir, 'local-key');
  const keyFile = join(dir, 'keys.json');
  let created = false;
  if (!existsSync(secretFile)) {
    const secret = `glitch_sk_${randomBytes(24).toString('base64url')}`;
    writeFileSync(secretFile, secret + '\n', { mode: 0o600 });
    created = true;
  }
  chmodSync(secretFile, 0o600);
  const secret = readFileSync(secretFile, 'utf8').trim();
  const secretSha256 = createHash('sha256').update(secret).digest('hex');
  const store = { keys: [{ id: 'local', tenantId: 'local', secretSha256 }] };
  writeFileSync(keyFile, JSON.stringify(store, null, 2) + '\n', { mode: 0o600 });
  return { keyFile, secretFile, created };
}

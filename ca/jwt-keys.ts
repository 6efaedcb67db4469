import { createHash, type KeyObject, randomBytes } from "node:crypto";
import { unlink } from "node:fs/promises";
import { join } from "node:path";
import { StintError } from "../common/errors";
import { ensureDir, writeSecretFile } from "../common/files";
import { KEYS_DIR, keyPem } from "./hierarchy";
import type { CaKey } from "./key-backend";
import { CaKeyStore } from "./key-store";
import { generateKeyPair } from "./keys";
import { isPkcs11Ref } from "./pkcs11/uri";
import type { Store } from "./store";

/**
 * The JWT-SVID signing keys (ES256), a ring that follows the intermediates'
 * rotation: one key is active (signs), the next is prepared (published in
 * /bundle.json but not used, so every verifier has it before the first token
 * it signs), and those replaced are retired: still published until the last
 * token they signed can have expired (retiredAt + jwt.maxTtl), then dropped.
 * `stint ca rotate` advances the ring (advanceJwtKeys) with the intermediate.
 *
 * The ring lives in store metadata (JWT_KEYS_META) so every replica and the
 * CLI see one ring; private keys are files under keys/, encrypted with the CA
 * passphrase like the intermediates', or with keys.backend pkcs11 keys made
 * in the token (the ring then records their `pkcs11:` URI). Whoever changes
 * the published set bumps the bundle sequence.
 */

export const JWT_KEYS_META = "jwt_keys";
/** Same key as ca/rotation.ts BUNDLE_SEQUENCE (not imported: rotation imports this module). */
const BUNDLE_SEQUENCE = "bundle_sequence";

export type JwtKeyState = "prepared" | "active" | "retired";

export interface JwtKeyRecord {
  /** Key id in tokens' `kid` and the bundle: base64url of the first 16 bytes of SHA-256 over the SPKI DER. */
  kid: string;
  state: JwtKeyState;
  /** Encrypted private key, relative to the data directory, or the token key's `pkcs11:` URI. */
  keyPath: string;
  /** Public key coordinates (P-256, base64url). */
  x: string;
  y: string;
  createdAt: string;
  /** When it stopped signing; tokens it signed expire by retiredAt + jwt.maxTtl. */
  retiredAt: string | null;
}

/** One `use: jwt-svid` key of a SPIFFE bundle (SPIFFE JWT-SVID §6 / Trust Domain and Bundle §4). */
export interface JwtBundleKey {
  use: "jwt-svid";
  kty: "EC";
  crv: "P-256";
  x: string;
  y: string;
  kid: string;
}

export interface JwtKeyContext {
  store: Pick<Store, "getMeta" | "setMeta" | "incrementMeta">;
  dataDir: string;
  /** null in --insecure-no-passphrase development mode. */
  passphrase: string | null;
  now: Date;
  /** Where new keys are made (keys.backend) and keys are opened; absent: key files under dataDir, with `passphrase`. */
  keys?: CaKeyStore;
}

const keyStoreOf = (ctx: Pick<JwtKeyContext, "dataDir" | "passphrase" | "keys">): CaKeyStore =>
  ctx.keys ?? CaKeyStore.files(ctx.dataDir, ctx.passphrase);

/** The kid of a public key: base64url of the first 16 bytes of SHA-256 over its SPKI DER. */
const kidOf = (publicKey: KeyObject): string =>
  createHash("sha256")
    .update(publicKey.export({ type: "spki", format: "der" }))
    .digest()
    .subarray(0, 16)
    .toString("base64url");

export const jwtKeyPath = (kid: string) => `${KEYS_DIR}/jwt-${kid}.key.pem`;

/** The ring as stored; [] when none was made yet. */
export async function readJwtKeys(store: Pick<Store, "getMeta">): Promise<JwtKeyRecord[]> {
  return parseJwtKeys(await store.getMeta(JWT_KEYS_META));
}

export function parseJwtKeys(text: string | null): JwtKeyRecord[] {
  if (text === null) return [];
  try {
    const keys = JSON.parse(text) as JwtKeyRecord[];
    if (Array.isArray(keys) && keys.every((k) => typeof k.kid === "string" && typeof k.keyPath === "string"))
      return keys;
  } catch {
    // fall through
  }
  throw new StintError("ERR_STORE_CORRUPT", `store metadata ${JWT_KEYS_META} is not a JWT key ring`);
}

/** A new key where keys.backend says: a token key (its URI recorded), else an encrypted file in keys/. */
async function newKey(ctx: JwtKeyContext, state: JwtKeyState): Promise<JwtKeyRecord> {
  const { publicKey, keyPath } =
    ctx.keys?.backend === "pkcs11" ? await newTokenKey(ctx.keys) : await newKeyFile(ctx);
  const kid = kidOf(publicKey);
  const jwk = publicKey.export({ format: "jwk" });
  return {
    kid,
    state,
    keyPath: keyPath ?? jwtKeyPath(kid),
    x: String(jwk.x),
    y: String(jwk.y),
    createdAt: ctx.now.toISOString(),
    retiredAt: null,
  };
}

async function newKeyFile(ctx: JwtKeyContext): Promise<{ publicKey: KeyObject; keyPath: string }> {
  const keys = await generateKeyPair("ec-p256");
  const keyPath = jwtKeyPath(kidOf(keys.publicKey));
  await ensureDir(join(ctx.dataDir, KEYS_DIR), 0o700);
  await writeSecretFile(join(ctx.dataDir, keyPath), await keyPem(keys, ctx.passphrase));
  return { publicKey: keys.publicKey, keyPath };
}

async function newTokenKey(keys: CaKeyStore): Promise<{ publicKey: KeyObject; keyPath: string }> {
  // The kid is known only once the key exists: a random tag tells the token's objects apart.
  const key = await keys.generate("ec-p256", `stint-jwt-${randomBytes(4).toString("hex")}`);
  return { publicKey: key.publicKey, keyPath: key.ref };
}

async function save(ctx: JwtKeyContext, keys: readonly JwtKeyRecord[]): Promise<void> {
  await ctx.store.setMeta(JWT_KEYS_META, JSON.stringify(keys));
  await ctx.store.incrementMeta(BUNDLE_SEQUENCE);
}

/**
 * Makes the ring when there is none (a CA from before JWT-SVIDs, or a new one):
 * an active key and a prepared one. Returns the ring as stored afterwards; two
 * replicas starting at once may both write, and both then use the stored one.
 */
export async function ensureJwtKeys(ctx: JwtKeyContext): Promise<JwtKeyRecord[]> {
  const ring = await readJwtKeys(ctx.store);
  if (ring.some((k) => k.state === "active")) return ring;
  const made = [...ring, await newKey(ctx, "active"), await newKey(ctx, "prepared")];
  await save(ctx, made);
  return readJwtKeys(ctx.store);
}

/**
 * One rotation step: the prepared key becomes active (it has been published
 * since the last step), the active one is retired, and a new one is prepared.
 */
export async function advanceJwtKeys(ctx: JwtKeyContext): Promise<JwtKeyRecord[]> {
  const ring = await readJwtKeys(ctx.store);
  if (!ring.some((k) => k.state === "active")) return ensureJwtKeys(ctx);
  const at = ctx.now.toISOString();
  const next = ring.map((k): JwtKeyRecord => {
    if (k.state === "active") return { ...k, state: "retired", retiredAt: at };
    if (k.state === "prepared") return { ...k, state: "active" };
    return k;
  });
  // A ring without a prepared key (hand-edited, or interrupted) activates a fresh one: never none active.
  if (!ring.some((k) => k.state === "prepared")) next.push(await newKey(ctx, "active"));
  next.push(await newKey(ctx, "prepared"));
  await save(ctx, next);
  return next;
}

/** Whether a retired key can no longer have a live token: retiredAt + maxTtl has passed. */
export const expiredRetired = (k: JwtKeyRecord, now: Date, maxTtlMs: number): boolean =>
  k.state === "retired" && k.retiredAt !== null && Date.parse(k.retiredAt) + maxTtlMs <= now.getTime();

/**
 * Drops retired keys past their last token's expiry from the ring (and their
 * key files; token keys stay in the token, as retired intermediates' do),
 * bumping the bundle sequence; returns the ring left.
 */
export async function pruneJwtKeys(ctx: JwtKeyContext, maxTtlMs: number): Promise<JwtKeyRecord[]> {
  const ring = await readJwtKeys(ctx.store);
  const gone = ring.filter((k) => expiredRetired(k, ctx.now, maxTtlMs));
  if (gone.length === 0) return ring;
  const kept = ring.filter((k) => !gone.includes(k));
  await save(ctx, kept);
  const files = gone.filter((k) => !isPkcs11Ref(k.keyPath));
  await Promise.all(files.map((k) => unlink(join(ctx.dataDir, k.keyPath)).catch(() => undefined)));
  return kept;
}

/** What /bundle.json publishes: every key of the ring still in it, prepared ones included. */
export function jwtBundleKeys(ring: readonly JwtKeyRecord[], now: Date, maxTtlMs: number): JwtBundleKey[] {
  return ring
    .filter((k) => !expiredRetired(k, now, maxTtlMs))
    .map((k) => ({ use: "jwt-svid", kty: "EC", crv: "P-256", x: k.x, y: k.y, kid: k.kid }));
}

function activeOf(ring: readonly JwtKeyRecord[]): JwtKeyRecord {
  const active = ring.find((k) => k.state === "active");
  if (!active) throw new StintError("ERR_NO_ACTIVE_ISSUER", "no active JWT-SVID signing key");
  return active;
}

function checkHolds(record: JwtKeyRecord, publicKey: KeyObject): void {
  const jwk = publicKey.export({ format: "jwk" });
  if (jwk.x !== record.x || jwk.y !== record.y) {
    throw new StintError("ERR_KEY_MISMATCH", `${record.keyPath} does not hold JWT key ${record.kid}`);
  }
}

/** The active key as a CaKey, from its file or its token (whichever its ref names); ERR_NO_ACTIVE_ISSUER when the ring has none. */
export async function openActiveJwtKey(
  ring: readonly JwtKeyRecord[],
  ctx: Pick<JwtKeyContext, "dataDir" | "passphrase" | "keys">,
): Promise<{ kid: string; key: CaKey }> {
  const active = activeOf(ring);
  const { key } = await keyStoreOf(ctx).open(active.keyPath);
  checkHolds(active, key.publicKey);
  return { kid: active.kid, key };
}

import "reflect-metadata";
import { generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { LeafEngine } from "../../ca/engine";
import { generateKeyPair } from "../../ca/keys";
import { createIntermediateCertificate, createRootCertificate, randomSerial } from "../../ca/x509";
import { isStintError } from "../../common/errors";
import * as der from "../../formats/der";
import { toPem } from "../../formats/pem";
import { INTERNAL_ERROR, TrustBundle, validateChain } from "../../verify/chain";
import { createVerifier, type Verifier } from "../../verify/verifier";
import { seeded } from "../bench/seeded";

/**
 * A seeded fuzzer for the verifier's inputs (issue 12): hostile variations
 * of a real Stint chain — truncations, bit flips, interesting bytes,
 * rewritten lengths (overflowing, indefinite, 4-octet), inserted and deleted
 * bytes, spliced TLVs, deep nesting, garbage — fed to validateChain(),
 * verify() (DER and PEM) and TrustBundle.from(). Half the certificate
 * mutations are made to the TBSCertificate and re-signed by the real
 * intermediate, so they get past the signature into every rule after it.
 * Each input must come back as a verdict: validateChain() and verify() never
 * throw, TrustBundle.from() throws only ERR_CONFIG, and every input not
 * re-signed is refused.
 */

export interface Material {
  root: Buffer;
  inter: Buffer;
  leaf: Buffer;
  interKey: KeyObject;
  now: Date;
  bundle: TrustBundle;
  verifier: Verifier;
}

/** A root, intermediate and leaf from Stint's own issuance code, as `stint ca` makes them. */
export async function makeMaterial(): Promise<Material> {
  const now = new Date();
  const td = "fuzz.example";
  const rootKeys = await generateKeyPair("ec-p256");
  const root = await createRootCertificate({
    keys: rootKeys,
    commonName: "Fuzz Root",
    trustDomain: td,
    notBefore: new Date(now.getTime() - 3_600_000),
    notAfter: new Date(now.getTime() + 86_400_000),
    serial: randomSerial(),
  });
  const interKeys = await generateKeyPair("ec-p256");
  const inter = await createIntermediateCertificate({
    issuer: { certDer: root, privateKey: rootKeys.privateKey },
    subjectPublicKey: interKeys.publicKey,
    commonName: "Fuzz Intermediate",
    trustDomain: td,
    notBefore: new Date(now.getTime() - 3_600_000),
    notAfter: new Date(now.getTime() + 43_200_000),
    serial: randomSerial(),
    pathLength: 0,
  });
  const engine = new LeafEngine({ certDer: inter, privateKey: interKeys.privateKey, organization: td });
  const leafKeys = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const leaf = engine.issue({
    spki: leafKeys.publicKey.export({ format: "der", type: "spki" }),
    keyAlgorithm: "ec-p256",
    spiffeId: `spiffe://${td}/ns/fuzz/sa/web`,
    dnsNames: ["web.fuzz.example"],
    ipAddresses: [],
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + 3_600_000),
    sequence: 1,
  }).der;
  const bundle = TrustBundle.from([root]);
  const verifier = createVerifier({ bundle: [root], usage: "client", allow: { trustDomain: td } });
  return { root, inter, leaf, interKey: interKeys.privateKey, now, bundle, verifier };
}

export interface FuzzStats {
  inputs: number;
  /** Inputs that made a function throw what it must not (must be 0). */
  throws: number;
  /** Refusals from validateChain's catch-all for unexpected errors (must be 0). */
  internalErrors: number;
  /** Inputs not re-signed that were accepted (must be 0). */
  falseAccepts: number;
  refused: number;
  /** Re-signed mutations that are still valid certificates (a changed CN byte, say). */
  acceptedResigned: number;
  /** First few failures, for the report. */
  failures: string[];
  byCode: Record<string, number>;
}

type Rand = () => number;
const int = (rand: Rand, n: number) => Math.floor(rand() * n);
const pick = <T>(rand: Rand, items: readonly T[]): T => items[int(rand, items.length)];

const INTERESTING = [0x00, 0x01, 0x02, 0x7f, 0x80, 0x81, 0x82, 0x83, 0x84, 0xff, 0x30, 0x31, 0xa0, 0xa3];

/** SEQUENCEs nested 2 to 4,000 deep around a NULL, built once (each level copies the whole value). */
const NESTED: readonly Buffer[] = [2, 30, 200, 1000, 4000].map((depth) => {
  let inner: Buffer = Buffer.from([0x05, 0x00]);
  for (let i = 0; i < depth; i++) inner = der.sequence(inner);
  return inner;
});

/** Offsets of TLV headers found by a tolerant walk of constructed values (stops where DER breaks). */
function tlvOffsets(buf: Buffer, start = 0, end = buf.length, out: number[] = [], depth = 0): number[] {
  for (let p = start; p < end && out.length < 512 && depth < 12; ) {
    let t: der.Tlv;
    try {
      t = der.readTlv(buf, p, end);
    } catch {
      return out;
    }
    out.push(p);
    if (t.tag & 0x20) tlvOffsets(buf, t.valueStart, t.end, out, depth + 1);
    p = t.end;
  }
  return out;
}

/** One hostile variation of `input` (never equal to it). */
export function mutate(rand: Rand, input: Buffer, donors: readonly Buffer[]): Buffer {
  for (;;) {
    const out = mutateOnce(rand, input, donors);
    if (!out.equals(input)) return out;
  }
}

function mutateOnce(rand: Rand, input: Buffer, donors: readonly Buffer[]): Buffer {
  const b = Buffer.from(input);
  const at = () => int(rand, b.length);
  const offsets = tlvOffsets(input);
  switch (int(rand, 9)) {
    case 0:
      return b.subarray(0, int(rand, b.length));
    case 1: {
      for (let i = 1 + int(rand, 8); i > 0; i--) b[at()] ^= 1 << int(rand, 8);
      return b;
    }
    case 2: {
      for (let i = 1 + int(rand, 4); i > 0; i--) b[at()] = pick(rand, INTERESTING);
      return b;
    }
    case 3: {
      // Rewrite one TLV's length: overflowing, indefinite, 4-octet, zero, or one off.
      const p = offsets.length ? pick(rand, offsets) : 0;
      const lengths = [
        Buffer.from([0x80]),
        Buffer.from([0x84, 0xff, 0xff, 0xff, 0xff]),
        Buffer.from([0x83, 0xff, 0xff, 0xff]),
        Buffer.from([0x82, 0x00, 0x05]),
        Buffer.from([0x00]),
        Buffer.from([0x7f]),
        Buffer.from([(b[p + 1] + 1) & 0x7f]),
      ];
      let lenBytes = 1;
      if (b[p + 1] & 0x80) lenBytes += b[p + 1] & 0x7f;
      return Buffer.concat([b.subarray(0, p + 1), pick(rand, lengths), b.subarray(p + 1 + lenBytes)]);
    }
    case 4: {
      const p = at();
      return rand() < 0.5
        ? Buffer.concat([b.subarray(0, p), Buffer.from([int(rand, 256)]), b.subarray(p)])
        : Buffer.concat([b.subarray(0, p), b.subarray(p + 1 + int(rand, 4))]);
    }
    case 5: {
      // Splice a TLV from another certificate over one of ours.
      const donor = pick(rand, donors);
      const dOffsets = tlvOffsets(donor);
      if (!offsets.length || !dOffsets.length) return b.subarray(1);
      const mine = der.readTlv(b, pick(rand, offsets));
      const theirs = der.readTlv(donor, pick(rand, dOffsets));
      return Buffer.concat([b.subarray(0, mine.start), der.whole(donor, theirs), b.subarray(mine.end)]);
    }
    case 6: {
      // Deep nesting: a TLV's content replaced by SEQUENCEs nested up to 4,000 deep.
      const inner = pick(rand, NESTED);
      if (!offsets.length || rand() < 0.3) return inner;
      const t = der.readTlv(b, pick(rand, offsets));
      return Buffer.concat([b.subarray(0, t.start), der.tlv(b[t.start], inner), b.subarray(t.end)]);
    }
    case 7: {
      // Duplicate a TLV in place (a repeated extension, name or field).
      if (!offsets.length) return Buffer.concat([b, b]);
      const t = der.readTlv(b, pick(rand, offsets));
      return Buffer.concat([b.subarray(0, t.end), der.whole(b, t), b.subarray(t.end)]);
    }
    default: {
      const garbage = Buffer.alloc(int(rand, 64));
      for (let i = 0; i < garbage.length; i++) garbage[i] = int(rand, 256);
      return rand() < 0.5 ? garbage : Buffer.concat([Buffer.from([0x30, 0x82]), garbage]);
    }
  }
}

/** `cert` with its TBSCertificate mutated and signed again by `key`, so the signature verifies. */
export function mutateSigned(rand: Rand, cert: Buffer, key: KeyObject, donors: readonly Buffer[]): Buffer {
  const outer = der.readTlv(cert, 0);
  const tbsTlv = der.readTlv(cert, outer.valueStart, outer.end);
  const tbs = mutate(rand, Buffer.from(der.whole(cert, tbsTlv)), donors);
  const signature = sign("sha256", tbs, key);
  return der.sequence(tbs, der.sequence(der.oid("1.2.840.10045.4.3.2")), der.bitString(signature));
}

const KNOWN_CODES = new Set([
  "malformed",
  "untrusted",
  "bad-signature",
  "bad-algorithm",
  "bad-key",
  "expired",
  "not-yet-valid",
  "constraints",
  "usage",
  "spiffe",
  "no-certificate",
]);

/** Runs `count` seeded inputs against the three entry points. */
export function runFuzz(m: Material, count: number, seed: number): FuzzStats {
  const rand = seeded(seed);
  const donors = [m.root, m.inter, m.leaf];
  const stats: FuzzStats = {
    inputs: 0,
    throws: 0,
    internalErrors: 0,
    falseAccepts: 0,
    refused: 0,
    acceptedResigned: 0,
    failures: [],
    byCode: {},
  };
  const fail = (i: number, what: string) => {
    if (stats.failures.length < 10) stats.failures.push(`input ${i} (seed ${seed}): ${what}`);
  };
  const opts = { usage: "client" as const, now: m.now, clockSkew: 30_000 };

  for (let i = 0; i < count; i++) {
    stats.inputs++;
    const target = rand();
    if (target < 0.12) {
      // TrustBundle.from: a mutated root, as DER or as PEM text (itself sometimes mutated).
      const root = mutate(rand, m.root, donors);
      const input = rand() < 0.5 ? [root] : mutatePem(rand, toPem("CERTIFICATE", root));
      try {
        TrustBundle.from(input);
      } catch (err) {
        if (!isStintError(err, "ERR_CONFIG")) {
          stats.throws++;
          fail(i, `TrustBundle.from threw ${(err as Error)?.name}: ${(err as Error)?.message}`);
        }
      }
      continue;
    }
    const resigned = rand() < 0.5;
    const mutateLeaf = rand() < 0.75;
    const leaf = !mutateLeaf
      ? m.leaf
      : resigned
        ? mutateSigned(rand, m.leaf, m.interKey, donors)
        : mutate(rand, m.leaf, donors);
    const inter = mutateLeaf ? m.inter : mutate(rand, m.inter, donors);
    const chain = reshape(rand, [leaf, inter], donors);
    const viaVerifier = target < 0.25;
    let ok: boolean;
    let code: string;
    let reason: string;
    try {
      if (viaVerifier) {
        const pem = rand() < 0.5;
        const r = m.verifier.verify(pem ? chain.map((d) => toPem("CERTIFICATE", d)).join("") : chain, m.now);
        ({ ok, code, reason } = r);
      } else {
        const r = validateChain(chain, m.bundle, opts);
        ok = r.ok;
        code = r.ok ? "ok" : r.code;
        reason = r.ok ? "" : r.reason;
      }
    } catch (err) {
      stats.throws++;
      fail(
        i,
        `${viaVerifier ? "verify" : "validateChain"} threw ${(err as Error)?.name}: ${(err as Error)?.message}`,
      );
      continue;
    }
    stats.byCode[code] = (stats.byCode[code] ?? 0) + 1;
    if (ok) {
      if (resigned && mutateLeaf) stats.acceptedResigned++;
      else {
        stats.falseAccepts++;
        fail(i, "an input that was not re-signed was accepted");
      }
      continue;
    }
    stats.refused++;
    if (reason.startsWith(INTERNAL_ERROR) || reason.startsWith("the chain could not be validated")) {
      stats.internalErrors++;
      fail(i, `internal error: ${reason}`);
    } else if (!KNOWN_CODES.has(code) || typeof reason !== "string" || reason.length === 0) {
      stats.throws++;
      fail(i, `refusal without a known code and a reason: ${code}`);
    }
  }
  return stats;
}

/** Chain-level variations: usually as is; sometimes reordered, with a copy, an empty entry, or too long. */
function reshape(rand: Rand, chain: Buffer[], donors: readonly Buffer[]): Buffer[] {
  const r = rand();
  if (r < 0.8) return chain;
  if (r < 0.85) return [chain[1], chain[0]];
  // The root as an extra, never the real intermediate: with it a damaged intermediate is merely unused.
  if (r < 0.9) return [...chain, donors[0]];
  if (r < 0.95) return [chain[0], Buffer.alloc(0), chain[1]];
  return Array.from({ length: 9 + int(rand, 4) }, () => chain[0]);
}

function mutatePem(rand: Rand, pem: string): string {
  const b = Buffer.from(pem, "latin1");
  if (rand() < 0.5) return pem;
  for (let i = 1 + int(rand, 4); i > 0; i--) b[int(rand, b.length)] = int(rand, 256);
  return b.toString("latin1");
}

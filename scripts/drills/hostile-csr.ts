import { createPublicKey, generateKeyPairSync, type KeyObject, randomBytes, sign } from "node:crypto";
import { buildCsr } from "../../agent/csr";
import * as der from "../../formats/der";

/**
 * CSRs a workload must never get a certificate for, built byte by byte (the
 * agent's CSR builder refuses most of them): names outside what the order
 * or certificate allows, IP addresses, CA:TRUE, keys too small or absurdly
 * large, and DER that is not a CSR at all. Each is validly signed unless its
 * point is the key or the bytes themselves.
 */

const OID = {
  ecdsaSha256: "1.2.840.10045.4.3.2",
  sha256Rsa: "1.2.840.113549.1.1.11",
  rsaEncryption: "1.2.840.113549.1.1.1",
  extensionRequest: "1.2.840.113549.1.9.14",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
} as const;

type Name = { uri: string } | { dns: string } | { ip: number[] };

const generalName = (n: Name): Buffer =>
  "uri" in n
    ? der.tlv(der.contextTag(6, false), Buffer.from(n.uri, "ascii"))
    : "dns" in n
      ? der.tlv(der.contextTag(2, false), Buffer.from(n.dns, "ascii"))
      : der.tlv(der.contextTag(7, false), Buffer.from(n.ip));

const extension = (oid: string, critical: boolean, value: Buffer) =>
  critical
    ? der.sequence(der.oid(oid), der.booleanTrue(), der.octetString(value))
    : der.sequence(der.oid(oid), der.octetString(value));

/** A PKCS#10 request for `names`, signed by `key` (P-256 or RSA), with `spki` instead of the key's own if given. */
function request(key: KeyObject, names: Name[], opts: { ca?: boolean; spki?: Buffer } = {}): Buffer {
  const extensions = [extension(OID.subjectAltName, true, der.sequence(...names.map(generalName)))];
  if (opts.ca) extensions.push(extension(OID.basicConstraints, true, der.sequence(der.booleanTrue())));
  const spki = opts.spki ?? createPublicKey(key).export({ type: "spki", format: "der" });
  const info = der.sequence(
    der.smallInteger(0),
    der.sequence(),
    spki,
    der.explicit(0, der.sequence(der.oid(OID.extensionRequest), der.set(der.sequence(...extensions)))),
  );
  const rsa = key.asymmetricKeyType === "rsa";
  const alg = rsa
    ? der.sequence(der.oid(OID.sha256Rsa), der.nullValue())
    : der.sequence(der.oid(OID.ecdsaSha256));
  return der.sequence(info, alg, der.bitString(sign("sha256", info, key)));
}

/** An RSA SubjectPublicKeyInfo with a random modulus of `bits` bits (no private key exists for it). */
function rsaSpki(bits: number, exponent = Buffer.from([1, 0, 1])): Buffer {
  const n = randomBytes(bits / 8);
  n[0] |= 0x80;
  n[n.length - 1] |= 1;
  const key = der.sequence(der.unsignedInteger(n), der.unsignedInteger(exponent));
  return der.sequence(der.sequence(der.oid(OID.rsaEncryption), der.nullValue()), der.bitString(key));
}

export interface HostileCsr {
  name: string;
  der: Buffer;
}

/**
 * The set for one SPIFFE ID in trust domain `td`: each is refused for the
 * reason its name gives. `good` is a valid CSR for the same ID, whose
 * truncations and bit flips the caller adds.
 */
export function hostileCsrs(spiffeId: string, td: string): { good: Buffer; hostile: HostileCsr[] } {
  const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
  const rsa1024 = generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey;
  const good = buildCsr({ key: ec, spiffeId });
  const self = { uri: spiffeId };
  return {
    good,
    hostile: [
      { name: "another SPIFFE ID", der: request(ec, [{ uri: `spiffe://${td}/admin` }]) },
      { name: "the admin SPIFFE ID", der: request(ec, [{ uri: `spiffe://${td}/stint/admin` }]) },
      { name: "another trust domain", der: request(ec, [{ uri: "spiffe://evil.example/web" }]) },
      { name: "two SPIFFE IDs", der: request(ec, [self, { uri: `spiffe://${td}/other` }]) },
      { name: "a DNS name not granted", der: request(ec, [self, { dns: "www.evil.example" }]) },
      { name: "an IP SAN", der: request(ec, [self, { ip: [127, 0, 0, 1] }]) },
      { name: "an IPv6 SAN", der: request(ec, [self, { ip: [...Array(15).fill(0), 1] }]) },
      { name: "a non-SPIFFE URI", der: request(ec, [{ uri: "https://evil.example/" }]) },
      { name: "CA:TRUE", der: request(ec, [self], { ca: true }) },
      { name: "no names", der: request(ec, []) },
      { name: "an RSA-1024 key", der: request(rsa1024, [self]) },
      { name: "an RSA-16384 key", der: request(ec, [self], { spki: rsaSpki(16384) }) },
      { name: "an RSA-8192 key", der: request(ec, [self], { spki: rsaSpki(8192) }) },
      {
        name: "an RSA key with a 2000-bit exponent",
        der: request(ec, [self], { spki: rsaSpki(2048, randomBytes(250)) }),
      },
      {
        name: "a signature by another key",
        der: request(ec, [self], { spki: createPublicKey(rsa1024).export({ type: "spki", format: "der" }) }),
      },
      { name: "not DER", der: randomBytes(200) },
      { name: "an empty SEQUENCE", der: der.sequence() },
      { name: "a certificate-sized blob of zeros", der: Buffer.alloc(1500) },
    ],
  };
}

/** `good` cut short at a random length, or with a few random bits flipped. */
export function mangled(good: Buffer, rng: () => number): Buffer {
  if (rng() < 0.3) return good.subarray(0, Math.floor(rng() * good.length));
  const out = Buffer.from(good);
  const flips = 1 + Math.floor(rng() * 4);
  for (let i = 0; i < flips; i++) out[Math.floor(rng() * out.length)] ^= 1 << Math.floor(rng() * 8);
  return out;
}

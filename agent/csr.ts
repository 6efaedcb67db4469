import { createPublicKey, type KeyObject, sign } from "node:crypto";
import { StintError } from "../common/errors";
import * as der from "../formats/der";
import { parseSpiffeId } from "../formats/spiffe";

/**
 * PKCS#10 requests (RFC 2986) as the agent sends them at finalize: names go
 * in a subjectAltName extension request, the subject stays empty unless a CN
 * is asked for. Written with formats/der.ts and signed by node:crypto, so a
 * request costs about one signature.
 */

export interface CsrRequest {
  /** The private key the certificate will be issued for; it signs the request. */
  key: KeyObject;
  /** Goes in as a URI SAN; checked against the SPIFFE ID grammar. */
  spiffeId?: string;
  dnsNames?: string[];
  /** More URI SANs, unchecked (tests use them to ask for what the CA must refuse). */
  extraUris?: string[];
  /** Asks for basicConstraints CA:TRUE (tests use it to check the CA refuses). */
  requestCa?: boolean;
  /** Subject CN; omitted by default, since the CA takes names only from the SANs. */
  commonName?: string;
}

const OID = {
  ecdsaSha256: "1.2.840.10045.4.3.2",
  ecdsaSha384: "1.2.840.10045.4.3.3",
  ed25519: "1.3.101.112",
  sha256Rsa: "1.2.840.113549.1.1.11",
  commonName: "2.5.4.3",
  extensionRequest: "1.2.840.113549.1.9.14",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
} as const;

interface Scheme {
  hash: string | null;
  algorithmIdentifier: Buffer;
}

function schemeFor(key: KeyObject): Scheme {
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (type === "ec" && curve === "prime256v1")
    return { hash: "sha256", algorithmIdentifier: der.sequence(der.oid(OID.ecdsaSha256)) };
  if (type === "ec" && curve === "secp384r1")
    return { hash: "sha384", algorithmIdentifier: der.sequence(der.oid(OID.ecdsaSha384)) };
  if (type === "ed25519") return { hash: null, algorithmIdentifier: der.sequence(der.oid(OID.ed25519)) };
  // RFC 4055 2.1: the sha256WithRSAEncryption parameters are an explicit NULL.
  if (type === "rsa")
    return { hash: "sha256", algorithmIdentifier: der.sequence(der.oid(OID.sha256Rsa), der.nullValue()) };
  const what = type === "ec" ? `EC ${curve ?? "unknown curve"}` : (type ?? "unknown");
  throw new StintError(
    "ERR_USAGE",
    `cannot build a CSR with this key (${what}); use EC P-256, EC P-384, Ed25519 or RSA`,
  );
}

/** IA5String names must be printable ASCII; anything else would be silently mangled by the encoding. */
function ia5Name(value: string, what: string): Buffer {
  if (!/^[\x21-\x7e]+$/.test(value)) {
    throw new StintError("ERR_USAGE", `${what} must be non-empty printable ASCII (no spaces or non-ASCII)`);
  }
  return Buffer.from(value, "ascii");
}

function extension(oidText: string, critical: boolean, value: Buffer): Buffer {
  return critical
    ? der.sequence(der.oid(oidText), der.booleanTrue(), der.octetString(value))
    : der.sequence(der.oid(oidText), der.octetString(value));
}

/** Builds a signed DER PKCS#10 request. */
export function buildCsr(req: CsrRequest): Buffer {
  if (req.key.type !== "private") throw new StintError("ERR_USAGE", "buildCsr needs a private key");
  const scheme = schemeFor(req.key);
  const spki = createPublicKey(req.key).export({ type: "spki", format: "der" });

  const uris = [
    ...(req.spiffeId === undefined ? [] : [parseSpiffeId(req.spiffeId).uri]),
    ...(req.extraUris ?? []),
  ];
  const names = [
    ...uris.map((u) => der.tlv(der.contextTag(6, false), ia5Name(u, "a URI SAN"))),
    ...(req.dnsNames ?? []).map((d) => der.tlv(der.contextTag(2, false), ia5Name(d, "a DNS name"))),
  ];

  const subject =
    req.commonName === undefined
      ? der.sequence()
      : der.sequence(der.set(der.sequence(der.oid(OID.commonName), der.utf8String(req.commonName))));
  const extensions: Buffer[] = [];
  // RFC 5280 4.2.1.6: with an empty subject the SAN extension is critical.
  if (names.length > 0)
    extensions.push(extension(OID.subjectAltName, req.commonName === undefined, der.sequence(...names)));
  if (req.requestCa) extensions.push(extension(OID.basicConstraints, true, der.sequence(der.booleanTrue())));
  const attributes =
    extensions.length === 0
      ? der.explicit(0, Buffer.alloc(0))
      : der.explicit(0, der.sequence(der.oid(OID.extensionRequest), der.set(der.sequence(...extensions))));

  const info = der.sequence(der.smallInteger(0), subject, spki, attributes);
  const signature = sign(scheme.hash, info, req.key);
  return der.sequence(info, scheme.algorithmIdentifier, der.bitString(signature));
}

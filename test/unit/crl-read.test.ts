import { createPrivateKey, generateKeyPairSync, type KeyObject, sign, X509Certificate } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CrlSigner } from "../../ca/crl";
import { extension, signatureScheme } from "../../ca/engine";
import { issuerIdFromSki } from "../../ca/keys";
import type { StintError } from "../../common/errors";
import { crlSignedBy, issuerIdFromKeyId, readCrl } from "../../formats/crl";
import * as der from "../../formats/der";
import { computedKeyId, readCertificate } from "../../formats/x509";
import { openssl, pemFileDer, tempDir } from "../helpers/openssl";

/**
 * formats/crl.ts reads what ca/crl.ts signs and what OpenSSL signs, and
 * refuses CRLs it cannot judge rather than guessing.
 */

const dir = tempDir("stint-crl-read-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An OpenSSL CA (P-256) that has revoked one certificate, and its CRL. */
function opensslCa(): { caPem: string; crlDer: Buffer; revokedSerial: string } {
  const p = (f: string) => join(dir, f);
  writeFileSync(p("index.txt"), "");
  writeFileSync(p("crlnumber"), "1000\n");
  writeFileSync(
    p("ca.cnf"),
    [
      "[ca]",
      "default_ca = d",
      "[d]",
      `database = ${p("index.txt")}`,
      `crlnumber = ${p("crlnumber")}`,
      "default_md = sha256",
      "default_crl_days = 1",
      "crl_extensions = crl_ext",
      "[crl_ext]",
      "authorityKeyIdentifier = keyid:always",
      "",
    ].join("\n"),
  );
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"];
  const caExt = [
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ];
  openssl([
    "req",
    "-x509",
    ...ec,
    "-subj",
    "/CN=openssl ca",
    ...caExt,
    "-keyout",
    p("ca.key"),
    "-out",
    p("ca.pem"),
  ]);
  openssl([
    "req",
    "-x509",
    ...ec,
    "-subj",
    "/CN=leaf",
    "-CA",
    p("ca.pem"),
    "-CAkey",
    p("ca.key"),
    "-keyout",
    p("leaf.key"),
    "-out",
    p("leaf.pem"),
  ]);
  const conf = ["-config", p("ca.cnf"), "-keyfile", p("ca.key"), "-cert", p("ca.pem")];
  openssl(["ca", ...conf, "-revoke", p("leaf.pem"), "-crl_reason", "keyCompromise"]);
  openssl(["ca", ...conf, "-gencrl", "-out", p("crl.pem")]);
  return {
    caPem: readFileSync(p("ca.pem"), "utf8"),
    crlDer: pemFileDer(p("crl.pem")),
    revokedSerial: new X509Certificate(readFileSync(p("leaf.pem"))).serialNumber.toLowerCase(),
  };
}

/** A P-256 issuer certificate made by OpenSSL, and Stint's CRL signer for it. */
function stintSigner(): { certDer: Buffer; key: KeyObject; signer: CrlSigner } {
  const p = (f: string) => join(dir, f);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"];
  openssl([
    "req",
    "-x509",
    ...ec,
    "-subj",
    "/CN=stint issuer",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-keyout",
    p("stint.key"),
    "-out",
    p("stint.pem"),
  ]);
  const certDer = pemFileDer(p("stint.pem"));
  const key = createPrivateKey(readFileSync(p("stint.key")));
  return { certDer, key, signer: new CrlSigner({ certDer, privateKey: key }) };
}

const T = new Date("2030-01-01T00:00:00Z");
const LATER = new Date("2030-01-01T01:00:00Z");

/** A CRL assembled field by field and signed with `key`, for the shapes ca/crl.ts never writes. */
function assemble(
  key: KeyObject,
  issuerName: Buffer,
  opts: { version?: Buffer | null; extensions?: Buffer[]; outerAlgorithm?: Buffer; nextUpdate?: boolean },
): Buffer {
  const scheme = signatureScheme(key);
  const tbs = der.sequence(
    ...(opts.version === null ? [] : [opts.version ?? der.smallInteger(1)]),
    scheme.algorithmIdentifier,
    issuerName,
    der.time(T),
    ...(opts.nextUpdate === false ? [] : [der.time(LATER)]),
    ...(opts.extensions ? [der.explicit(0, der.sequence(...opts.extensions))] : []),
  );
  const signature = sign(scheme.hash, tbs, key);
  return der.sequence(tbs, opts.outerAlgorithm ?? scheme.algorithmIdentifier, der.bitString(signature));
}

function derError(fn: () => unknown): { code?: string; message?: string } {
  try {
    fn();
  } catch (err) {
    return err as StintError;
  }
  throw new Error("expected readCrl to throw");
}

describe("readCrl", () => {
  it("reads a CRL signed by ca/crl.ts: issuer, times, number, entries, key identifier", () => {
    const { certDer, signer } = stintSigner();
    const crlDer = signer.sign({
      number: 7,
      thisUpdate: T,
      nextUpdate: LATER,
      revoked: [
        { serial: "01abcdef", revokedAt: T, reason: 1 },
        { serial: "02", revokedAt: T, reason: 0 },
      ],
    });
    const crl = readCrl(crlDer);
    const cert = readCertificate(certDer);
    expect(crl.issuer).toEqual(cert.subject);
    expect(crl.authorityKeyId).toEqual(computedKeyId(cert.spki));
    expect(crl.thisUpdate).toEqual(T);
    expect(crl.nextUpdate).toEqual(LATER);
    expect(crl.number).toBe(7n);
    expect(crl.revoked).toEqual(["01abcdef", "02"]);
    expect(crl.signatureAlgorithm).toBe("1.2.840.10045.4.3.2");
    const publicKey = new X509Certificate(certDer).publicKey;
    expect(crlSignedBy(crl, publicKey)).toBe(true);
    expect(crlSignedBy(crl, generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey)).toBe(false);
    // A key of another type is a mismatch, not a crash.
    expect(crlSignedBy(crl, generateKeyPairSync("ed25519").publicKey)).toBe(false);
  });

  it("reads a CRL made by OpenSSL and checks its signature", () => {
    const ca = opensslCa();
    const crl = readCrl(ca.crlDer);
    const cert = new X509Certificate(ca.caPem);
    expect(crl.number).toBe(0x1000n);
    expect(crl.revoked).toEqual([ca.revokedSerial]);
    expect(crl.nextUpdate!.getTime() - crl.thisUpdate.getTime()).toBe(24 * 3_600_000);
    expect(crlSignedBy(crl, cert.publicKey)).toBe(true);
    // One flipped bit in the last signed byte (the cRLNumber's) breaks it.
    const tampered = Buffer.from(ca.crlDer);
    tampered[ca.crlDer.indexOf(crl.tbs) + crl.tbs.length - 1] ^= 1;
    const read = readCrl(tampered);
    expect(read.number).toBe(0x1001n);
    expect(crlSignedBy(read, cert.publicKey)).toBe(false);
  });

  it("reads a CRL without a version, nextUpdate or extensions (v1)", () => {
    const { certDer, key } = stintSigner();
    const name = readCertificate(certDer).subject;
    const crl = readCrl(assemble(key, name, { version: null, nextUpdate: false }));
    expect(crl).toMatchObject({ nextUpdate: null, number: null, authorityKeyId: null, revoked: [] });
    expect(crlSignedBy(crl, new X509Certificate(certDer).publicKey)).toBe(true);
  });

  it("refuses what it cannot judge, with ERR_DER and a reason", () => {
    const { certDer, key, signer } = stintSigner();
    const name = readCertificate(certDer).subject;
    const good = signer.sign({ number: 1, thisUpdate: T, nextUpdate: LATER, revoked: [] });
    const idp = extension("2.5.29.28", true, der.sequence(der.explicit(0, der.sequence())));
    const cases: [string, Buffer, RegExp][] = [
      ["trailing bytes", Buffer.concat([good, Buffer.from([0])]), /trailing bytes after the CRL/],
      ["truncated", good.subarray(0, good.length - 5), /runs past|truncated/],
      ["empty", Buffer.alloc(0), /truncated/],
      ["a certificate", certDer, /TBSCertList|version/],
      ["version v3", assemble(key, name, { version: der.smallInteger(2) }), /version is not v2/],
      [
        "a critical issuingDistributionPoint",
        assemble(key, name, { extensions: [idp] }),
        /2\.5\.29\.28 is critical and not understood/,
      ],
      [
        "the signature algorithm changed outside the signed part",
        assemble(key, name, { outerAlgorithm: der.sequence(der.oid("1.2.840.10045.4.3.3")) }),
        /signature algorithm differs/,
      ],
      [
        "a cRLNumber of 21 octets",
        assemble(key, name, {
          extensions: [extension("2.5.29.20", false, der.unsignedInteger(Buffer.alloc(21, 0x11)))],
        }),
        /cRLNumber is not a number of at most 20 octets/,
      ],
    ];
    for (const [what, input, message] of cases) {
      const err = derError(() => readCrl(input));
      expect({ what, code: err.code }).toEqual({ what, code: "ERR_DER" });
      expect(err.message).toMatch(message);
    }
  });
});

it("names issuers as the CA does (ca/keys.ts issuerIdFromSki)", () => {
  for (let i = 0; i < 5; i++) {
    const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
      type: "spki",
      format: "der",
    });
    const keyId = computedKeyId(spki);
    expect(issuerIdFromKeyId(keyId)).toBe(issuerIdFromSki(keyId));
    expect(issuerIdFromKeyId(keyId)).toMatch(/^[0-9a-f]{16}$/);
  }
});

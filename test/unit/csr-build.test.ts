import { spawnSync } from "node:child_process";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { buildCsr } from "../../agent/csr";
import { parseCsr } from "../../ca/csr";
import type { KeyAlgorithm } from "../../ca/spki";
import { toPem } from "../../formats/pem";
import { stintError } from "../attest/helpers";

const KEYS: [KeyAlgorithm, KeyObject, string][] = [
  ["ec-p256", generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, "ecdsa-with-SHA256"],
  ["ec-p384", generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey, "ecdsa-with-SHA384"],
  ["ed25519", generateKeyPairSync("ed25519").privateKey, "ED25519"],
  ["rsa-2048", generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey, "sha256WithRSAEncryption"],
];
const p256 = KEYS[0][1];
const SPIFFE = "spiffe://example.org/ns/prod/sa/web";

/** OpenSSL, the independent parser: checks the self-signature and prints the request. */
function opensslReq(csr: Buffer): { ok: boolean; text: string } {
  const r = spawnSync("openssl", ["req", "-in", "-", "-inform", "DER", "-noout", "-verify", "-text"], {
    input: csr,
    encoding: "utf8",
  });
  return { ok: r.status === 0 && /verify OK/.test(r.stdout + r.stderr), text: r.stdout };
}

describe("buildCsr", () => {
  it.each(KEYS)("builds a %s request that ca/csr.ts and OpenSSL both accept", (alg, key, sigName) => {
    const csr = buildCsr({ key, spiffeId: SPIFFE, dnsNames: ["web.example.org", "web2.example.org"] });
    const parsed = parseCsr(csr);
    expect(parsed).toMatchObject({
      keyAlgorithm: alg,
      uris: [SPIFFE],
      dnsNames: ["web.example.org", "web2.example.org"],
      ipAddresses: [],
      requestsCa: false,
    });
    const { ok, text } = opensslReq(csr);
    expect(ok).toBe(true);
    expect(text).toContain(`Signature Algorithm: ${sigName}`);
    expect(text).toMatch(
      /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/example\.org\/ns\/prod\/sa\/web/,
    );
    expect(text).toContain("DNS:web.example.org, DNS:web2.example.org");
    expect(text).toMatch(/Subject:\s*\n/);
  });

  it("asks for CA:TRUE when requestCa is set", () => {
    const csr = buildCsr({ key: p256, spiffeId: SPIFFE, requestCa: true });
    expect(parseCsr(csr).requestsCa).toBe(true);
    const { ok, text } = opensslReq(csr);
    expect(ok).toBe(true);
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE/);
  });

  it("puts an optional CN in the subject, and then the SAN extension is not critical", () => {
    const csr = buildCsr({ key: p256, spiffeId: SPIFFE, commonName: "web" });
    const { ok, text } = opensslReq(csr);
    expect(ok).toBe(true);
    expect(text).toContain("Subject: CN = web");
    expect(text).toMatch(/X509v3 Subject Alternative Name: \n/);
  });

  it("adds extra URIs unchecked, and builds a request with no names at all", () => {
    const extra = buildCsr({ key: p256, spiffeId: SPIFFE, extraUris: ["spiffe://other.org/x"] });
    expect(parseCsr(extra).uris).toEqual([SPIFFE, "spiffe://other.org/x"]);
    const bare = buildCsr({ key: p256 });
    expect(parseCsr(bare)).toMatchObject({ uris: [], dnsNames: [], requestsCa: false });
    expect(opensslReq(bare).ok).toBe(true);
  });

  it("is a PEM-armourable DER request OpenSSL reads in PEM form too", () => {
    const csr = buildCsr({ key: p256, dnsNames: ["a.example.org"] });
    const r = spawnSync("openssl", ["req", "-noout", "-verify"], {
      input: toPem("CERTIFICATE REQUEST", csr),
      encoding: "utf8",
    });
    expect(r.status).toBe(0);
  });

  it("refuses what it cannot encode or sign", () => {
    expect(() => buildCsr({ key: generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey })).toThrow(
      stintError("ERR_USAGE", "buildCsr needs a private key"),
    );
    expect(() => buildCsr({ key: generateKeyPairSync("ec", { namedCurve: "P-521" }).privateKey })).toThrow(
      stintError(
        "ERR_USAGE",
        "cannot build a CSR with this key (EC secp521r1); use EC P-256, EC P-384, Ed25519 or RSA",
      ),
    );
    expect(() => buildCsr({ key: p256, dnsNames: ["bücher.example"] })).toThrow(
      stintError("ERR_USAGE", "a DNS name must be non-empty printable ASCII (no spaces or non-ASCII)"),
    );
    expect(() => buildCsr({ key: p256, spiffeId: "https://example.org/x" })).toThrow(
      stintError("ERR_POLICY_SPIFFE", /must start with "spiffe:\/\/"/),
    );
  });
});

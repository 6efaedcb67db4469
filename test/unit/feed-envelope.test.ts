import "reflect-metadata";
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  webcrypto,
} from "node:crypto";
import * as x509 from "@peculiar/x509";
import { createRootCertificate } from "../../ca/x509";
import { isStintError } from "../../common/errors";
import {
  decodeFeed,
  encodeFeed,
  type FeedSnapshot,
  feedSignerProblem,
  parseSignedFeed,
  signFeed,
  verifyFeedSignature,
} from "../../formats/feed";
import vectors from "../vectors/feed.json";

const NOW = new Date("2025-06-01T00:00:00Z");
const doc: FeedSnapshot = {
  kind: "snapshot",
  trustDomain: "example.org",
  sequence: 3,
  thisUpdate: NOW,
  nextUpdate: new Date(NOW.getTime() + 3_600_000),
  maxClockSkew: 300_000,
  issuers: [{ issuerId: "00112233445566aa", lo: 1, hi: 1000, revoked: [2, 3, 500] }],
  revokedIssuers: [],
  retiredIssuers: [],
};
const body = encodeFeed(doc);

async function caCert(privateKey: KeyObject): Promise<Buffer> {
  return createRootCertificate({
    keys: { privateKey, publicKey: createPublicKey(privateKey) },
    commonName: "Feed signer",
    trustDomain: "example.org",
    notBefore: NOW,
    notAfter: new Date(NOW.getTime() + 86_400_000),
    serial: Buffer.from("01" + "00".repeat(15) + "07", "hex"),
  });
}

function expectMalformed(fn: () => unknown, message?: string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(isStintError(thrown, "ERR_MALFORMED")).toBe(true);
  if (message) expect((thrown as Error).message).toContain(message);
}

describe.each([
  ["P-256", () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, 64],
  ["Ed25519", () => generateKeyPairSync("ed25519").privateKey, 64],
  ["P-384", () => generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey, 96],
])("a feed signed with %s", (_name, makeKey, signatureBytes) => {
  let key: KeyObject;
  let cert: Buffer;
  let envelope: Buffer;
  beforeAll(async () => {
    key = makeKey();
    cert = await caCert(key);
    envelope = signFeed(body, key, [cert]);
  });

  it("parses and verifies, over exactly the body bytes", () => {
    const signed = parseSignedFeed(envelope);
    expect(signed.body).toEqual(body);
    expect(signed.chain).toEqual([cert]);
    expect(signed.signature).toHaveLength(signatureBytes);
    expect(verifyFeedSignature(signed)).toBe(true);
    expect(decodeFeed(signed.body)).toEqual(doc);
  });

  it("refuses a tampered body or signature, or another signer", async () => {
    const signed = parseSignedFeed(envelope);
    const tampered = Buffer.from(signed.body);
    tampered[tampered.length - 5] ^= 1;
    expect(verifyFeedSignature({ ...signed, body: tampered })).toBe(false);
    const badSig = Buffer.from(signed.signature);
    badSig[0] ^= 0x80;
    expect(verifyFeedSignature({ ...signed, signature: badSig })).toBe(false);
    const other = await caCert(makeKey());
    expect(verifyFeedSignature({ ...signed, chain: [other] })).toBe(false);
    expect(verifyFeedSignature({ ...signed, chain: [Buffer.from([0x30, 0])] })).toBe(false);
  });

  it("refuses every truncation of the envelope and trailing bytes", () => {
    for (let n = 0; n < envelope.length; n++) expectMalformed(() => parseSignedFeed(envelope.subarray(0, n)));
    expectMalformed(() => parseSignedFeed(Buffer.concat([envelope, Buffer.from([0])])), "trailing bytes");
  });
});

describe("the envelope", () => {
  const key = generateKeyPairSync("ed25519").privateKey;
  let cert: Buffer;
  beforeAll(async () => {
    cert = await caCert(key);
  });
  const hex = (s: string) => Buffer.from(s.replace(/\s/g, ""), "hex");

  it.each([
    ["a bad magic", "53544654 01", 'feed: envelope does not start with "STFS"'],
    ["an unknown version", "53544653 02", "feed: unsupported envelope version 2"],
    ["an empty signature", "53544653 01 00 00", "feed: signature length 0 is outside 1..1024"],
    ["an oversized signature", "53544653 01 00 8110", "feed: signature length 2049 is outside 1..1024"],
    ["an empty chain", "53544653 01 00 01 aa 00", "feed: chain length 0 is outside 1..8"],
    ["a huge chain", "53544653 01 00 01 aa ffffff7f", "chain length 268435455 at byte 8 cannot fit"],
    [
      "a chain entry that is not DER",
      "53544653 01 00 01 aa 01 03 020100",
      "certificate 0 is not one DER SEQUENCE",
    ],
    [
      "a chain entry with extra bytes",
      "53544653 01 00 01 aa 01 03 300000",
      "certificate 0 is not one DER SEQUENCE",
    ],
    ["a body longer than the envelope", "53544653 01 7f 00", "truncated: body needs 127 bytes"],
  ])("refuses %s", (_name, bytes, message) => {
    expectMalformed(() => parseSignedFeed(hex(bytes)), message);
  });

  it("is signed only over feed bodies, by a CA certificate with cRLSign, with its own key", async () => {
    expect(() => signFeed(Buffer.from("30820102", "hex"), key, [cert])).toThrow(
      "feed: only feed bodies are signed",
    );
    expect(() => signFeed(body, generateKeyPairSync("ed25519").privateKey, [cert])).toThrow(
      "the feed signing key is not the signer certificate's private key",
    );
    expect(() => signFeed(body, key, [])).toThrow("a feed needs 1 to 8 chain certificates");
    const keys = await webcrypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
    const make = async (extensions: x509.Extension[]) =>
      Buffer.from(
        (
          await x509.X509CertificateGenerator.createSelfSigned({
            name: "CN=not a feed signer",
            notBefore: NOW,
            notAfter: new Date(NOW.getTime() + 86_400_000),
            keys: keys as webcrypto.CryptoKeyPair,
            signingAlgorithm: { name: "Ed25519" },
            extensions,
          })
        ).rawData,
      );
    const leaf = await make([new x509.BasicConstraintsExtension(false, undefined, true)]);
    expect(feedSignerProblem(leaf)).toBe("the feed signer is not a CA certificate");
    const noCrlSign = await make([
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    ]);
    expect(feedSignerProblem(noCrlSign)).toBe("the feed signer's keyUsage lacks cRLSign");
    expect(feedSignerProblem(Buffer.from("3000", "hex"))).toBe("the feed signer is not a DER certificate");
    expect(feedSignerProblem(cert)).toBeUndefined();
    const crlSignOnly = await make([
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.cRLSign, true),
    ]);
    expect(feedSignerProblem(crlSignOnly)).toBeUndefined();
  });

  it("matches the known-answer envelope (Ed25519 signatures are deterministic)", () => {
    const v = vectors.envelope;
    const vectorKey = createPrivateKey({ key: hex(v.testOnlyPrivateKeyPkcs8), format: "der", type: "pkcs8" });
    const signer = hex(v.signerCertificate);
    const signed = parseSignedFeed(hex(v.envelope));
    expect(signed.body.toString("hex")).toBe(vectors.snapshot.body);
    expect(signed.chain).toEqual([signer]);
    expect(verifyFeedSignature(signed)).toBe(true);
    expect(signFeed(hex(vectors.snapshot.body), vectorKey, [signer]).toString("hex")).toBe(v.envelope);
  });
});

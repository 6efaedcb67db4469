import { type KeyObject, X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { CrlSigner, crlNumberKey, decodeStoredCrl, rootCrlKey } from "../../ca/crl";
import { initHierarchy } from "../../ca/hierarchy";
import { type CaKey, fileKey } from "../../ca/key-backend";
import { generateKeyPair, loadPrivateKey } from "../../ca/keys";
import {
  checkRootCertificate,
  createOfflineRoot,
  crossSignRoot,
  signRequestedCrl,
} from "../../ca/offline-ceremony";
import { importRootCrl, prepareOfflineRoot, rootCrlRequest } from "../../ca/offline-rotation";
import { decodeCrlRequest, encodeCrlRequest, type RootCrlRequest } from "../../ca/root-crl-request";
import { BUNDLE_SEQUENCE, ISSUERS_GENERATION, type RotationContext } from "../../ca/rotation";
import type { Store } from "../../ca/store";
import { openStore } from "../../ca/store/open";
import { crlSignedBy, readCrl } from "../../formats/crl";
import { pemDecodeAll } from "../../formats/pem";
import { openssl, tempDir } from "../helpers/openssl";

/**
 * The CA host's side of an offline root rotation on a real SQLite store, for
 * what the end-to-end test does not reach: a CRL carrying a root's name but
 * not its signature, one that is no longer current, the request format's
 * strictness, and what a good import records.
 */

const TD = "example.org";
const DAY = 86_400_000;
const top = tempDir("stint-offline-rotation-");
let store: Store;
let ctx: (now?: Date) => RotationContext;
let newRoot: { id: string; certDer: Buffer; keyFile: string };

afterAll(async () => {
  await store?.close();
  rmSync(top, { recursive: true, force: true });
});

beforeAll(async () => {
  const dataDir = join(top, "ca");
  mkdirSync(dataDir, { mode: 0o700 });
  store = await openStore(dataDir, { create: true });
  await initHierarchy({
    dataDir,
    store,
    trustDomain: TD,
    keyAlgorithm: "ec-p256",
    passphrase: null,
    now: new Date(),
  });
  rmSync(join(dataDir, "keys", "root.key.pem")); // the first root is offline from here on
  ctx = (now = new Date()) => ({
    dataDir,
    store,
    trustDomain: TD,
    passphrase: null,
    keyAlgorithm: "ec-p256",
    actor: "test",
    now,
  });
  const made = await createOfflineRoot({
    outDir: join(top, "offline"),
    trustDomain: TD,
    keyAlgorithm: "ec-p256",
    ttlDays: 30,
    passphrase: null,
    crlBaseUrl: null,
    now: new Date(),
  });
  newRoot = { id: made.id, certDer: made.certDer, keyFile: made.keyFile! };
});

const rootKey = async () => (await loadPrivateKey(newRoot.keyFile, null)).key;
const meta = (key: string) => store.getMeta(key);

describe("prepareOfflineRoot", () => {
  it("records the certificate only, prepared, and bumps the bundle", async () => {
    const bundle = Number(await meta(BUNDLE_SEQUENCE));
    const record = await prepareOfflineRoot(ctx(), newRoot.certDer);
    expect(record).toMatchObject({ id: newRoot.id, kind: "root", state: "prepared", keyPath: null });
    expect((await store.listIssuers()).find((i) => i.id === newRoot.id)).toMatchObject({ keyPath: null });
    expect(Number(await meta(BUNDLE_SEQUENCE))).toBe(bundle + 1);
    // Nothing could sign its CRL here.
    expect(await meta(rootCrlKey(newRoot.id))).toBeNull();
    await expect(prepareOfflineRoot(ctx(), newRoot.certDer)).rejects.toThrow(/is already prepared/);
  });
});

describe("checkRootCertificate", () => {
  it("refuses a self-signed CA certificate that is not named as Stint names roots", () => {
    const dir = join(top, "foreign");
    openssl(
      ["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"].concat(
        [
          "-keyout",
          `${dir}.key`,
          "-out",
          `${dir}.pem`,
          "-subj",
          "/CN=Foreign Root/O=example.org",
          "-days",
          "2",
        ],
        ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
      ),
    );
    const der = pemDecodeAll(readFileSync(`${dir}.pem`, "utf8"), "CERTIFICATE", "foreign")[0]!;
    expect(() => checkRootCertificate(der, new Date(), "the root")).toThrow(
      /^the root is not a Stint root \(expected CN=Stint Root CA [0-9a-f]{16}, O=<trust domain>\)/,
    );
    expect(() => checkRootCertificate(newRoot.certDer, new Date(Date.now() + 31 * DAY), "the root")).toThrow(
      /^the root is valid only from /,
    );
    expect(() => checkRootCertificate(Buffer.from("garbage"), new Date(), "the root")).toThrow(
      "the root is not a readable X.509 certificate",
    );
  });
});

describe("the CRL request format", () => {
  const request = (): RootCrlRequest => ({
    trustDomain: TD,
    root: newRoot.id,
    rootFingerprint: `sha256:${"ab".repeat(32)}`,
    number: 3,
    revoked: [{ issuer: "0011223344556677", serial: "7f01", revokedAt: new Date("2026-01-02T03:04:05Z") }],
    createdAt: new Date("2026-01-02T03:04:06Z"),
  });

  it("round-trips, and refuses anything else with one reason", () => {
    expect(decodeCrlRequest(encodeCrlRequest(request()))).toEqual(request());
    const text = (over: Record<string, unknown>) =>
      JSON.stringify({ ...JSON.parse(encodeCrlRequest(request())), ...over });
    const cases: [string, RegExp][] = [
      ["{", /it is not JSON/],
      ["[]", /it is not a JSON object/],
      [text({ format: "something/2" }), /format is not "stint-root-crl-request\/1"/],
      [text({ number: 0 }), /number is not a positive integer/],
      [text({ number: "3" }), /number is not a positive integer/],
      [text({ root: "ROOT" }), /root is not an issuer id/],
      [
        text({ revoked: [{ issuer: "0011223344556677", serial: "zz", revokedAt: "2026-01-02T03:04:05Z" }] }),
        /revoked\[0\]\.serial is not hex/,
      ],
      [
        text({ revoked: [{ issuer: "0011223344556677", serial: "7f", revokedAt: "yesterday" }] }),
        /revoked\[0\]\.revokedAt is not an ISO 8601 time/,
      ],
    ];
    for (const [input, message] of cases) {
      expect(() => decodeCrlRequest(input)).toThrow(message);
      expect(() => decodeCrlRequest(input)).toThrow(/^not a CRL request from stint ca root crl-request: /);
    }
  });
});

describe("importRootCrl", () => {
  it("refuses a CRL with the root's name but another key's signature, storing nothing", async () => {
    const other = await generateKeyPair("ec-p256");
    const now = new Date();
    const der = new CrlSigner({ certDer: newRoot.certDer, privateKey: other.privateKey }).sign({
      number: 5,
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + DAY),
      revoked: [],
    });
    await expect(importRootCrl(ctx(), der)).rejects.toThrow(
      `the CRL is refused: it names root ${newRoot.id} as issuer but that root's key did not sign it`,
    );
    expect(await meta(rootCrlKey(newRoot.id))).toBeNull();
  });

  it("refuses a CRL past its nextUpdate, then imports a current one and records it", async () => {
    const request = await rootCrlRequest(ctx(), newRoot.id);
    expect(request).toMatchObject({ root: newRoot.id, number: 1, revoked: [] });
    const crl = await signRequestedCrl({
      rootCertDer: newRoot.certDer,
      rootKey: await rootKey(),
      request,
      now: new Date(),
      nextUpdate: new Date(Date.now() + DAY),
    });
    await expect(importRootCrl(ctx(new Date(Date.now() + 2 * DAY)), crl.der)).rejects.toThrow(
      /the CRL is refused: it is not current \(thisUpdate .*, nextUpdate .*\)/,
    );
    expect(await meta(rootCrlKey(newRoot.id))).toBeNull();

    const generation = Number(await meta(ISSUERS_GENERATION));
    const imported = await importRootCrl(ctx(), crl.der);
    expect(imported).toMatchObject({ number: 1, revoked: 0 });
    expect(decodeStoredCrl((await meta(rootCrlKey(newRoot.id)))!)).toMatchObject({ der: crl.der, number: 1 });
    expect(await meta(crlNumberKey(newRoot.id))).toBe("1");
    expect(Number(await meta(ISSUERS_GENERATION))).toBe(generation + 1);
    const audit = await store.listAudit(0, 1000);
    expect(audit.at(-1)).toMatchObject({ action: "issuer.crl", subject: newRoot.id, details: { number: 1 } });
    // The next request asks for the next number.
    expect((await rootCrlRequest(ctx(), newRoot.id)).number).toBe(2);
  });

  it("signRequestedCrl signs only for the root the request names, within the root's life", async () => {
    const request = await rootCrlRequest(ctx(), newRoot.id);
    const key = await rootKey();
    const sign = (r: RootCrlRequest, nextUpdate?: Date) =>
      signRequestedCrl({
        rootCertDer: newRoot.certDer,
        rootKey: key,
        request: r,
        now: new Date(),
        nextUpdate,
      });
    await expect(sign({ ...request, rootFingerprint: `sha256:${"00".repeat(32)}` })).rejects.toThrow(
      new RegExp(
        `the request names root ${newRoot.id} with fingerprint sha256:0{64}, not --root-cert's sha256:`,
      ),
    );
    await expect(sign({ ...request, root: "0011223344556677" })).rejects.toThrow(
      `the request is for root 0011223344556677 but --root-cert is root ${newRoot.id}`,
    );
    await expect(sign({ ...request, trustDomain: "other.org" })).rejects.toThrow(
      /the request is for trust domain "other\.org"/,
    );
    await expect(sign(request, new Date(Date.now() + 60 * DAY))).rejects.toThrow(
      /no later than the root's expiry/,
    );
  });
});

describe("the offline host with a key that never leaves its token", () => {
  /** The root's key behind the CaKey contract as a token shows it: no private key, signatures answered later. */
  const tokenLike = (key: KeyObject): CaKey => {
    const file = fileKey(key);
    return {
      ...file,
      backend: "pkcs11",
      ref: "pkcs11:object=root",
      privateKey: null,
      sign: async (h, d) => file.sign(h, d),
    };
  };

  it("signs CRLs and cross-certificates through CaKey.sign", async () => {
    const key = tokenLike(await rootKey());
    const request = await rootCrlRequest(ctx(), newRoot.id);
    const crl = await signRequestedCrl({
      rootCertDer: newRoot.certDer,
      rootKey: key,
      request,
      now: new Date(),
    });
    expect(crlSignedBy(readCrl(crl.der), key.publicKey)).toBe(true);
    const next = await createOfflineRoot({
      outDir: join(top, "offline-2"),
      trustDomain: TD,
      keyAlgorithm: "ec-p384",
      ttlDays: 10,
      passphrase: null,
      crlBaseUrl: null,
      now: new Date(),
    });
    const cross = await crossSignRoot({
      oldCertDer: newRoot.certDer,
      oldKey: key,
      newCertDer: next.certDer,
      now: new Date(),
    });
    expect(cross).toMatchObject({ oldId: newRoot.id, newId: next.id });
    expect(new X509Certificate(cross.der).verify(key.publicKey)).toBe(true);
  });
});

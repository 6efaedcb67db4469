import "reflect-metadata";
import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import { Authority } from "../../ca/authority";
import { CrlPublisher, CrlSigner, type CrlStore, crlUrl } from "../../ca/crl";
import { INTERMEDIATE_CERT_FILE, initHierarchy, ROOT_CERT_FILE } from "../../ca/hierarchy";
import { type KeyAlgorithm, loadPrivateKey } from "../../ca/keys";
import type { IssuancePolicy } from "../../ca/policy";
import { KEY_ALGORITHMS } from "../../ca/spki";
import type { RevokedCertificate, Store } from "../../ca/store";
import { openStore } from "../../ca/store/open";
// For its side effect: @peculiar/x509 verifies with Node's webcrypto.
import "../../ca/x509";
import { publicOrigin } from "../../cli/context";
import * as der from "../../formats/der";
import { toPem } from "../../formats/pem";
import { openssl, tempDir } from "../helpers/openssl";

const BASE = "https://ca.example.org:8443";
const HOUR = 3_600_000;

const policy: IssuancePolicy = {
  trustDomain: "example.org",
  defaultTtlMs: HOUR,
  minTtlMs: 60_000,
  maxTtlMs: 24 * HOUR,
  backdateMs: 30_000,
  dnsSuffixes: [],
  keyTypes: KEY_ALGORITHMS,
};

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Ca {
  dataDir: string;
  store: Store;
  authority: Authority;
  intermediateId: string;
  /** root + intermediate PEM, as `openssl crl -CAfile` takes them. */
  chainPath: string;
  rootPath: string;
  intermediatePath: string;
}

async function freshCa(keyAlgorithm: KeyAlgorithm = "ec-p256"): Promise<Ca> {
  const dataDir = tempDir("stint-crl-");
  dirs.push(dataDir);
  const store = await openStore(dataDir, { create: true });
  const { intermediate } = await initHierarchy({
    dataDir,
    store,
    trustDomain: "example.org",
    keyAlgorithm,
    passphrase: null,
    now: new Date(),
  });
  const authority = await Authority.open({ dataDir, store, policy, passphrase: null, crlBaseUrl: BASE });
  const rootPath = join(dataDir, ROOT_CERT_FILE);
  const intermediatePath = join(dataDir, INTERMEDIATE_CERT_FILE);
  const chainPath = join(dataDir, "chain.pem");
  writeFileSync(chainPath, readFileSync(rootPath, "utf8") + readFileSync(intermediatePath, "utf8"));
  return {
    dataDir,
    store,
    authority,
    intermediateId: intermediate.id,
    chainPath,
    rootPath,
    intermediatePath,
  };
}

function spki(): Buffer {
  return generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ format: "der", type: "spki" });
}

const issue = (ca: Ca, name: string) =>
  ca.authority.issue(
    { spiffeId: `spiffe://example.org/${name}`, spki: spki(), keyAlgorithm: "ec-p256", keyDescription: "EC" },
    "test",
  );

/** `openssl crl` on a DER CRL, with stdout and stderr (verification results go to stderr). */
function opensslCrl(crlDer: Buffer, dir: string, args: string[]): { code: number; out: string } {
  const path = join(dir, "crl.der");
  writeFileSync(path, crlDer);
  const r = spawnSync("openssl", ["crl", "-inform", "DER", "-in", path, ...args], { encoding: "utf8" });
  return { code: r.status ?? -1, out: r.stdout + r.stderr };
}

/** The cRLNumber extension's INTEGER. */
function crlNumberOf(crl: x509.X509Crl): number {
  const ext = crl.extensions.find((e) => e.type === "2.5.29.20");
  const value = Buffer.from(ext!.value);
  const t = der.expectTlv(value, 0, der.Tag.INTEGER, "cRLNumber");
  return Number.parseInt(der.contents(value, t).toString("hex"), 16);
}

describe("CRLs of a real hierarchy (ec-p256)", () => {
  let ca: Ca;
  beforeAll(async () => {
    ca = await freshCa();
  });
  afterAll(async () => {
    ca.authority.stopCrls();
    await ca.store.close();
  });

  it("puts the issuer's CRL URL in every leaf as its distribution point", async () => {
    const leaf = await issue(ca, "cdp");
    const cert = new x509.X509Certificate(leaf.der);
    const cdp = cert.getExtension(x509.CRLDistributionPointsExtension);
    const url = `${BASE}/crl/${ca.intermediateId}.crl`;
    expect(crlUrl(BASE, ca.intermediateId)).toBe(url);
    expect(cdp?.critical).toBe(false);
    expect(cdp?.distributionPoints).toHaveLength(1);
    expect(cdp?.distributionPoints[0]?.distributionPoint?.fullName?.[0]?.uniformResourceIdentifier).toBe(url);
    const leafPath = join(ca.dataDir, "cdp.pem");
    writeFileSync(leafPath, toPem("CERTIFICATE", leaf.der));
    const text = openssl(["x509", "-in", leafPath, "-noout", "-text"]);
    expect(text).toMatch(new RegExp(`X509v3 CRL Distribution Points:\\s+Full Name:\\s+URI:${url}\\s`));
    // The chain still verifies with the extension in it.
    expect(openssl(["verify", "-CAfile", ca.chainPath, leafPath]).trim()).toBe(`${leafPath}: OK`);
  });

  it("has no CRL until started, then signs number 1 listing nothing", async () => {
    expect(ca.authority.crl(ca.intermediateId)).toBeNull();
    const before = Date.now();
    await ca.authority.startCrls();
    const crl = ca.authority.crl(ca.intermediateId)!;
    expect(crl.number).toBe(1);
    expect(ca.authority.crl("0123456789abcdef")).toBeNull();
    // thisUpdate is backdated like the leaves; nextUpdate is an hour on; both whole seconds.
    expect(crl.thisUpdate.getTime() % 1000).toBe(0);
    expect(crl.thisUpdate.getTime()).toBeLessThanOrEqual(before - 30_000);
    expect(crl.thisUpdate.getTime()).toBeGreaterThan(before - 32_000);
    expect(crl.nextUpdate.getTime() - crl.thisUpdate.getTime()).toBe(HOUR + 30_000);

    const parsed = new x509.X509Crl(crl.der);
    expect(parsed.entries).toHaveLength(0);
    expect(crlNumberOf(parsed)).toBe(1);
    const { out } = opensslCrl(crl.der, ca.dataDir, ["-noout", "-text"]);
    expect(out).toContain("Version 2 (0x1)");
    expect(out).toContain("No Revoked Certificates.");
  });

  it("re-signs on every revocation with the next number, reason codes and the issuer's exact name", async () => {
    const a = await issue(ca, "a");
    const b = await issue(ca, "b");
    const c = await issue(ca, "c");
    await issue(ca, "untouched");
    const start = ca.authority.crl(ca.intermediateId)!.number;
    await ca.authority.revoke(a.serial, 1, "test");
    expect(ca.authority.crl(ca.intermediateId)!.number).toBe(start + 1);
    await ca.authority.revoke(b.serial, 0, "test");
    await ca.authority.revoke(c.serial, 4, "test");
    const crl = ca.authority.crl(ca.intermediateId)!;
    expect(crl.number).toBe(start + 3);

    const parsed = new x509.X509Crl(crl.der);
    expect(parsed.version).toBe(1); // v2
    const intermediate = new x509.X509Certificate(readFileSync(ca.intermediatePath, "utf8"));
    expect(Buffer.from(parsed.issuerName.toArrayBuffer())).toEqual(
      Buffer.from(intermediate.subjectName.toArrayBuffer()),
    );
    expect(parsed.thisUpdate.getTime()).toBe(crl.thisUpdate.getTime());
    expect(parsed.nextUpdate?.getTime()).toBe(crl.nextUpdate.getTime());
    expect(crlNumberOf(parsed)).toBe(crl.number);
    const aki = parsed.getExtension(x509.AuthorityKeyIdentifierExtension);
    expect(aki?.keyId).toBe(intermediate.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId);
    expect(
      parsed.entries.map((e) => ({
        serial: e.serialNumber.toLowerCase(),
        reason: e.reason,
        exts: e.extensions.length,
      })),
    ).toEqual([
      { serial: a.serial, reason: x509.X509CrlReason.keyCompromise, exts: 1 },
      // unspecified: no reasonCode extension at all (RFC 5280 5.3.1)
      { serial: b.serial, reason: undefined, exts: 0 },
      { serial: c.serial, reason: x509.X509CrlReason.superseded, exts: 1 },
    ]);
    const stored = await ca.store.getCertificate(a.serial);
    expect(parsed.entries[0]!.revocationDate.getTime()).toBe(
      Math.floor(stored!.revokedAt!.getTime() / 1000) * 1000,
    );
    await expect(parsed.verify({ publicKey: intermediate })).resolves.toBe(true);

    const text = opensslCrl(crl.der, ca.dataDir, ["-noout", "-text"]).out;
    expect(text).toContain(`X509v3 CRL Number: \n                ${crl.number}`);
    expect(text).toContain("X509v3 Authority Key Identifier:");
    expect(text).toContain(`Serial Number: ${a.serial.toUpperCase()}`);
    expect(text).toContain("Key Compromise");
    expect(text).toContain("Superseded");
    expect(text.match(/X509v3 CRL Reason Code/g)).toHaveLength(2);

    const verified = opensslCrl(crl.der, ca.dataDir, ["-noout", "-CAfile", ca.chainPath]);
    expect(verified).toEqual({ code: 0, out: "verify OK\n" });
    // Signed by the intermediate, not the root: the root alone does not verify it.
    expect(opensslCrl(crl.der, ca.dataDir, ["-noout", "-CAfile", ca.rootPath]).code).not.toBe(0);
  });

  it("keeps numbering across a restart and never reuses a number", async () => {
    const last = ca.authority.crl(ca.intermediateId)!.number;
    ca.authority.stopCrls();
    await ca.store.close();
    ca.store = await openStore(ca.dataDir);
    ca.authority = await Authority.open({
      dataDir: ca.dataDir,
      store: ca.store,
      policy,
      passphrase: null,
      crlBaseUrl: BASE,
    });
    await ca.authority.startCrls();
    expect(ca.authority.crl(ca.intermediateId)!.number).toBe(last + 1);
    expect(await ca.store.getMeta(`crl_number:${ca.intermediateId}`)).toBe(String(last + 1));
    // The revoked set survives too: the three revocations above are still listed.
    expect(new x509.X509Crl(ca.authority.crl(ca.intermediateId)!.der).entries).toHaveLength(3);
  });

  it("a one-shot authority (not started) revokes without signing a CRL or spending a number", async () => {
    const other = await Authority.open({ dataDir: ca.dataDir, store: ca.store, policy, passphrase: null });
    const leaf = await other.issue(
      { spiffeId: "spiffe://example.org/x", spki: spki(), keyAlgorithm: "ec-p256", keyDescription: "EC" },
      "test",
    );
    expect(new x509.X509Certificate(leaf.der).getExtension(x509.CRLDistributionPointsExtension)).toBeNull();
    const number = await ca.store.getMeta(`crl_number:${ca.intermediateId}`);
    await other.revoke(leaf.serial, 1, "cli");
    expect(other.crl(ca.intermediateId)).toBeNull();
    expect(await ca.store.getMeta(`crl_number:${ca.intermediateId}`)).toBe(number);
  });
});

describe.each<KeyAlgorithm>(["ec-p384", "ed25519", "rsa-2048"])("a CRL signed by a %s issuer", (alg) => {
  it("verifies with OpenSSL against the chain and lists the revocation", async () => {
    const ca = await freshCa(alg);
    try {
      await ca.authority.startCrls();
      const leaf = await issue(ca, "w");
      await ca.authority.revoke(leaf.serial, 9, "test");
      const crl = ca.authority.crl(ca.intermediateId)!;
      expect(opensslCrl(crl.der, ca.dataDir, ["-noout", "-CAfile", ca.chainPath])).toEqual({
        code: 0,
        out: "verify OK\n",
      });
      expect(new x509.X509Crl(crl.der).entries[0]?.reason).toBe(x509.X509CrlReason.privilegeWithdrawn);
    } finally {
      ca.authority.stopCrls();
      await ca.store.close();
    }
  });
});

/** A store double: revoked entries and a counter, with the arguments it was asked with. */
function fakeStore(revoked: RevokedCertificate[] = []) {
  let n = 0;
  const asked: Date[] = [];
  let fail = false;
  const store: CrlStore = {
    async listRevoked(_issuerId, unexpiredAt) {
      asked.push(unexpiredAt);
      if (fail) throw new Error("store down");
      return revoked;
    },
    async incrementMeta() {
      return ++n;
    },
  };
  return { store, asked, setFail: (v: boolean) => (fail = v) };
}

describe("CrlPublisher", () => {
  let signer: CrlSigner;
  beforeAll(async () => {
    const ca = await freshCa();
    const issuer = (await ca.store.listIssuers()).find((i) => i.kind === "intermediate")!;
    const { key } = await loadPrivateKey(join(ca.dataDir, issuer.keyPath!), null);
    signer = new CrlSigner({ certDer: issuer.certDer, privateKey: key });
    await ca.store.close();
  });

  it("lists certificates until one validity period past their expiry (RFC 5280 5.1.2.6)", async () => {
    const t = new Date("2030-01-01T00:00:10.500Z");
    const fake = fakeStore();
    const p = new CrlPublisher({ store: fake.store, validityMs: HOUR, backdateMs: 30_000, now: () => t });
    p.add("aa", signer);
    const crl = await p.refresh("aa");
    expect(fake.asked).toEqual([new Date(t.getTime() - HOUR)]);
    expect(crl.thisUpdate).toEqual(new Date("2029-12-31T23:59:40Z"));
    expect(crl.nextUpdate).toEqual(new Date("2030-01-01T01:00:10Z"));
  });

  it("serialises refreshes: callers share one not yet started, numbers only grow", async () => {
    const fake = fakeStore([{ serial: "01ab", revokedAt: new Date(), reason: 1 }]);
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const list = fake.store.listRevoked;
    const store: CrlStore = { ...fake.store, listRevoked: (id, at) => gate.then(() => list(id, at)) };
    const p = new CrlPublisher({ store, validityMs: HOUR, backdateMs: 0 });
    p.add("aa", signer);
    const first = p.refresh("aa");
    const joined = p.refresh("aa"); // the first has not started reading yet: it will see this caller's revocation
    expect(joined).toBe(first);
    await Promise.resolve(); // now the first is reading the store
    const [second, third] = [p.refresh("aa"), p.refresh("aa")];
    expect(third).toBe(second);
    release();
    expect((await Promise.all([first, second, third])).map((c) => c.number)).toEqual([1, 2, 2]);
    expect(p.current("aa")?.number).toBe(2);
    await expect(p.refresh("bb")).rejects.toThrow("no CRL is kept for issuer bb");
  });

  it("keeps serving the previous CRL when a refresh fails, and retries on a timer", async () => {
    jest.useFakeTimers();
    try {
      const fake = fakeStore();
      const errors: unknown[] = [];
      const log = { error: (_m: string, f: unknown) => errors.push(f), debug: () => undefined };
      const p = new CrlPublisher({ store: fake.store, validityMs: 10 * 60_000, backdateMs: 0 });
      p.add("aa", signer);
      await p.start(log as never);
      expect(p.current("aa")?.number).toBe(1);
      fake.setFail(true);
      await expect(p.refresh("aa")).rejects.toThrow("store down");
      expect(p.current("aa")?.number).toBe(1);
      expect(errors).toHaveLength(1);
      fake.setFail(false);
      // Retried a minute later (sooner than the half-life of five minutes).
      await jest.advanceTimersByTimeAsync(60_000);
      expect(p.current("aa")?.number).toBe(2);
      // Then at half-life.
      await jest.advanceTimersByTimeAsync(5 * 60_000 - 1);
      expect(p.current("aa")?.number).toBe(2);
      await jest.advanceTimersByTimeAsync(1);
      expect(p.current("aa")?.number).toBe(3);
      p.stop();
      await jest.advanceTimersByTimeAsync(60 * 60_000);
      expect(p.current("aa")?.number).toBe(3);
    } finally {
      jest.useRealTimers();
    }
  });
});

it("derives the CRL base URL (the CA's public origin) from publicUrl, else from listen", () => {
  const cfg = (listen: string, publicUrl = "", serverNames = ["ca.example.org", "127.0.0.1"]) =>
    publicOrigin({ listen, publicUrl, serverNames });
  expect(cfg("0.0.0.0:8443", "https://ca.example.com")).toBe("https://ca.example.com");
  expect(cfg("127.0.0.1:8443")).toBe("https://127.0.0.1:8443");
  expect(cfg("[::1]:8443")).toBe("https://[::1]:8443");
  // A wildcard address is no place to send a client: the first server name stands in.
  expect(cfg("0.0.0.0:8443")).toBe("https://ca.example.org:8443");
  expect(cfg("[::]:9000", "", ["fd00::1"])).toBe("https://[fd00::1]:9000");
  // Port 0 is known only once bound: no URL, so leaves get no distribution point.
  expect(cfg("127.0.0.1:0")).toBeNull();
});

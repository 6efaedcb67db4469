import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Authority } from "../../ca/authority";
import { decodeStoredCrl, rootCrlKey } from "../../ca/crl";
import { INTERMEDIATE_CERT_FILE, initHierarchy, ROOT_KEY_FILE } from "../../ca/hierarchy";
import { IssuerWatch } from "../../ca/issuer-watch";
import { ensureJwtKeys, readJwtKeys } from "../../ca/jwt-keys";
import { KEY_ALGORITHMS } from "../../ca/keys";
import type { IssuancePolicy } from "../../ca/policy";
import {
  activateRoot,
  BUNDLE_SEQUENCE,
  ISSUERS_GENERATION,
  prepareRoot,
  type RotationContext,
  retireRoot,
  revokeIssuer,
  rotateIntermediate,
  taintIssuer,
} from "../../ca/rotation";
import type { Store } from "../../ca/store";
import { openStore } from "../../ca/store/open";
import { describeCertificate } from "../../ca/x509";
import { createLogger } from "../../common/logger";
import { pemDecodeAll, toPem } from "../../formats/pem";
import { openssl, tempDir } from "../helpers/openssl";

/**
 * The rotation steps on a real SQLite store and real keys: what each records,
 * what it refuses (and then leaves alone), and what an Authority opened
 * before the step serves after reload().
 */

const TD = "example.org";
const HOUR = 3_600_000;
const policy: IssuancePolicy = {
  trustDomain: TD,
  defaultTtlMs: HOUR,
  minTtlMs: 60_000,
  maxTtlMs: 24 * HOUR,
  backdateMs: 30_000,
  dnsSuffixes: [],
  keyTypes: KEY_ALGORITHMS,
};

const dirs: string[] = [];
const stores: Store[] = [];
afterAll(async () => {
  for (const s of stores) await s.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function freshCa(): Promise<{
  ctx: () => RotationContext;
  store: Store;
  authority: Authority;
  dataDir: string;
}> {
  const dataDir = tempDir("stint-rotation-");
  dirs.push(dataDir);
  const store = await openStore(dataDir, { create: true });
  stores.push(store);
  await initHierarchy({
    dataDir,
    store,
    trustDomain: TD,
    keyAlgorithm: "ec-p256",
    passphrase: null,
    now: new Date(),
  });
  await store.setMeta("bundle_sequence", "1");
  const authority = await Authority.open({ dataDir, store, policy, passphrase: null });
  const ctx = (): RotationContext => ({
    dataDir,
    store,
    trustDomain: TD,
    passphrase: null,
    keyAlgorithm: "ec-p256",
    actor: "test",
    now: new Date(),
  });
  return { ctx, store, authority, dataDir };
}

function issue(authority: Authority, name: string) {
  const { publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return authority.issue(
    {
      spiffeId: `spiffe://${TD}/svc/${name}`,
      spki: publicKey.export({ type: "spki", format: "der" }),
      keyAlgorithm: "ec-p256",
      keyDescription: "EC P-256 key",
    },
    "test",
  );
}

async function auditActions(store: Store): Promise<string[]> {
  return (await store.listAudit(0, 1000)).map((r) => r.action);
}

describe("intermediate rotation, taint and revocation", () => {
  it("advances the JWT-SVID keys with the intermediate: the key published beforehand signs, the old one is retired", async () => {
    const { ctx, store, dataDir } = await freshCa();
    const [active, prepared] = await ensureJwtKeys({ store, dataDir, passphrase: null, now: new Date() });
    await rotateIntermediate(ctx(), { ttlDays: 30 });
    const ring = await readJwtKeys(store);
    expect(ring.map((k) => [k.kid, k.state])).toEqual([
      [active!.kid, "retired"],
      [prepared!.kid, "active"],
      [ring[2]!.kid, "prepared"],
    ]);
    expect(ring[0]!.retiredAt).not.toBeNull();
    expect(readFileSync(join(dataDir, ring[2]!.keyPath), "utf8")).toMatch(/^-----BEGIN PRIVATE KEY-----/);
  });

  it("activates a new intermediate, and an authority opened before serves it after reload()", async () => {
    const { ctx, store, authority, dataDir } = await freshCa();
    const first = authority.activeIssuer;
    const before = await issue(authority, "a");
    expect(await authority.reload()).toBe(false);

    const { activated, retired } = await rotateIntermediate(ctx(), { ttlDays: 30 });
    expect(retired?.id).toBe(first.id);
    expect((await store.getIssuer(first.id))?.state).toBe("retired");
    expect(readFileSync(join(dataDir, INTERMEDIATE_CERT_FILE), "utf8")).toBe(
      toPem("CERTIFICATE", activated.certDer),
    );
    expect(await store.getMeta(ISSUERS_GENERATION)).toBe("1");
    expect((await auditActions(store)).slice(-2)).toEqual(["issuer.create", "issuer.retire"]);

    let changed = 0;
    authority.onIssuersChanged(() => changed++);
    expect(await authority.reload()).toBe(true);
    expect(changed).toBe(1);
    expect(authority.activeIssuer.id).toBe(activated.id);
    const after = await issue(authority, "a");
    expect(after.issuerId).toBe(activated.id);
    expect(pemDecodeAll(after.chainPem, "CERTIFICATE", "chain")).toHaveLength(2);
    // Sequences are per issuer: the new one starts its own.
    expect(after.sequence).toBeLessThan(before.sequence + 1000);
    // A 30-day intermediate under the 10-year root.
    expect(activated.notAfter.getTime() - Date.now()).toBeLessThan(31 * 24 * HOUR);
  });

  it("says where to sign when the root key is kept offline, and changes nothing", async () => {
    const { ctx, store, dataDir } = await freshCa();
    renameSync(join(dataDir, ROOT_KEY_FILE), join(dataDir, "root-key-elsewhere.pem"));
    const before = await store.listIssuers();
    await expect(rotateIntermediate(ctx(), { ttlDays: 30 })).rejects.toMatchObject({
      code: "ERR_KEY_OFFLINE",
      message: expect.stringContaining(
        "stint ca intermediate-csr, stint root sign, stint ca import-intermediate",
      ),
    });
    expect(await store.listIssuers()).toEqual(before);
    expect(await store.getMeta(ISSUERS_GENERATION)).toBeNull();
  });

  it("refuses to taint the active intermediate or a root, then pulls ARI forward for a tainted one", async () => {
    const { ctx, store, authority } = await freshCa();
    const first = authority.activeIssuer;
    const cert = await issue(authority, "a");
    const root = authority.trustedRoots()[0]!;
    await expect(taintIssuer(ctx(), first.id, null)).rejects.toMatchObject({
      code: "ERR_ROTATION_STATE",
      message: expect.stringContaining("run `stint ca rotate` first"),
    });
    await expect(taintIssuer(ctx(), root.id, null)).rejects.toThrow(/is a root/);
    await expect(taintIssuer(ctx(), "0123456789abcdef", null)).rejects.toMatchObject({
      code: "ERR_NOT_FOUND",
    });
    expect((await store.getIssuer(first.id))?.state).toBe("active");

    await rotateIntermediate(ctx(), { ttlDays: 30 });
    const record = (await store.getCertificate(cert.serial))!;
    await authority.reload();
    expect(authority.renewFrom(record)).toBeNull();
    const taintedAt = new Date();
    await taintIssuer({ ...ctx(), now: taintedAt }, first.id, new Date(taintedAt.getTime() + HOUR));
    await expect(taintIssuer(ctx(), first.id, null)).rejects.toThrow(/already tainted/);
    await authority.reload();
    expect(authority.renewFrom(record)).toEqual(taintedAt);
    expect(authority.taintsDue(new Date(taintedAt.getTime() + HOUR - 1))).toEqual([]);
    expect(authority.taintsDue(new Date(taintedAt.getTime() + HOUR))).toEqual([first.id]);
  });

  it("revokes a tainted intermediate only once its certificates are replaced (or forced), in the root's CRL", async () => {
    const { ctx, store, authority, dataDir } = await freshCa();
    const first = authority.activeIssuer;
    await issue(authority, "a");
    await issue(authority, "b");
    await expect(revokeIssuer(ctx(), first.id, { force: false })).rejects.toThrow(
      /is active; rotate away from it/,
    );

    await rotateIntermediate(ctx(), { ttlDays: 30 });
    await taintIssuer(ctx(), first.id, null);
    await authority.reload();
    await issue(authority, "a"); // "a" moved, "b" did not
    const generation = await store.getMeta(ISSUERS_GENERATION);
    await expect(revokeIssuer(ctx(), first.id, { force: false })).rejects.toMatchObject({
      code: "ERR_ROTATION_STATE",
      message: expect.stringContaining("1 of 2 live certificates"),
    });
    expect(await store.getMeta(ISSUERS_GENERATION)).toBe(generation);

    await issue(authority, "b");
    const result = await revokeIssuer(ctx(), first.id, { force: false });
    expect(result).toMatchObject({ progress: { live: 2, unreplaced: 0 }, rootCrlSigned: true });
    await expect(revokeIssuer(ctx(), first.id, { force: true })).rejects.toMatchObject({
      code: "ERR_ALREADY_REVOKED",
    });
    await authority.reload();
    expect(authority.revokedIssuers()).toEqual([first.id]);
    expect((await auditActions(store)).at(-1)).toBe("issuer.revoke");

    // OpenSSL reads the root's new CRL and finds the intermediate's serial in it.
    const crl = decodeStoredCrl((await store.getMeta(rootCrlKey(first.parentId!)))!);
    const crlPath = join(dataDir, "root.crl");
    writeFileSync(crlPath, crl.der);
    const text = openssl(["crl", "-inform", "DER", "-in", crlPath, "-noout", "-text"]);
    expect(text.replace(/\s/g, "").toLowerCase()).toContain(
      `serialnumber:${describeCertificate(first.certDer).serialHex}`,
    );
    expect(text).toContain("CA Compromise");
  });
});

describe("root rotation", () => {
  it("prepares, activates with a cross-certificate both bundles accept, and retires", async () => {
    const { ctx, store, authority, dataDir } = await freshCa();
    const oldRoot = authority.trustedRoots()[0]!;
    const oldIntermediate = authority.activeIssuer;
    await expect(
      activateRoot(ctx(), { intermediateTtlDays: 30, bundleRefreshMs: 0, force: false }),
    ).rejects.toThrow(/no prepared root/);

    const next = await prepareRoot(ctx(), { ttlDays: 3650 });
    expect(next.state).toBe("prepared");
    await expect(prepareRoot(ctx(), { ttlDays: 3650 })).rejects.toThrow(/already prepared/);
    expect(await store.getMeta(BUNDLE_SEQUENCE)).toBe("2");
    await authority.reload();
    expect(authority.trustedRoots().map((r) => r.id)).toEqual([oldRoot.id, next.id]);
    // The prepared root signs nothing yet: new certificates still come from the old intermediate.
    expect((await issue(authority, "a")).issuerId).toBe(oldIntermediate.id);
    await issue(authority, "b");

    await expect(
      activateRoot(ctx(), { intermediateTtlDays: 30, bundleRefreshMs: HOUR, force: false }),
    ).rejects.toThrow(/activate after .* \(or pass --force\)/);
    const activated = await activateRoot(ctx(), {
      intermediateTtlDays: 30,
      bundleRefreshMs: HOUR,
      force: true,
    });
    expect(activated.crossSignedBy).toBe(oldRoot.id);
    await authority.reload();
    const leaf = await issue(authority, "a");
    expect(leaf.issuerId).toBe(activated.intermediate.id);
    const chain = pemDecodeAll(leaf.chainPem, "CERTIFICATE", "chain");
    expect(chain).toHaveLength(3);
    const cross = new X509Certificate(chain[2]!);
    expect(cross.subject).toBe(new X509Certificate(next.certDer).subject);
    expect(cross.issuer).toBe(new X509Certificate(oldRoot.certDer).subject);

    // OpenSSL accepts the served chain with either root alone as the trust anchor.
    const chainPath = join(dataDir, "chain.pem");
    writeFileSync(chainPath, leaf.chainPem);
    for (const root of [oldRoot, next]) {
      const rootPath = join(dataDir, `anchor-${root.id}.pem`);
      writeFileSync(rootPath, toPem("CERTIFICATE", root.certDer));
      expect(openssl(["verify", "-CAfile", rootPath, "-untrusted", chainPath, chainPath])).toMatch(/: OK$/m);
    }

    await expect(retireRoot(ctx(), { id: next.id, force: false })).rejects.toThrow(
      /signs the active intermediate/,
    );
    // "a" moved to the new root; "b" (and the admin certificate ca init made) did not.
    await expect(retireRoot(ctx(), { force: false })).rejects.toThrow(/have not been replaced/);
    const retired = await retireRoot(ctx(), { force: true });
    expect(retired.id).toBe(oldRoot.id);
    // prepare, the JWT-SVID keys advancing with root activation's new intermediate, retire.
    expect(await store.getMeta(BUNDLE_SEQUENCE)).toBe("4");
    await authority.reload();
    expect(authority.trustedRoots().map((r) => r.id)).toEqual([next.id]);
    // Chains lose the cross-certificate once its root is out of the bundle.
    expect(pemDecodeAll((await issue(authority, "a")).chainPem, "CERTIFICATE", "chain")).toHaveLength(2);
    await expect(retireRoot(ctx(), { id: oldRoot.id, force: false })).rejects.toThrow(/already retired/);
  });
});

describe("the server's issuer watch", () => {
  it("revokes a tainted issuer at its deadline once, and every replica takes it up", async () => {
    const { ctx, store, authority, dataDir } = await freshCa();
    const first = authority.activeIssuer;
    await rotateIntermediate(ctx(), { ttlDays: 30 });
    // A second replica: its own authority on the same store.
    const replica = await Authority.open({ dataDir, store, policy, passphrase: null });
    const lines: string[] = [];
    const log = createLogger({ component: "test", stream: { write: (l: string) => lines.push(l) } });
    const changes: string[] = [];
    const watches = [authority, replica].map(
      (a, n) =>
        new IssuerWatch({
          authority: a,
          store,
          log,
          pollMs: 1000,
          rotation: ctx,
          onChange: async () => {
            changes.push(`replica ${n}`);
          },
        }),
    );
    const taintedAt = new Date();
    await taintIssuer({ ...ctx(), now: taintedAt }, first.id, new Date(taintedAt.getTime() + 1000));
    const beforeDeadline = new Date(taintedAt.getTime() + 999);
    for (const w of watches) await w.tick(beforeDeadline);
    expect(authority.revokedIssuers()).toEqual([]);
    expect(changes).toEqual(["replica 0", "replica 1"]);

    const afterDeadline = new Date(taintedAt.getTime() + 1000);
    for (const w of watches) await w.tick(afterDeadline);
    expect(authority.revokedIssuers()).toEqual([first.id]);
    expect(replica.revokedIssuers()).toEqual([first.id]);
    expect(lines.filter((l) => l.includes("revoked a tainted issuer at its deadline"))).toHaveLength(1);
    expect((await store.listAudit(0, 1000)).filter((r) => r.action === "issuer.revoke")).toHaveLength(1);
  });
});

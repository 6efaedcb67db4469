import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Authority } from "../../ca/authority";
import { initHierarchy } from "../../ca/hierarchy";
import { parseRevocationReason } from "../../ca/revocation";
import { KEY_ALGORITHMS } from "../../ca/spki";
import { openStore } from "../../ca/store/open";

it("accepts leaf revocation reasons by name or code and names the accepted ones otherwise", () => {
  expect(parseRevocationReason(undefined)).toBe(0);
  expect(parseRevocationReason("keyCompromise")).toBe(1);
  expect(parseRevocationReason(4)).toBe(4);
  for (const bad of [2, 6, 8, 10, "certificateHold", "KeyCompromise", -1, null]) {
    expect(() => parseRevocationReason(bad)).toThrow(
      expect.objectContaining({
        code: "ERR_BAD_REVOCATION_REASON",
        message: expect.stringContaining("keyCompromise (1)"),
      }),
    );
  }
});

it("revokes once, audits it, and refuses a second revocation or an unknown serial", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "stint-revoke-"));
  const store = await openStore(dataDir, { create: true });
  try {
    await initHierarchy({
      dataDir,
      store,
      trustDomain: "example.org",
      keyAlgorithm: "ec-p256",
      passphrase: null,
      now: new Date(),
    });
    const policy = {
      trustDomain: "example.org",
      defaultTtlMs: 3_600_000,
      minTtlMs: 60_000,
      maxTtlMs: 86_400_000,
      backdateMs: 0,
      dnsSuffixes: [],
      keyTypes: KEY_ALGORITHMS,
    };
    const authority = await Authority.open({ dataDir, store, policy, passphrase: null });
    const spki = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
      format: "der",
      type: "spki",
    });
    const cert = await authority.issue(
      { spiffeId: "spiffe://example.org/a", spki, keyAlgorithm: "ec-p256", keyDescription: "EC key" },
      "test",
    );
    await authority.revoke(cert.serial, 1, "test");
    expect(await store.getCertificate(cert.serial)).toMatchObject({
      revocationReason: 1,
      revokedAt: expect.any(Date),
    });
    await expect(authority.revoke(cert.serial, 1, "test")).rejects.toMatchObject({
      code: "ERR_ALREADY_REVOKED",
      message: `certificate ${cert.serial} is already revoked`,
    });
    await expect(authority.revoke("01ff", 0, "test")).rejects.toMatchObject({ code: "ERR_NOT_FOUND" });
    const audit = await store.listAudit(0, 100);
    expect(audit.at(-1)).toMatchObject({
      action: "cert.revoke",
      subject: cert.serial,
      details: { reason: "keyCompromise" },
    });
  } finally {
    await store.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

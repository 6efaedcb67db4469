import "reflect-metadata";
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type CrlIssuer, CrlKeeper, checkCrl, crlIssuers } from "../../agent/crls";
import { Authority } from "../../ca/authority";
import { CrlSigner } from "../../ca/crl";
import { initHierarchy } from "../../ca/hierarchy";
import { loadPrivateKey } from "../../ca/keys";
import type { IssuancePolicy } from "../../ca/policy";
import { KEY_ALGORITHMS } from "../../ca/spki";
import type { IssuerRecord, Store } from "../../ca/store";
import { openStore } from "../../ca/store/open";
import { StintError } from "../../common/errors";
import type { Logger } from "../../common/logger";
import { readCrl } from "../../formats/crl";
import { parsePemBlocks, toPem } from "../../formats/pem";
import { tempDir } from "../helpers/openssl";
import { makeChain } from "./fixtures/pki";

/**
 * Which CRLs the agent keeps and when it fetches them, against a real CA
 * (hierarchy, Authority, its CRLs) without sockets: the fetch is the
 * Authority's own CRL lookup, as /crl/<id>.crl serves it.
 */

const HOUR = 3_600_000;
/** A fetch cap longer than the intermediate CRL's validity, so only that CRL comes due within a test. */
const LONG = 10 * 24 * HOUR;
const policy: IssuancePolicy = {
  trustDomain: "example.org",
  defaultTtlMs: HOUR,
  minTtlMs: 60_000,
  maxTtlMs: 24 * HOUR,
  backdateMs: 30_000,
  dnsSuffixes: [],
  keyTypes: KEY_ALGORITHMS,
};

const dir = tempDir("stint-agent-crls-");
const dataDir = tempDir("stint-agent-crls-ca-");
const subdir = (name: string) => {
  mkdirSync(join(dir, name));
  return join(dir, name);
};
let store: Store;
let authority: Authority;
let root: IssuerRecord;
let intermediate: IssuerRecord;
let leafDer: Buffer;

beforeAll(async () => {
  store = await openStore(dataDir, { create: true });
  ({ root, intermediate } = await initHierarchy({
    dataDir,
    store,
    trustDomain: "example.org",
    keyAlgorithm: "ec-p256",
    passphrase: null,
    now: new Date(),
  }));
  authority = await Authority.open({ dataDir, store, policy, passphrase: null, crlBaseUrl: null });
  await authority.startCrls();
  leafDer = (await issue("web")).der;
});
afterAll(async () => {
  authority.stopCrls();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  rmSync(dataDir, { recursive: true, force: true });
});

const issue = (name: string) =>
  authority.issue(
    {
      spiffeId: `spiffe://example.org/${name}`,
      spki: generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({
        format: "der",
        type: "spki",
      }),
      keyAlgorithm: "ec-p256",
      keyDescription: "EC",
    },
    "test",
  );

interface Logged {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
}

function recordingLog(): { log: Logger; lines: Logged[] } {
  const lines: Logged[] = [];
  const at =
    (level: string) =>
    (msg: string, fields: Record<string, unknown> = {}) =>
      lines.push({ level, msg, fields });
  const log = {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
  } as unknown as Logger;
  return { log, lines };
}

/** A keeper whose fetch is the CA's CRL lookup, unless a test swaps in another answer; it counts fetches. */
function keeper(maxIntervalMs = 5 * 60_000) {
  const fetched: string[] = [];
  let answer = (id: string): Buffer => {
    const crl = authority.crl(id);
    if (!crl) throw new StintError("ERR_NOT_FOUND", `GET /crl/${id}.crl answered HTTP 404`);
    return crl.der;
  };
  const { log, lines } = recordingLog();
  const k = new CrlKeeper({
    fetch: async (id) => {
      fetched.push(id);
      return answer(id);
    },
    maxIntervalMs: () => maxIntervalMs,
    log,
    random: () => 0.5,
  });
  return {
    k,
    fetched,
    lines,
    answerWith: (f: (id: string) => Buffer) => {
      answer = f;
    },
  };
}

const issuers = () => crlIssuers([[leafDer, intermediate.certDer]], [root.certDer]);
const numbersIn = (pem: string | null) =>
  parsePemBlocks(pem ?? "").map((b) => {
    const crl = readCrl(b.der);
    return { issuerKeyId: crl.authorityKeyId!.subarray(0, 8).toString("hex"), number: crl.number };
  });

describe("crlIssuers", () => {
  it("wants the leaf's intermediate and the root, named as the CA names them", () => {
    const wanted = issuers();
    expect([...wanted.keys()].sort()).toEqual([intermediate.id, root.id].sort());
    expect(wanted.get(intermediate.id)!.cert.der).toEqual(intermediate.certDer);
    expect(wanted.get(root.id)!.cert.der).toEqual(root.certDer);
  });

  it("also wants every CA certificate of another chain (the feed signer's), and nothing twice", () => {
    const other = makeChain(subdir("other"), "ec-p256");
    const otherInt = parsePemBlocks(other.intermediatePem)[0].der;
    const wanted = crlIssuers(
      [[leafDer, intermediate.certDer], [otherInt], [intermediate.certDer]],
      [root.certDer],
    );
    expect(wanted.size).toBe(3);
    const otherIssuer = [...wanted.values()].find((i) => i.cert.der.equals(otherInt));
    expect(otherIssuer?.id).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe("checkCrl", () => {
  const now = () => new Date();
  const intIssuer = (): CrlIssuer => issuers().get(intermediate.id)!;

  it("accepts the intermediate's CRL from the CA", () => {
    expect(checkCrl(authority.crl(intermediate.id)!.der, intIssuer(), now()).number).toBeGreaterThan(0n);
    expect(checkCrl(authority.crl(root.id)!.der, issuers().get(root.id)!, now()).number).toBeGreaterThan(0n);
  });

  it("refuses a CRL checked against another issuer, a forged one, an expired one, and one from a CA without cRLSign", async () => {
    const crl = authority.crl(intermediate.id)!;
    expect(() => checkCrl(crl.der, issuers().get(root.id)!, now())).toThrow(/names another issuer$/);
    // The intermediate's name and key identifier, signed with some other key: what a man in the middle could make.
    const forged = new CrlSigner({
      certDer: intermediate.certDer,
      privateKey: generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey,
    }).sign({ number: 99, thisUpdate: now(), nextUpdate: new Date(Date.now() + HOUR), revoked: [] });
    expect(() => checkCrl(forged, intIssuer(), now())).toThrow(
      new StintError(
        "ERR_UNAUTHORIZED",
        `the CRL for issuer ${intermediate.id} has a signature that does not verify with the issuer's key`,
      ),
    );
    const after = new Date(crl.nextUpdate.getTime() + 1000);
    expect(() => checkCrl(crl.der, intIssuer(), after)).toThrow(
      `the CRL for issuer ${intermediate.id} expired at ${crl.nextUpdate.toISOString()} (its nextUpdate)`,
    );
    // OpenSSL's test intermediate has keyUsage keyCertSign only.
    const other = makeChain(subdir("nocrlsign"), "ec-p256");
    const otherInt = parsePemBlocks(other.intermediatePem)[0].der;
    const { key } = await loadPrivateKey(join(dir, "nocrlsign", "ec-p256-int.key"), null);
    const byIt = new CrlSigner({ certDer: otherInt, privateKey: key }).sign({
      number: 1,
      thisUpdate: now(),
      nextUpdate: new Date(Date.now() + HOUR),
      revoked: [],
    });
    const otherIssuer = [...crlIssuers([[otherInt]], []).values()][0];
    expect(() => checkCrl(byIt, otherIssuer, now())).toThrow(/without the cRLSign key usage$/);
    expect(() => checkCrl(Buffer.from("not a crl"), intIssuer(), now())).toThrow(
      expect.objectContaining({ code: "ERR_DER" }),
    );
  });
});

describe("CrlKeeper", () => {
  it("fetches every wanted CRL once, writes them in id order, and waits half their remaining validity", async () => {
    const { k, fetched } = keeper(LONG);
    const now = new Date();
    expect(k.pem()).toBeNull();
    expect(await k.refresh(issuers(), now)).toBe(true);
    expect(fetched.sort()).toEqual([intermediate.id, root.id].sort());
    const ids = numbersIn(k.pem()).map((c) => c.issuerKeyId);
    expect(ids).toEqual([intermediate.id, root.id].sort());
    // random 0.5: exactly half of the intermediate CRL's remaining hour; the root's lasts years, so the cap decides for it.
    const crl = authority.crl(intermediate.id)!;
    const half = now.getTime() + Math.floor((crl.nextUpdate.getTime() - now.getTime()) / 2);
    expect(k.nextDue()).toEqual(new Date(half));
    expect(k.earliestNextUpdate()).toEqual(crl.nextUpdate);

    // Not due yet: nothing is fetched.
    fetched.length = 0;
    expect(await k.refresh(issuers(), new Date(half - 1))).toBe(false);
    expect(fetched).toEqual([]);
  });

  it("takes a newer CRL when due (a revocation shows), and ignores an older one", async () => {
    const { k, fetched, answerWith } = keeper(LONG);
    const now = new Date();
    await k.refresh(issuers(), now);
    const first = authority.crl(intermediate.id)!;
    const revoked = await issue("revoked");
    await authority.revoke(revoked.serial, 1, "test");
    const second = authority.crl(intermediate.id)!;
    expect(second.number).toBeGreaterThan(first.number);

    fetched.length = 0;
    const due = k.nextDue()!;
    expect(await k.refresh(issuers(), due)).toBe(true);
    expect(fetched).toEqual([intermediate.id]);
    const held = parsePemBlocks(k.pem()!).map((b) => readCrl(b.der));
    expect(held.find((c) => c.number === BigInt(second.number))?.revoked).toContain(
      revoked.serial.toLowerCase(),
    );

    // A cache serving the first CRL again does not roll the file back.
    answerWith((id) => (id === intermediate.id ? first.der : authority.crl(id)!.der));
    const pem = k.pem();
    expect(await k.refresh(issuers(), k.nextDue()!)).toBe(false);
    expect(k.pem()).toBe(pem);
  });

  it("keeps the last good CRL when a fetch fails or is forged, and retries within 30 s", async () => {
    const { k, lines, answerWith } = keeper(LONG);
    const now = new Date();
    await k.refresh(issuers(), now);
    const pem = k.pem();
    const due = k.nextDue()!;
    answerWith(() => {
      throw new StintError("ERR_CONNECTION", "cannot reach the CA at https://ca:8443 (ECONNREFUSED)");
    });
    expect(await k.refresh(issuers(), due)).toBe(false);
    expect(k.pem()).toBe(pem);
    expect(k.nextDue()!.getTime() - due.getTime()).toBe(30_000);
    expect(lines.filter((l) => l.level === "warn").map((l) => l.fields.issuer)).toEqual([intermediate.id]);

    const forged = new CrlSigner({
      certDer: intermediate.certDer,
      privateKey: generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey,
    }).sign({ number: 1000, thisUpdate: now, nextUpdate: new Date(now.getTime() + 2 * HOUR), revoked: [] });
    answerWith((id) => (id === intermediate.id ? forged : authority.crl(id)!.der));
    expect(await k.refresh(issuers(), k.nextDue()!)).toBe(false);
    expect(k.pem()).toBe(pem);
    expect(lines.at(-1)?.fields.error).toMatch(/signature that does not verify/);
  });

  it("never writes a CRL it could not check, even when it holds none", async () => {
    const { k, answerWith } = keeper();
    answerWith(() => Buffer.from("30030201", "hex"));
    expect(await k.refresh(issuers(), new Date())).toBe(false);
    expect(k.pem()).toBeNull();
  });

  it("asks rarely and quietly for an issuer the CA keeps no CRL for", async () => {
    const { k, lines, answerWith } = keeper(5 * 60_000);
    answerWith((id) => {
      if (id === root.id) throw new StintError("ERR_NOT_FOUND", "404");
      return authority.crl(id)!.der;
    });
    const now = new Date();
    await k.refresh(issuers(), now);
    expect(numbersIn(k.pem()).map((c) => c.issuerKeyId)).toEqual([intermediate.id]);
    expect(lines.filter((l) => l.level === "warn")).toEqual([]);
    expect(lines.filter((l) => l.level === "debug").map((l) => l.fields.issuer)).toEqual([root.id]);
  });

  it("forgets an issuer no longer wanted, and takes up a crls.pem written before a restart", async () => {
    const { k } = keeper();
    const now = new Date();
    await k.refresh(issuers(), now);
    const pem = k.pem()!;
    const onlyRoot = new Map([[root.id, issuers().get(root.id)!]]);
    expect(await k.refresh(onlyRoot, now)).toBe(true);
    expect(numbersIn(k.pem()).map((c) => c.issuerKeyId)).toEqual([root.id]);

    const restarted = keeper();
    restarted.answerWith(() => {
      throw new StintError("ERR_CONNECTION", "the CA is down");
    });
    // Garbage and expired CRLs in the old file are left out; the rest is kept while the CA is down.
    restarted.k.adopt(toPem("X509 CRL", Buffer.from("not a CRL")) + pem, issuers(), now);
    expect(await restarted.k.refresh(issuers(), now)).toBe(false);
    expect(restarted.k.pem()).toBe(pem);
    const late = keeper();
    late.k.adopt(pem, issuers(), new Date(authority.crl(intermediate.id)!.nextUpdate.getTime() + 1));
    expect(numbersIn(late.k.pem()).map((c) => c.issuerKeyId)).toEqual([root.id]);
  });
});

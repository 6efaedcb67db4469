import { createPrivateKey, generateKeyPairSync, type KeyObject, X509Certificate } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import {
  AcmeClient,
  type AcmeProblem,
  joinTokenEvidence,
  k8sSatEvidence,
  x509popEvidence,
} from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { b64u, signJws } from "../../formats/jose";
import { pemDecodeAll } from "../../formats/pem";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { httpsCall } from "../helpers/https";
import { bootstrapPki, tempDir } from "../helpers/openssl";

/**
 * Issue 20 against a real `stint ca serve`: every certificate is bound to the
 * registration entry and the attestation that justified it, at finalize and
 * at every renewal, and the audit log links each serial to who attested what.
 * Each test of the first part fails on a CA that renews under "any entry for
 * the SPIFFE ID" or issues after the attested entry is gone.
 */

const TD = "bind.example";
const id = (path: string) => `spiffe://${TD}/${path}`;
const ACME = "urn:ietf:params:acme:error:";
const dir = tempDir("stint-binding-e2e-");
const dataDir = join(dir, "ca");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let server: ServerProcess;
let rootPem: string;
/** Everything secret the tests hand the CA: none of it may appear in a log line or an audit record. */
const secrets: string[] = [];

const SAT_ISSUER = "https://k8s.bind.example";
const satKey = generateKeyPairSync("ec", { namedCurve: "P-256" });
const newKey = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;

/** A service-account token for prod/api (pod api-0); its whole text and its signature are secrets. */
function serviceAccountToken(sa = "api"): string {
  const now = Math.floor(Date.now() / 1000);
  const body = {
    iss: SAT_ISSUER,
    aud: ["stint"],
    sub: `system:serviceaccount:prod:${sa}`,
    iat: now,
    nbf: now - 5,
    exp: now + 600,
    jti: `jti-${sa}-${now}`,
    "kubernetes.io": {
      namespace: "prod",
      serviceaccount: { name: sa, uid: "u1" },
      pod: { name: `${sa}-0`, uid: "u2" },
    },
  };
  const input = `${b64u(JSON.stringify({ alg: "ES256", typ: "JWT" }))}.${b64u(JSON.stringify(body))}`;
  const signature = signJws("ES256", satKey.privateKey, input);
  secrets.push(`${input}.${signature}`, signature);
  return `${input}.${signature}`;
}

/** The x509pop bootstrap PKI made by OpenSSL: its CA for the CA's bundle, the node's chain and key. */
const bootstrap = (() => {
  const made = bootstrapPki(dir, "bootstrap", "node-7");
  const keyPem = readFileSync(made.keyPath, "utf8");
  secrets.push(keyPem.split("\n")[1]!);
  return {
    caPath: made.caPath,
    chain: pemDecodeAll(readFileSync(made.leafPath, "utf8"), "CERTIFICATE", "leaf"),
    key: createPrivateKey(keyPem),
  };
})();

function x509pop(token: string, c: AcmeClient) {
  const evidence = x509popEvidence({
    chainDer: bootstrap.chain,
    key: bootstrap.key,
    token,
    accountThumbprint: c.thumbprint,
  });
  secrets.push(evidence.signature);
  return evidence;
}

// ---------- helpers ----------

async function account(): Promise<AcmeClient> {
  const c = await AcmeClient.connect({
    directoryUrl: `${server.url}/acme/directory`,
    ca: rootPem,
    accountKey: newKey(),
  });
  await c.newAccount();
  return c;
}

function admin(args: string[]): string {
  const r = stint([...args, "--data-dir", dataDir, "--server", server.url]);
  if (r.code !== 0) throw new Error(`stint ${args.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

/** Creates an entry and returns its id. */
function createEntry(spiffeId: string, selectors: string[], extra: string[] = []): string {
  const out = admin([
    "entry",
    "create",
    "--spiffe-id",
    spiffeId,
    ...selectors.flatMap((s) => ["--selector", s]),
    ...extra,
    "--json",
  ]);
  return (JSON.parse(out) as { id: string }).id;
}

function deleteEntry(entryId: string, extra: string[] = []): { revoked?: string[] } {
  return JSON.parse(admin(["entry", "delete", entryId, "--json", ...extra]));
}

function joinToken(spiffeId: string): { token: string; id: string; entryId: string } {
  const made = JSON.parse(admin(["token", "create", "--spiffe-id", spiffeId, "--json"]));
  secrets.push(made.token);
  return made;
}

/** Changes an entry in place, behind the CA's back, as a direct edit (or a later update API) would. */
function editEntry(entryId: string, column: "dns_names" | "selectors", value: string[]): void {
  const db = new Database(join(dataDir, "stint.db"));
  try {
    db.prepare(`UPDATE entries SET ${column} = ? WHERE id = ?`).run(JSON.stringify(value), entryId);
  } finally {
    db.close();
  }
}

interface Held {
  key: KeyObject;
  chain: Buffer[];
  cert: X509Certificate;
  serial: string;
}

function held(key: KeyObject, pem: string): Held {
  const chain = pemDecodeAll(pem, "CERTIFICATE", "chain");
  const cert = new X509Certificate(chain[0]!);
  const hex = cert.serialNumber.toLowerCase();
  return { key, chain, cert, serial: hex.length % 2 ? `0${hex}` : hex };
}

const lifetimeMs = (h: Held) => Date.parse(h.cert.validTo) - Date.parse(h.cert.validFrom);

/** order → attest-01 → (`between`) → finalize → download, by a fresh account. */
async function enroll(
  spiffeId: string,
  attestor: string,
  evidence: (token: string, c: AcmeClient) => unknown,
  opts: { dnsNames?: string[]; between?: () => void } = {},
): Promise<Held> {
  const c = await account();
  const key = newKey();
  const dnsNames = opts.dnsNames ?? [];
  const { pem } = await c.obtainCertificate({
    identifiers: [
      { type: "spiffe", value: spiffeId },
      ...dnsNames.map((value) => ({ type: "dns" as const, value })),
    ],
    csrDer: buildCsr({ key, spiffeId, dnsNames }),
    authorize: async (_authz, challenge) => {
      const answered = await c.attest(challenge.url, attestor, evidence(challenge.token, c));
      opts.between?.();
      return answered;
    },
  });
  return held(key, pem);
}

async function renew(h: Held, spiffeId: string, dnsNames: string[] = []): Promise<Held> {
  const c = await account();
  const key = newKey();
  return held(key, await c.renewWithCertificate(h.chain, h.key, buildCsr({ key, spiffeId, dnsNames })));
}

async function refusal(p: Promise<unknown>): Promise<AcmeProblem> {
  return p.then(
    () => {
      throw new Error("expected the CA to refuse");
    },
    (err: unknown) => err as AcmeProblem,
  );
}

const k8s = () => k8sSatEvidence(serviceAccountToken());

beforeAll(async () => {
  const satKeyPath = join(dir, "sa.pub");
  writeFileSync(satKeyPath, satKey.publicKey.export({ type: "spki", format: "pem" }));
  server = await startServer([
    "--insecure-no-passphrase",
    "--data-dir",
    dataDir,
    "--trust-domain",
    TD,
    "--policy-min-ttl",
    "1s",
    "--policy-dns-suffixes",
    "bind.test",
    "--attest-k8s-sat-issuer",
    SAT_ISSUER,
    "--attest-k8s-sat-audiences",
    "stint",
    "--attest-k8s-sat-public-key-files",
    satKeyPath,
    "--attest-x509pop-bundle-file",
    bootstrap.caPath,
  ]);
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
}, 60_000);

afterAll(async () => {
  await server?.stop();
});

describe("a certificate renews only under its own entry", () => {
  it("refuses renewal once its entry is deleted, though another entry names the same SPIFFE ID", async () => {
    const spiffeId = id("deleted");
    createEntry(spiffeId, ["k8s:ns:prod", "k8s:sa:other"], ["--ttl", "2h"]);
    const own = createEntry(spiffeId, ["k8s:ns:prod", "k8s:sa:api"], ["--ttl", "5m"]);
    const first = await enroll(spiffeId, "k8s_sat", k8s);
    await renew(first, spiffeId); // renews while the entry exists
    deleteEntry(own);
    const err = await refusal(renew(first, spiffeId));
    expect(err).toMatchObject({
      type: `${ACME}unauthorized`,
      detail: `registration entry ${own} for ${spiffeId} was deleted; attest again to be authorized by an entry that exists; certificate ${first.serial} cannot be renewed`,
    });
  });

  it("renews with the TTL of the entry it attested under, not another entry's for the same ID", async () => {
    const spiffeId = id("ttl");
    // Older, so first in store order, and longer: what a renewal took before.
    createEntry(spiffeId, ["k8s:ns:prod", "k8s:sa:other"], ["--ttl", "2h"]);
    createEntry(spiffeId, ["k8s:ns:prod", "k8s:sa:api"], ["--ttl", "5m"]);
    const first = await enroll(spiffeId, "k8s_sat", k8s);
    const second = await renew(first, spiffeId);
    const third = await renew(second, spiffeId);
    for (const h of [first, second, third]) {
      expect(lifetimeMs(h)).toBeGreaterThan(5 * 60_000);
      expect(lifetimeMs(h)).toBeLessThan(6 * 60_000); // 5 m plus the 30 s backdate
    }
  });

  it("makes the holders of a changed entry attest again", async () => {
    const spiffeId = id("changed");
    const own = createEntry(spiffeId, ["k8s:ns:prod", "k8s:sa:api"], ["--ttl", "5m"]);
    const first = await enroll(spiffeId, "k8s_sat", k8s);

    // Replaced by an entry with other selectors (delete and create: entries are changed that way).
    deleteEntry(own);
    const replacement = createEntry(
      spiffeId,
      ["k8s:ns:prod", "k8s:sa:api", "k8s:pod:api-0"],
      ["--ttl", "5m"],
    );
    expect(await refusal(renew(first, spiffeId))).toMatchObject({
      type: `${ACME}unauthorized`,
      detail: expect.stringContaining(`registration entry ${own} for ${spiffeId} was deleted`),
    });

    // Its selectors changed in place: the same id is another entry now.
    const second = await enroll(spiffeId, "k8s_sat", k8s);
    editEntry(replacement, "selectors", ["k8s:ns:prod", "k8s:sa:api"]);
    expect(await refusal(renew(second, spiffeId))).toMatchObject({
      type: `${ACME}unauthorized`,
      detail: expect.stringContaining(
        `registration entry ${replacement} for ${spiffeId} changed its selectors since the attestation; attest again`,
      ),
    });

    // Attesting again is what it takes.
    const again = await enroll(spiffeId, "k8s_sat", k8s);
    expect(lifetimeMs(await renew(again, spiffeId))).toBeLessThan(6 * 60_000);
  });

  it("revokes the entry's live certificates when deleted with --revoke", async () => {
    const spiffeId = id("revoke");
    const own = createEntry(spiffeId, ["k8s:ns:prod", "k8s:sa:api"]);
    const a = await enroll(spiffeId, "k8s_sat", k8s);
    const b = await renew(a, spiffeId);
    const other = await enroll(id("ttl"), "k8s_sat", k8s);
    const out = deleteEntry(own, ["--revoke"]);
    expect(out.revoked?.sort()).toEqual([a.serial, b.serial].sort());
    const certs = JSON.parse(admin(["cert", "list", "--spiffe-id", spiffeId, "--json"])) as {
      serial: string;
      revokedAt: string | null;
    }[];
    expect(certs).toHaveLength(2);
    expect(certs.every((c) => c.revokedAt !== null)).toBe(true);
    expect(await refusal(renew(b, spiffeId))).toMatchObject({ detail: expect.stringContaining("revoked") });
    // Another entry's certificate is untouched.
    await renew(other, id("ttl"));
  });

  it("leaves the entry when a revocation fails, so deleting it with --revoke again finishes the job", async () => {
    const spiffeId = id("retry");
    const own = createEntry(spiffeId, ["k8s:ns:prod", "k8s:sa:api"]);
    const held = [await enroll(spiffeId, "k8s_sat", k8s), await enroll(spiffeId, "k8s_sat", k8s)];
    const serials = held.map((h) => h.serial).sort();
    // The store refuses to revoke the second one, as a full disk would.
    const db = new Database(join(dataDir, "stint.db"));
    try {
      db.exec(`CREATE TRIGGER refuse_revoke BEFORE UPDATE OF revoked_at ON certificates
               WHEN NEW.serial = '${serials[1]}' BEGIN SELECT RAISE(ABORT, 'disk full'); END`);
      const failed = stint([
        "entry",
        "delete",
        own,
        "--revoke",
        "--data-dir",
        dataDir,
        "--server",
        server.url,
      ]);
      expect(failed.code).not.toBe(0);
      const entries = JSON.parse(admin(["entry", "list", "--spiffe-id", spiffeId, "--json"])) as {
        id: string;
      }[];
      expect(entries.map((e) => e.id)).toEqual([own]);
    } finally {
      db.exec("DROP TRIGGER IF EXISTS refuse_revoke");
      db.close();
    }
    const out = deleteEntry(own, ["--revoke"]);
    expect(out.revoked).toEqual([serials[1]]);
    const certs = JSON.parse(admin(["cert", "list", "--spiffe-id", spiffeId, "--json"])) as {
      serial: string;
      revokedAt: string | null;
    }[];
    expect(certs.map((c) => [c.serial, typeof c.revokedAt]).sort()).toEqual(
      serials.map((serial) => [serial, "string"]),
    );
  });

  it("refuses to renew over ACME what a node agent obtained: its holder proved itself to the agent, not to us", async () => {
    const node = id("node/n1");
    const out = join(dir, "n1");
    expect(
      stint(["ca", "issue", "--spiffe-id", node, "--out", out, "--ttl", "1h", "--data-dir", dataDir]),
    ).toMatchObject({
      code: 0,
    });
    const spiffeId = id("agent-made");
    createEntry(spiffeId, ["unix:uid:1001"], ["--parent", node]);
    const entryId = JSON.parse(admin(["entry", "list", "--spiffe-id", spiffeId, "--json"]))[0].id as string;
    const key = newKey();
    const answer = (
      await httpsCall(new URL("/agent/v1/x509-svids", server.url), {
        method: "POST",
        ca: rootPem,
        client: { cert: readFileSync(join(out, "cert.pem")), key: readFileSync(join(out, "key.pem")) },
        json: { requests: [{ entryId, csr: buildCsr({ key, spiffeId }).toString("base64url") }] },
      })
    ).text;
    const workload = held(key, JSON.parse(answer).svids[0].certificateChain);
    expect(await refusal(renew(workload, spiffeId))).toMatchObject({
      type: `${ACME}unauthorized`,
      detail: `certificate ${workload.serial} was obtained by node agent ${node} for a workload on its host; that agent renews it (SPIFFE Workload API or SDS)`,
    });
  });
});

describe("finalize re-checks the attested entry", () => {
  it("refuses when the entry was deleted after attestation", async () => {
    const spiffeId = id("gone");
    const own = createEntry(spiffeId, ["k8s:ns:prod", "k8s:sa:api"], ["--ttl", "5m"]);
    createEntry(spiffeId, ["k8s:ns:prod", "k8s:sa:other"], ["--ttl", "2h"]);
    const err = await refusal(enroll(spiffeId, "k8s_sat", k8s, { between: () => deleteEntry(own) }));
    expect(err).toMatchObject({
      type: `${ACME}unauthorized`,
      detail: `registration entry ${own} for ${spiffeId} was deleted; attest again to be authorized by an entry that exists`,
    });
    expect(JSON.parse(admin(["cert", "list", "--spiffe-id", spiffeId, "--json"]))).toEqual([]);
  });

  it("refuses when the entry no longer lists a DNS name the order holds through it", async () => {
    const spiffeId = id("names");
    const own = createEntry(
      spiffeId,
      ["x509pop:subject:cn:node-7"],
      ["--dns", "a.bind.test", "--dns", "b.bind.test"],
    );
    const both = ["a.bind.test", "b.bind.test"];
    // The names come from the entry, not from challenges of their own.
    expect((await enroll(spiffeId, "x509pop", x509pop, { dnsNames: both })).cert.subjectAltName).toContain(
      "DNS:b.bind.test",
    );
    const c = await account();
    const order = await c.newOrder([
      { type: "spiffe", value: spiffeId },
      ...both.map((value) => ({ type: "dns" as const, value })),
    ]);
    const authzs = await Promise.all(order.authorizations.map((u) => c.getAuthorization(u)));
    const attest01 = authzs.find((a) => a.identifier.type === "spiffe")!.challenges[0]!;
    expect((await c.attest(attest01.url, "x509pop", x509pop(attest01.token, c))).status).toBe("valid");
    expect((await c.getOrder(order.url)).status).toBe("ready");
    editEntry(own, "dns_names", ["a.bind.test"]);
    const err = await refusal(c.finalize(order, buildCsr({ key: newKey(), spiffeId, dnsNames: both })));
    expect(err).toMatchObject({
      type: `${ACME}unauthorized`,
      detail: `registration entry ${own} for ${spiffeId} no longer lists b.bind.test`,
    });
    expect((await c.getOrder(order.url)).status).toBe("invalid");
  });
});

// ---------- what the CA wrote ----------

interface AuditRecord {
  seq: number;
  actor: string;
  action: string;
  subject: string;
  details: Record<string, unknown>;
}

describe("the audit log says who attested what, for every certificate", () => {
  const serials: { serial: string; method: string }[] = [];
  let tokenId: string;
  let wrongTokenId: string;
  let chain: Held[];
  const web = id("audit/web");

  beforeAll(async () => {
    const t = joinToken(web);
    tokenId = t.id;
    const first = await enroll(web, "join_token", () => joinTokenEvidence(t.token));
    const second = await renew(first, web);
    const third = await renew(second, web);
    chain = [first, second, third];
    for (const h of chain) serials.push({ serial: h.serial, method: "join_token" });
    // A token used again: refused, spends nothing more, and its record names the token.
    await refusal(enroll(web, "join_token", () => joinTokenEvidence(t.token)));
    // A token made for another identity: spent, and refused.
    const wrong = joinToken(id("audit/db"));
    wrongTokenId = wrong.id;
    await refusal(enroll(web, "join_token", () => joinTokenEvidence(wrong.token)));

    createEntry(id("audit/api"), ["k8s:ns:prod", "k8s:sa:api"]);
    serials.push({ serial: (await enroll(id("audit/api"), "k8s_sat", k8s)).serial, method: "k8s_sat" });
    createEntry(id("audit/node"), ["x509pop:subject:cn:node-7"]);
    serials.push({ serial: (await enroll(id("audit/node"), "x509pop", x509pop)).serial, method: "x509pop" });
  });

  const auditLog = (): AuditRecord[] => JSON.parse(admin(["audit", "--json", "--limit", "10000"]));

  it("links every issued serial to its attestation's method, selectors, entry and evidence", () => {
    const records = auditLog();
    const evidence: Record<string, RegExp> = {
      join_token: new RegExp(`^join_token:${tokenId}$`),
      k8s_sat: /^k8s_sat:ns=prod,sa=api,pod=api-0,jti=jti-api-\d+$/,
      x509pop: /^x509pop:sha256:[0-9a-f]{64}$/,
    };
    for (const { serial, method } of serials) {
      const issued = records.find((r) => r.subject === serial && /^cert\.(issue|renew)$/.test(r.action));
      expect(issued).toBeDefined();
      const { attestationId, entryId } = issued!.details;
      const attested = records.find(
        (r) => r.action === "attest.ok" && r.details.attestationId === attestationId,
      );
      expect(attested).toMatchObject({
        subject: issued!.details.spiffeId,
        details: { method, entryId, evidence: expect.stringMatching(evidence[method]!) },
      });
      expect(attested!.actor).toMatch(/\/acme\/acct\//);
      expect((attested!.details.selectors as string[]).length).toBeGreaterThan(0);
      expect(attested!.seq).toBeLessThan(issued!.seq);
      expect(issued!.details).toMatchObject({ method, evidence: attested!.details.evidence });
    }
  });

  it("chains each renewal to the certificate it renews, under the first attestation", () => {
    const records = auditLog();
    const [first, second, third] = chain.map((h) => records.find((r) => r.subject === h.serial)!);
    expect(first).toMatchObject({ action: "cert.issue" });
    expect(second).toMatchObject({
      action: "cert.renew",
      actor: `renew:${chain[0]!.serial}`,
      details: { renews: chain[0]!.serial, attestationId: first!.details.attestationId },
    });
    expect(third).toMatchObject({
      action: "cert.renew",
      details: { renews: chain[1]!.serial, attestationId: first!.details.attestationId },
    });
  });

  it("records every spent join token, and every refused attestation (a token shown for another ID is not spent)", () => {
    const records = auditLog();
    const spends = records.filter((r) => r.action === "token.spend");
    expect(spends.filter((r) => r.subject === tokenId)).toEqual([
      expect.objectContaining({ details: { spiffeId: web, outcome: "accepted" } }),
    ]);
    expect(spends.filter((r) => r.subject === wrongTokenId)).toEqual([]);
    const refused = records.filter((r) => r.action === "attest.refused" && r.subject === web);
    expect(refused.map((r) => r.details.evidence)).toEqual([
      `join_token:${tokenId}`,
      `join_token:${wrongTokenId}`,
    ]);
    expect(refused[0]!.details.reason).toMatch(/already been used/);
  });

  it("shows one identity's whole chain with stint audit --spiffe-id", () => {
    const mine: AuditRecord[] = JSON.parse(admin(["audit", "--json", "--spiffe-id", web]));
    expect(mine.map((r) => r.action)).toEqual([
      "entry.create",
      "join_token.create",
      "token.spend",
      "attest.ok",
      "cert.issue",
      "cert.renew",
      "cert.renew",
      "attest.refused",
      "attest.refused",
    ]);
    const text = admin(["audit", "--spiffe-id", web]);
    expect(text).toContain("attest.ok");
    expect(text).not.toContain(id("audit/api"));
  });

  it("never writes a token, a JWT or a proof to a record or a log line, and logs each outcome", () => {
    const logs = server.logs().join("\n");
    const audit = admin(["audit", "--json", "--limit", "10000"]);
    expect(secrets.length).toBeGreaterThanOrEqual(8);
    for (const secret of secrets) {
      expect(logs).not.toContain(secret);
      expect(audit).not.toContain(secret);
    }
    expect(audit).not.toMatch(/eyJ[\w-]*\.[\w-]*\./);
    const outcomes = server
      .logs()
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => /^attestation (accepted|refused)$/.test(String(l.msg)));
    for (const method of ["join_token", "k8s_sat", "x509pop"]) {
      expect(
        outcomes.filter((l) => l.msg === "attestation accepted" && l.method === method).length,
      ).toBeGreaterThan(0);
    }
    expect(outcomes.filter((l) => l.msg === "attestation refused" && l.spiffeId === web)).toHaveLength(2);
    for (const line of outcomes) {
      expect(line).toMatchObject({
        level: "info",
        accountId: expect.any(String),
        method: expect.stringMatching(/^(join_token|k8s_sat|x509pop)$/),
        spiffeId: expect.stringMatching(/^spiffe:\/\//),
        authorizationId: expect.any(String),
      });
    }
    expect(logs).not.toContain('"authorization":"[redacted]"');
  });
});

import { spawn } from "node:child_process";
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  X509Certificate,
} from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { request } from "node:https";
import type { AddressInfo } from "node:net";
import { join, resolve } from "node:path";
import Database from "better-sqlite3";
import {
  AcmeClient,
  type AcmeProblem,
  joinTokenEvidence,
  k8sSatEvidence,
  x509popEvidence,
} from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { b64u, flattenedJws, signJws } from "../../formats/jose";
import { pemDecodeAll } from "../../formats/pem";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { bootstrapPki, openssl, tempDir } from "../helpers/openssl";

/**
 * The enrollment API against a real `stint ca serve` process: each attestor,
 * renew-with-certificate, ARI, revocation, the unmodified acme-client package
 * over http-01, refusals with the right problem types, and logs without
 * secrets.
 */

const TD = "e2e.example";
const id = (path: string) => `spiffe://${TD}/${path}`;
const ACME = "urn:ietf:params:acme:error:";
const dir = tempDir("stint-acme-e2e-");
const dataDir = join(dir, "ca");
const challengeDir = join(dir, "challenges");
mkdirSync(challengeDir);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let server: ServerProcess;
let rootPem: string;
let responder: Server;
/** Everything secret the tests hand the CA: none of it may appear in its logs. */
const secrets: string[] = [];
/** Serials the tests saw issued and revoked: each must be in the audit log. */
const issued: string[] = [];
const revoked: string[] = [];

// ---------- bootstrap material made by OpenSSL and node:crypto ----------

const SAT_ISSUER = "https://k8s.e2e.example";
const satKey = generateKeyPairSync("ec", { namedCurve: "P-256" });
const otherSatKey = generateKeyPairSync("ec", { namedCurve: "P-256" });

function serviceAccountToken(
  claims: Record<string, unknown> = {},
  key: KeyObject = satKey.privateKey,
): string {
  const now = Math.floor(Date.now() / 1000);
  const body = {
    iss: SAT_ISSUER,
    aud: ["stint"],
    sub: "system:serviceaccount:prod:api",
    iat: now,
    nbf: now - 5,
    exp: now + 600,
    "kubernetes.io": {
      namespace: "prod",
      serviceaccount: { name: "api", uid: "u1" },
      pod: { name: "api-0", uid: "u2" },
    },
    ...claims,
  };
  const input = `${b64u(JSON.stringify({ alg: "ES256", typ: "JWT" }))}.${b64u(JSON.stringify(body))}`;
  const jwt = `${input}.${signJws("ES256", key, input)}`;
  secrets.push(jwt);
  return jwt;
}

/** The bootstrap PKI's files, loaded as an x509pop client holds them. */
function pki(name: string, cn: string): { caPath: string; chain: Buffer[]; key: KeyObject } {
  const made = bootstrapPki(dir, name, cn);
  const keyPem = readFileSync(made.keyPath, "utf8");
  secrets.push(keyPem.split("\n")[1]);
  return {
    caPath: made.caPath,
    chain: pemDecodeAll(readFileSync(made.leafPath, "utf8"), "CERTIFICATE", "leaf"),
    key: createPrivateKey(keyPem),
  };
}

const bootstrap = pki("bootstrap", "node-1");
const foreign = pki("foreign", "node-1");

// ---------- helpers ----------

const newKey = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;

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

function createEntry(spiffeId: string, selectors: string[], extra: string[] = []): void {
  admin([
    "entry",
    "create",
    "--spiffe-id",
    spiffeId,
    ...selectors.flatMap((s) => ["--selector", s]),
    ...extra,
  ]);
}

function joinToken(spiffeId: string, extra: string[] = []): string {
  const { token } = JSON.parse(admin(["token", "create", "--spiffe-id", spiffeId, "--json", ...extra]));
  secrets.push(token);
  return token;
}

interface Held {
  key: KeyObject;
  chain: Buffer[];
  pem: string;
  cert: X509Certificate;
}

function held(key: KeyObject, pem: string): Held {
  const chain = pemDecodeAll(pem, "CERTIFICATE", "chain");
  const cert = new X509Certificate(chain[0]);
  issued.push(cert.serialNumber.toLowerCase());
  return { key, chain, pem, cert };
}

/** order → attest-01 with `evidence(token)` → finalize → download, by a fresh account. */
async function enroll(
  spiffeId: string,
  attestor: string,
  evidence: (token: string, c: AcmeClient) => unknown,
  dnsNames: string[] = [],
): Promise<Held> {
  const c = await account();
  const key = newKey();
  const { pem } = await c.obtainCertificate({
    identifiers: [
      { type: "spiffe", value: spiffeId },
      ...dnsNames.map((value) => ({ type: "dns" as const, value })),
    ],
    csrDer: buildCsr({ key, spiffeId, dnsNames }),
    authorize: (_authz, challenge) => c.attest(challenge.url, attestor, evidence(challenge.token, c)),
  });
  return held(key, pem);
}

function opensslVerify(h: Held): string {
  const leaf = join(dir, "verify-leaf.pem");
  const untrusted = join(dir, "verify-chain.pem");
  writeFileSync(leaf, h.pem.split(/(?<=-----END CERTIFICATE-----\n)/)[0]);
  writeFileSync(untrusted, h.pem);
  return openssl(["verify", "-CAfile", join(dataDir, "root.pem"), "-untrusted", untrusted, leaf]).trim();
}

function sanUris(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? "")
    .split(", ")
    .filter((s) => s.startsWith("URI:"))
    .map((s) => s.slice(4));
}

function problemOf(err: unknown): AcmeProblem {
  return err as AcmeProblem;
}

// ---------- the CA ----------

beforeAll(async () => {
  responder = createServer((req, res) => {
    const token = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/.exec(req.url ?? "")?.[1];
    try {
      const body = token ? readFileSync(join(challengeDir, token)) : null;
      res.writeHead(body ? 200 : 404).end(body ?? "");
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((r) => responder.listen(0, "127.0.0.1", r));
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
    "e2e.test",
    "--acme-http01-port",
    String((responder.address() as AddressInfo).port),
    "--acme-http01-resolve-to",
    "127.0.0.1",
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
  createEntry(id("k8s/api"), ["k8s:ns:prod", "k8s:sa:api"], ["--ttl", "10m"]);
  createEntry(id("node/1"), ["x509pop:subject:cn:node-1"], ["--dns", "node-1.e2e.test"]);
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await new Promise((r) => responder?.close(r));
});

describe("enrollment with each attestor, then renewal and ARI", () => {
  it("join_token: enrolls, renews with the certificate, and reads ARI", async () => {
    const spiffeId = id("web");
    const token = joinToken(spiffeId, ["--cert-ttl", "30m"]);
    const first = await enroll(spiffeId, "join_token", () => joinTokenEvidence(token));
    expect(sanUris(first.cert)).toEqual([spiffeId]);
    expect(opensslVerify(first)).toMatch(/: OK$/);
    const lifetime = Date.parse(first.cert.validTo) - Date.parse(first.cert.validFrom);
    expect(lifetime).toBeGreaterThan(29 * 60_000);
    expect(lifetime).toBeLessThan(32 * 60_000);

    const c = await account();
    const key = newKey();
    const renewed = held(
      key,
      await c.renewWithCertificate(first.chain, first.key, buildCsr({ key, spiffeId })),
    );
    expect(sanUris(renewed.cert)).toEqual([spiffeId]);
    expect(renewed.cert.serialNumber).not.toBe(first.cert.serialNumber);
    expect(renewed.cert.publicKey.export({ format: "jwk" })).toEqual(
      createPublicKey(key).export({ format: "jwk" }),
    );
    expect(opensslVerify(renewed)).toMatch(/: OK$/);

    const ari = await c.renewalInfo(renewed.chain[0]);
    // The lifetime runs from issuance: validFrom is backdated by policy.backdate (30 s by default).
    const nb = Date.parse(renewed.cert.validFrom) + 30_000;
    const na = Date.parse(renewed.cert.validTo);
    // 50–75% of the lifetime, leaving a quarter as runway (validFrom/validTo have whole seconds).
    expect(Math.abs(ari.start.getTime() - (nb + (na - nb) * 0.5))).toBeLessThan(2000);
    expect(Math.abs(ari.end.getTime() - (nb + (na - nb) * 0.75))).toBeLessThan(2000);
    expect(ari.retryAfterSeconds).toBeGreaterThanOrEqual(1);
  });

  it("k8s_sat: enrolls with a service-account token and gets the entry's TTL", async () => {
    const got = await enroll(id("k8s/api"), "k8s_sat", () => k8sSatEvidence(serviceAccountToken()));
    expect(sanUris(got.cert)).toEqual([id("k8s/api")]);
    const lifetime = Date.parse(got.cert.validTo) - Date.parse(got.cert.validFrom);
    expect(lifetime).toBeGreaterThan(9 * 60_000);
    expect(lifetime).toBeLessThan(12 * 60_000);
    expect(opensslVerify(got)).toMatch(/: OK$/);
  });

  it("x509pop: enrolls with a bootstrap certificate, with the entry's DNS name", async () => {
    const got = await enroll(
      id("node/1"),
      "x509pop",
      (token, c) =>
        x509popEvidence({
          chainDer: bootstrap.chain,
          key: bootstrap.key,
          token,
          accountThumbprint: c.thumbprint,
        }),
      ["node-1.e2e.test"],
    );
    expect(sanUris(got.cert)).toEqual([id("node/1")]);
    expect(got.cert.subjectAltName).toContain("DNS:node-1.e2e.test");
    expect(opensslVerify(got)).toMatch(/: OK$/);
  });
});

describe("attestation refusals", () => {
  const refused = async (
    spiffeId: string,
    attestor: string,
    evidence: (token: string, c: AcmeClient) => unknown,
  ) => {
    const err = problemOf(await enroll(spiffeId, attestor, evidence).catch((e) => e));
    expect(err.type).toBe(`${ACME}unauthorized`);
    return err.detail;
  };

  it("a join token used twice concurrently succeeds exactly once", async () => {
    const token = joinToken(id("race"));
    const results = await Promise.allSettled(
      [0, 1].map(() => enroll(id("race"), "join_token", () => joinTokenEvidence(token))),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    expect(problemOf(lost.reason)).toMatchObject({
      type: `${ACME}unauthorized`,
      detail: expect.stringContaining("already been used"),
    });
  });

  it("a join token shown for another SPIFFE ID, refused without spending it", async () => {
    const token = joinToken(id("typo/meant"));
    expect(await refused(id("typo/typed"), "join_token", () => joinTokenEvidence(token))).toMatch(
      /was created for spiffe:\/\/e2e\.example\/typo\/meant, not for spiffe:\/\/e2e\.example\/typo\/typed; it was not spent$/,
    );
    const got = await enroll(id("typo/meant"), "join_token", () => joinTokenEvidence(token));
    expect(sanUris(got.cert)).toEqual([id("typo/meant")]);
  });

  it("an expired join token", async () => {
    const token = joinToken(id("late"), ["--ttl", "1s"]);
    await new Promise((r) => setTimeout(r, 1500));
    expect(await refused(id("late"), "join_token", () => joinTokenEvidence(token))).toMatch(/expired/);
  });

  it("a service-account token with a bad signature, the wrong audience, or expired", async () => {
    const sat = (claims: Record<string, unknown>, key?: KeyObject) => () =>
      k8sSatEvidence(serviceAccountToken(claims, key));
    expect(await refused(id("k8s/api"), "k8s_sat", sat({}, otherSatKey.privateKey))).toMatch(/signature/);
    expect(await refused(id("k8s/api"), "k8s_sat", sat({ aud: ["someone-else"] }))).toMatch(/aud/);
    const past = Math.floor(Date.now() / 1000) - 3600;
    expect(
      await refused(id("k8s/api"), "k8s_sat", sat({ iat: past - 60, nbf: past - 60, exp: past })),
    ).toMatch(/expired/);
  });

  it("an x509pop certificate from another CA", async () => {
    const detail = await refused(id("node/1"), "x509pop", (token, c) =>
      x509popEvidence({ chainDer: foreign.chain, key: foreign.key, token, accountThumbprint: c.thumbprint }),
    );
    expect(detail).toMatch(/bootstrap CA/);
  });

  it("attestation that proves selectors no entry has", async () => {
    const detail = await refused(id("k8s/other"), "k8s_sat", () => k8sSatEvidence(serviceAccountToken()));
    expect(detail).toMatch(/no registration entry for spiffe:\/\/e2e\.example\/k8s\/other/);
  });
});

describe("renew-with-certificate refusals", () => {
  let current: Held;
  beforeAll(async () => {
    current = await enroll(id("node/1"), "x509pop", (token, c) =>
      x509popEvidence({
        chainDer: bootstrap.chain,
        key: bootstrap.key,
        token,
        accountThumbprint: c.thumbprint,
      }),
    );
  });
  const renew = async (h: { chain: Buffer[]; key: KeyObject }, csr: Parameters<typeof buildCsr>[0]) => {
    const c = await account();
    return problemOf(await c.renewWithCertificate(h.chain, h.key, buildCsr(csr)).catch((e) => e));
  };

  it("refuses a CSR that widens the names", async () => {
    const key = newKey();
    const err = await renew(current, {
      key,
      spiffeId: id("node/1"),
      dnsNames: ["node-1.e2e.test", "extra.e2e.test"],
    });
    expect(err).toMatchObject({ type: `${ACME}badCSR`, detail: expect.stringContaining("extra.e2e.test") });
    const other = await renew(current, { key, spiffeId: id("node/2") });
    expect(other.type).toBe(`${ACME}badCSR`);
  });

  it("refuses a certificate this CA did not issue", async () => {
    const err = await renew(
      { chain: foreign.chain, key: foreign.key },
      { key: newKey(), spiffeId: id("node/1") },
    );
    expect(err).toMatchObject({
      type: `${ACME}unauthorized`,
      detail: expect.stringContaining("not issued by this CA"),
    });
  });

  it("refuses a revoked certificate, and ARI then says renew now", async () => {
    const h = await enroll(id("node/1"), "x509pop", (token, c) =>
      x509popEvidence({
        chainDer: bootstrap.chain,
        key: bootstrap.key,
        token,
        accountThumbprint: c.thumbprint,
      }),
    );
    const c = await account();
    await c.revoke(h.chain[0], { reason: 1, signWith: h.key });
    revoked.push(h.cert.serialNumber.toLowerCase());
    const err = await renew(h, { key: newKey(), spiffeId: id("node/1"), dnsNames: ["node-1.e2e.test"] });
    expect(err).toMatchObject({ type: `${ACME}unauthorized`, detail: expect.stringContaining("revoked") });
    const ari = await c.renewalInfo(h.chain[0]);
    expect(ari.start.getTime()).toBeLessThanOrEqual(Date.now() + 1000);
    const again = problemOf(await c.revoke(h.chain[0], { signWith: h.key }).catch((e) => e));
    expect(again.type).toBe(`${ACME}alreadyRevoked`);
  });

  it("refuses an expired certificate", async () => {
    const spiffeId = id("short");
    createEntry(spiffeId, ["k8s:ns:prod", "k8s:sa:api", "k8s:pod:api-0"], ["--ttl", "2s"]);
    const h = await enroll(spiffeId, "k8s_sat", () => k8sSatEvidence(serviceAccountToken()));
    await new Promise((r) => setTimeout(r, Date.parse(h.cert.validTo) + 1100 - Date.now()));
    const err = await renew(h, { key: newKey(), spiffeId });
    expect(err).toMatchObject({ type: `${ACME}unauthorized`, detail: expect.stringContaining("expired") });
  });
});

describe("revocation by the ordering account", () => {
  it("revokes with the account's key and refuses another account", async () => {
    const token = joinToken(id("revoke-me"));
    const c = await account();
    const key = newKey();
    const { pem } = await c.obtainCertificate({
      identifiers: [{ type: "spiffe", value: id("revoke-me") }],
      csrDer: buildCsr({ key, spiffeId: id("revoke-me") }),
      authorize: (_a, ch) => c.attest(ch.url, "join_token", joinTokenEvidence(token)),
    });
    const h = held(key, pem);
    const stranger = await account();
    expect(problemOf(await stranger.revoke(h.chain[0]).catch((e) => e)).type).toBe(`${ACME}unauthorized`);
    await c.revoke(h.chain[0], { reason: 4 });
    revoked.push(h.cert.serialNumber.toLowerCase());
  });
});

describe("accounts and orders", () => {
  it("finds, changes the key of, and deactivates an account", async () => {
    const key = newKey();
    const lookup = await AcmeClient.connect({
      directoryUrl: `${server.url}/acme/directory`,
      ca: rootPem,
      accountKey: key,
    });
    const missing = problemOf(await lookup.newAccount({ onlyReturnExisting: true }).catch((e) => e));
    expect(missing.type).toBe(`${ACME}accountDoesNotExist`);
    const created = await lookup.newAccount({ contact: ["mailto:ops@e2e.example"] });
    expect(created).toMatchObject({ status: "valid" });
    const again = await AcmeClient.connect({
      directoryUrl: `${server.url}/acme/directory`,
      ca: rootPem,
      accountKey: key,
    });
    expect((await again.newAccount({ onlyReturnExisting: true })).url).toBe(created.url);

    const next = newKey();
    await lookup.keyChange(next);
    const old = problemOf(await again.account().catch((e) => e));
    expect(old.type).toBe(`${ACME}malformed`); // the old key no longer verifies for this kid
    await lookup.deactivateAccount();
    const gone = problemOf(await lookup.newOrder([{ type: "spiffe", value: id("x") }]).catch((e) => e));
    expect(gone).toMatchObject({
      type: `${ACME}unauthorized`,
      detail: expect.stringContaining("deactivated"),
    });
  });

  it("lists an account's orders at the account's orders URL, in pages, to that account only", async () => {
    const c = await account();
    const made: string[] = [];
    // One more than a page (ORDERS_PAGE is 100), so the list follows a rel="next" link.
    for (let i = 0; i < 101; i++)
      made.push((await c.newOrder([{ type: "spiffe", value: id(`list${i}`) }])).url);
    const me = await c.account();
    expect(me.orders).toBe(`${me.url}/orders`);
    expect(await c.listOrders()).toEqual(made);

    const otherKey = newKey();
    const other = await AcmeClient.connect({
      directoryUrl: `${server.url}/acme/directory`,
      ca: rootPem,
      accountKey: otherKey,
    });
    await other.newAccount();
    expect(await other.listOrders()).toEqual([]);
    const nosy = flattenedJws(
      otherKey,
      { nonce: await freshNonce(), url: me.orders, kid: other.accountUrl },
      null,
    );
    const refused = await send("POST", me.orders!, JSON.stringify(nosy));
    expect([refused.status, refused.body.type]).toEqual([403, `${ACME}unauthorized`]);
  });

  it("accepts an ARI replaces naming a certificate this CA issued", async () => {
    const token = joinToken(id("replace"));
    const first = await enroll(id("replace"), "join_token", () => joinTokenEvidence(token));
    const c = await account();
    const { formatCertId, certIdOf } = await import("../../formats/ari");
    const certId = formatCertId(certIdOf(first.chain[0]));
    const order = await c.newOrder([{ type: "spiffe", value: id("replace") }], { replaces: certId });
    expect(order.replaces).toBe(certId);
    const unknown = problemOf(
      await c
        .newOrder([{ type: "spiffe", value: id("replace") }], { replaces: `${certId.split(".")[0]}.AQID` })
        .catch((e) => e),
    );
    expect(unknown.type).toBe(`${ACME}malformed`);
  });
});

describe("the unmodified acme-client package from npm", () => {
  it("obtains a certificate for a dns identifier over http-01", async () => {
    const out = await new Promise<string>((resolvePromise, reject) => {
      const child = spawn(process.execPath, [resolve(__dirname, "fixtures/acme-client-run.js")], {
        env: {
          PATH: process.env.PATH ?? "",
          NODE_EXTRA_CA_CERTS: join(dataDir, "root.pem"),
          DIRECTORY_URL: `${server.url}/acme/directory`,
          CHALLENGE_DIR: challengeDir,
          DOMAINS: "app.e2e.test,www.app.e2e.test",
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => {
        stdout += d;
      });
      child.stderr.on("data", (d) => {
        stderr += d;
      });
      child.on("exit", (code) => (code === 0 ? resolvePromise(stdout) : reject(new Error(stderr))));
    });
    const { pem, key } = JSON.parse(out);
    secrets.push(key.split("\n")[1]);
    const h = held(createPrivateKey(key), pem);
    expect(h.cert.subjectAltName).toBe("DNS:app.e2e.test, DNS:www.app.e2e.test");
    expect(opensslVerify(h)).toMatch(/: OK$/);
  }, 60_000);
});

// ---------- malformed requests ----------

interface Reply {
  status: number;
  type: string;
  nonce: string | undefined;
  body: Record<string, unknown>;
}

function send(
  method: string,
  url: string,
  body?: string | Buffer,
  contentType = "application/jose+json",
  ca = rootPem,
): Promise<Reply> {
  return new Promise((resolvePromise, reject) => {
    const req = request(
      url,
      { method, ca, headers: body === undefined ? {} : { "content-type": contentType } },
      (res) => {
        let text = "";
        res.on("data", (d) => {
          text += d;
        });
        res.on("end", () =>
          resolvePromise({
            status: res.statusCode ?? 0,
            type: String(res.headers["content-type"]),
            nonce: res.headers["replay-nonce"] as string | undefined,
            body: text.startsWith("{") ? JSON.parse(text) : {},
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

async function freshNonce(): Promise<string> {
  const r = await send("HEAD", `${server.url}/acme/new-nonce`);
  return r.nonce!;
}

/** Every row of every table, to show a refused request changed nothing. */
function storeDump(): string {
  const db = new Database(join(dataDir, "stint.db"), { readonly: true });
  try {
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as {
      name: string;
    }[];
    return JSON.stringify(tables.map(({ name }) => [name, db.prepare(`SELECT * FROM "${name}"`).all()]));
  } finally {
    db.close();
  }
}

describe("a table of malformed requests", () => {
  let c: AcmeClient;
  let accountKey: KeyObject;
  let finalizeUrl: string;
  const spiffeId = id("table");

  beforeAll(async () => {
    accountKey = newKey();
    c = await AcmeClient.connect({ directoryUrl: `${server.url}/acme/directory`, ca: rootPem, accountKey });
    await c.newAccount();
    const token = joinToken(spiffeId);
    const order = await c.newOrder([{ type: "spiffe", value: spiffeId }]);
    const authz = await c.getAuthorization(order.authorizations[0]);
    expect((await c.attest(authz.challenges[0].url, "join_token", joinTokenEvidence(token))).status).toBe(
      "valid",
    );
    expect((await c.getOrder(order.url)).status).toBe("ready");
    finalizeUrl = order.finalize;
  });

  const signed = async (url: string, payload: unknown, header: Record<string, unknown> = {}) =>
    JSON.stringify(
      flattenedJws(accountKey, { nonce: await freshNonce(), url, kid: c.accountUrl, ...header }, payload),
    );
  const csr = (opts: Partial<Parameters<typeof buildCsr>[0]> = {}) =>
    b64u(buildCsr({ key: newKey(), spiffeId, ...opts }));

  const cases: [string, () => Promise<Reply>, string][] = [
    [
      "bad base64 in the protected header",
      async () =>
        send(
          "POST",
          finalizeUrl,
          JSON.stringify({ protected: "!!not base64!!", payload: "", signature: "AA" }),
        ),
      "malformed",
    ],
    ["JSON that is not a JWS", async () => send("POST", finalizeUrl, '{"hello":'), "malformed"],
    [
      "the wrong content type",
      async () => send("POST", finalizeUrl, await signed(finalizeUrl, { csr: csr() }), "application/json"),
      "malformed",
    ],
    [
      "a url that is not the request's",
      async () => send("POST", finalizeUrl, await signed(`${server.url}/acme/new-order`, { csr: csr() })),
      "unauthorized",
    ],
    [
      "a reused nonce",
      async () => {
        const nonce = await freshNonce();
        const body = () =>
          JSON.stringify(
            flattenedJws(
              accountKey,
              { nonce, url: `${server.url}/acme/new-order`, kid: c.accountUrl },
              { identifiers: [] },
            ),
          );
        await send("POST", `${server.url}/acme/new-order`, body());
        return send("POST", `${server.url}/acme/new-order`, body());
      },
      "badNonce",
    ],
    [
      "an unknown kid",
      async () =>
        send(
          "POST",
          finalizeUrl,
          await signed(finalizeUrl, { csr: csr() }, { kid: `${server.url}/acme/acct/nobody` }),
        ),
      "accountDoesNotExist",
    ],
    [
      "alg none",
      async () => {
        const protectedB64 = b64u(
          JSON.stringify({ alg: "none", nonce: await freshNonce(), url: finalizeUrl, kid: c.accountUrl }),
        );
        return send(
          "POST",
          finalizeUrl,
          JSON.stringify({
            protected: protectedB64,
            payload: b64u(JSON.stringify({ csr: csr() })),
            signature: "",
          }),
        );
      },
      "badSignatureAlgorithm",
    ],
    [
      "an HS256 MAC",
      async () => {
        const protectedB64 = b64u(
          JSON.stringify({ alg: "HS256", nonce: await freshNonce(), url: finalizeUrl, kid: c.accountUrl }),
        );
        return send(
          "POST",
          finalizeUrl,
          JSON.stringify({ protected: protectedB64, payload: b64u("{}"), signature: b64u("mac") }),
        );
      },
      "badSignatureAlgorithm",
    ],
    [
      "an oversized body",
      async () =>
        send("POST", finalizeUrl, await signed(finalizeUrl, { csr: csr(), pad: "x".repeat(70_000) })),
      "malformed",
    ],
    [
      "a CSR with extra names",
      async () =>
        send("POST", finalizeUrl, await signed(finalizeUrl, { csr: csr({ extraUris: [id("other")] }) })),
      "badCSR",
    ],
    [
      "a CSR signed by another key",
      async () => {
        const der = buildCsr({ key: newKey(), spiffeId });
        der[der.length - 3] ^= 0x55; // inside the ECDSA signature: now it verifies with no key
        return send("POST", finalizeUrl, await signed(finalizeUrl, { csr: b64u(der) }));
      },
      "badCSR",
    ],
    [
      "a CSR asking for CA:TRUE",
      async () => send("POST", finalizeUrl, await signed(finalizeUrl, { csr: csr({ requestCa: true }) })),
      "badCSR",
    ],
    [
      "a CSR that is not base64url",
      async () => send("POST", finalizeUrl, await signed(finalizeUrl, { csr: "***" })),
      "badCSR",
    ],
    [
      "an identifier of an unknown type",
      async () =>
        send(
          "POST",
          `${server.url}/acme/new-order`,
          await signed(`${server.url}/acme/new-order`, { identifiers: [{ type: "ip", value: "10.0.0.1" }] }),
        ),
      "unsupportedIdentifier",
    ],
    [
      "a SPIFFE ID in another trust domain",
      async () =>
        send(
          "POST",
          `${server.url}/acme/new-order`,
          await signed(`${server.url}/acme/new-order`, {
            identifiers: [{ type: "spiffe", value: "spiffe://elsewhere.example/x" }],
          }),
        ),
      "rejectedIdentifier",
    ],
    [
      "an order for the CA's own admin identity",
      async () =>
        send(
          "POST",
          `${server.url}/acme/new-order`,
          await signed(`${server.url}/acme/new-order`, {
            identifiers: [{ type: "spiffe", value: id("stint/admin") }],
          }),
        ),
      "rejectedIdentifier",
    ],
    [
      "a renewalInfo id that is not one",
      async () => send("GET", `${server.url}/acme/renewal-info/not-an-id`),
      "malformed",
    ],
  ];

  it.each(cases)(
    "%s gets its problem type, no 5xx, and leaves the store unchanged",
    async (_name, run, type) => {
      const before = storeDump();
      const reply = await run();
      expect(reply.status).toBeGreaterThanOrEqual(400);
      expect(reply.status).toBeLessThan(500);
      expect(reply.type).toBe("application/problem+json");
      expect(reply.body).toMatchObject({
        type: `${ACME}${type}`,
        status: reply.status,
        detail: expect.any(String),
      });
      expect(reply.nonce).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(storeDump()).toBe(before);
    },
  );
});

describe("a hostile CA (test mode)", () => {
  it("refuses half the nonces and delays validation, and a retrying client still enrolls", async () => {
    const hostileDir = join(dir, "hostile");
    const hostile = await startServer([
      "--insecure-no-passphrase",
      "--data-dir",
      hostileDir,
      "--trust-domain",
      TD,
      "--acme-test-bad-nonce-percent",
      "50",
      "--acme-test-validation-delay",
      "1500ms",
    ]);
    try {
      const r = stint([
        "token",
        "create",
        "--spiffe-id",
        id("tough"),
        "--json",
        "--data-dir",
        hostileDir,
        "--server",
        hostile.url,
      ]);
      expect(r.code).toBe(0);
      const { token } = JSON.parse(r.stdout);
      secrets.push(token);
      const c = await AcmeClient.connect({
        directoryUrl: `${hostile.url}/acme/directory`,
        ca: readFileSync(join(hostileDir, "root.pem"), "utf8"),
        accountKey: newKey(),
        badNonceRetries: 20,
      });
      await c.newAccount();
      const key = newKey();
      const answers: string[] = [];
      const started = Date.now();
      const { pem } = await c.obtainCertificate({
        identifiers: [{ type: "spiffe", value: id("tough") }],
        csrDer: buildCsr({ key, spiffeId: id("tough") }),
        authorize: async (_a, ch) => {
          const answered = await c.attest(ch.url, "join_token", joinTokenEvidence(token));
          answers.push(answered.status);
          return answered;
        },
        maxIntervalMs: 500,
      });
      expect(answers).toEqual(["processing"]);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1500);
      expect(sanUris(new X509Certificate(pemDecodeAll(pem, "CERTIFICATE", "chain")[0]))).toEqual([
        id("tough"),
      ]);
      const logs = hostile.logs().join("\n");
      expect(logs).toContain("ACME test mode is on");
      expect(logs).not.toContain(token);
    } finally {
      await hostile.stop();
    }
  }, 60_000);

  it("limits requests per address and orders per account, with Retry-After", async () => {
    const limitedDir = join(dir, "limited");
    const limited = await startServer([
      "--insecure-no-passphrase",
      "--data-dir",
      limitedDir,
      "--acme-rate-limit-per-account",
      "1",
      "--acme-rate-limit-per-address",
      "3",
    ]);
    try {
      const c = await AcmeClient.connect({
        directoryUrl: `${limited.url}/acme/directory`,
        ca: readFileSync(join(limitedDir, "root.pem"), "utf8"),
        accountKey: newKey(),
      });
      await c.newAccount();
      const orders = await Promise.allSettled(
        Array.from({ length: 12 }, () =>
          c.newOrder([{ type: "spiffe", value: "spiffe://stint.internal/x" }]),
        ),
      );
      const refused = orders
        .filter((o) => o.status === "rejected")
        .map((o) => problemOf((o as PromiseRejectedResult).reason));
      expect(refused.length).toBeGreaterThanOrEqual(2);
      for (const p of refused) {
        expect(p).toMatchObject({ type: `${ACME}rateLimited`, status: 429 });
        expect(p.retryAfter).toBeGreaterThanOrEqual(1);
      }
      expect(refused.map((p) => p.detail).join()).toMatch(/new orders from this account/);
      const replies = await Promise.all(
        Array.from({ length: 40 }, () =>
          send(
            "HEAD",
            `${limited.url}/acme/new-nonce`,
            undefined,
            undefined,
            readFileSync(join(limitedDir, "root.pem"), "utf8"),
          ),
        ),
      );
      expect(replies.filter((r) => r.status === 429).length).toBeGreaterThan(0);
    } finally {
      await limited.stop();
    }
  }, 60_000);

  it("is visible in badNonce refusals that say so", async () => {
    const hostileDir = join(dir, "hostile2");
    const hostile = await startServer([
      "--insecure-no-passphrase",
      "--data-dir",
      hostileDir,
      "--acme-test-bad-nonce-percent",
      "100",
    ]);
    try {
      const c = await AcmeClient.connect({
        directoryUrl: `${hostile.url}/acme/directory`,
        ca: readFileSync(join(hostileDir, "root.pem"), "utf8"),
        accountKey: newKey(),
        badNonceRetries: 2,
      });
      const err = problemOf(await c.newAccount().catch((e) => e));
      expect(err).toMatchObject({ type: `${ACME}badNonce`, detail: expect.stringContaining("test mode") });
    } finally {
      await hostile.stop();
    }
  }, 60_000);
});

// ---------- what the CA wrote ----------

describe("the audit log and the logs", () => {
  it("records every issuance and revocation in the audit log", () => {
    const records = JSON.parse(admin(["audit", "--json", "--limit", "10000"])) as {
      action: string;
      subject: string;
    }[];
    const subjects = (action: string) =>
      new Set(records.filter((r) => r.action === action).map((r) => r.subject));
    const issues = new Set([...subjects("cert.issue"), ...subjects("cert.renew")]);
    const revokes = subjects("cert.revoke");
    const normal = (s: string) => (s.length % 2 ? `0${s}` : s);
    for (const serial of issued) expect(issues).toContain(normal(serial));
    for (const serial of revoked) expect(revokes).toContain(normal(serial));
    expect(revoked.length).toBeGreaterThanOrEqual(2);
  });

  it("never logs a token, a key or evidence", () => {
    const logs = server.logs().join("\n");
    expect(logs.length).toBeGreaterThan(0);
    expect(secrets.length).toBeGreaterThanOrEqual(8);
    for (const secret of secrets) expect(logs).not.toContain(secret);
    expect(logs).not.toMatch(/PRIVATE KEY|"token":|"evidence":|"signature":/);
  });
});

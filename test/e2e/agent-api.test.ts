import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildCsr } from "../../agent/csr";
import { findAuthorizingEntry, type RegistrationEntry } from "../../ca/entries";
import { verifyJwtSvid } from "../../verify/jwt-svid";
import { type RunResult, type ServerProcess, startServer, stint } from "../helpers/cli";
import { httpsCall } from "../helpers/https";
import { openssl, tempDir } from "../helpers/openssl";

/**
 * The node agent API (/agent/v1) against a real `stint ca serve`: agents
 * authenticate with X.509-SVIDs this CA issued (`stint ca issue`), list and
 * obtain exactly the entries parented to them, in batches, and JWT-SVIDs that
 * verify against /bundle.json; every other caller is refused.
 */

const dir = tempDir("stint-agent-api-");
const dataDir = join(dir, "ca");
const TD = "example.org";
const HOST1 = `spiffe://${TD}/node/host1`;
const HOST2 = `spiffe://${TD}/node/host2`;
const env = {
  STINT_CA_PASSPHRASE: "agent api test passphrase",
  STINT_DATA_DIR: dataDir,
  STINT_TRUST_DOMAIN: TD,
  STINT_POLICY_MIN_TTL: "1s",
};

type Credential = { cert: string; key: string };
let server: ServerProcess;
let rootPem: string;
let host1: Credential;
let host2: Credential;
let admin: Credential;
const entryIds: Record<string, string> = {};

const cli = (args: string[]): RunResult => stint([...args, "--server", server.url], env);
const json = <T>(r: RunResult): T => {
  expect(r).toMatchObject({ code: 0, stderr: "" });
  return JSON.parse(r.stdout) as T;
};

async function call(
  method: string,
  path: string,
  client: Credential | null,
  body?: unknown,
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are read freely in assertions
): Promise<{ status: number; type: string; json: Record<string, any> }> {
  const res = await httpsCall(new URL(path, server.url), { method, ca: rootPem, client, json: body });
  return { status: res.status, type: String(res.headers["content-type"]), json: JSON.parse(res.text) };
}

/** An agent's credential the way a join-token enrollment leaves it: key and chain from this CA. */
function issueAgent(spiffeId: string, name: string): Credential & { serial: string } {
  const out = join(dir, name);
  const r = stint(["ca", "issue", "--spiffe-id", spiffeId, "--out", out, "--ttl", "1h", "--json"], env);
  expect(r).toMatchObject({ code: 0 });
  return {
    cert: readFileSync(join(out, "cert.pem"), "utf8"),
    key: readFileSync(join(out, "key.pem"), "utf8"),
    serial: (JSON.parse(r.stdout) as { serial: string }).serial,
  };
}

function csrFor(
  spiffeId: string,
  dnsNames?: string[],
): { csr: string; key: ReturnType<typeof generateKeyPairSync>["privateKey"] } {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { csr: buildCsr({ key: privateKey, spiffeId, dnsNames }).toString("base64url"), key: privateKey };
}

function createEntry(args: string[]): string {
  return json<{ id: string }>(cli(["entry", "create", ...args, "--json"])).id;
}

async function bundleJson(): Promise<string> {
  return (await httpsCall(new URL("/bundle.json", server.url), { ca: rootPem })).text;
}

/** The kid in a JWT's header. */
const kidOf = (token: string): string =>
  JSON.parse(Buffer.from(token.split(".")[0]!, "base64url").toString()).kid;

beforeAll(async () => {
  expect(stint(["ca", "init", "--json"], env)).toMatchObject({ code: 0 });
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  server = await startServer([], env);
  admin = {
    cert: readFileSync(join(dataDir, "admin", "cert.pem"), "utf8"),
    key: readFileSync(join(dataDir, "admin", "key.pem"), "utf8"),
  };
  host1 = issueAgent(HOST1, "host1");
  host2 = issueAgent(HOST2, "host2");
  entryIds.web = createEntry([
    "--spiffe-id",
    `spiffe://${TD}/web`,
    "--parent",
    HOST1,
    "--selector",
    "unix:uid:1001",
    "--ttl",
    "10m",
  ]);
  entryIds.api = createEntry([
    "--spiffe-id",
    `spiffe://${TD}/api`,
    "--parent",
    HOST1,
    "--selector",
    "unix:uid:1002",
    "--selector",
    "unix:path:/usr/bin/api",
  ]);
  entryIds.db = createEntry([
    "--spiffe-id",
    `spiffe://${TD}/db`,
    "--parent",
    HOST2,
    "--selector",
    "unix:user:postgres",
  ]);
  entryIds.plain = createEntry(["--spiffe-id", `spiffe://${TD}/plain`, "--selector", "k8s:ns:prod"]);
});
afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("entries with a parent", () => {
  it("are created and listed with their parent; unix selectors need one", () => {
    const table = cli(["entry", "list"]);
    expect(table.stdout).toMatch(/^ID +SPIFFE ID +SELECTORS +DNS +TTL +PARENT\n/);
    expect(table.stdout).toMatch(new RegExp(`spiffe://${TD}/web +unix:uid:1001 +- +10m +${HOST1}\\n`));
    const listed = json<{ id: string; parent?: string }[]>(cli(["entry", "list", "--json"]));
    expect(listed.find((e) => e.id === entryIds.db)?.parent).toBe(HOST2);
    expect(listed.find((e) => e.id === entryIds.plain)?.parent).toBeUndefined();
    const refused = cli(["entry", "create", "--spiffe-id", `spiffe://${TD}/x`, "--selector", "unix:uid:5"]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("unix:* selectors are proven by a node agent: give the entry a parent");
    const bad = cli([
      "entry",
      "create",
      "--spiffe-id",
      `spiffe://${TD}/x`,
      "--parent",
      HOST1,
      "--selector",
      "unix:sha256:ABC",
    ]);
    expect(bad.stderr).toContain(
      'selector "unix:sha256:ABC": after "unix:sha256:" comes the SHA-256 of the executable',
    );
  });

  it("never authorize an ACME attestation, even one proving all their selectors", () => {
    const entry = (id: string, parent: string | null): RegistrationEntry => ({
      id,
      spiffeId: `spiffe://${TD}/web`,
      selectors: ["k8s:ns:prod"],
      dnsNames: [],
      ttlMs: null,
      createdAt: new Date(0),
      parent,
    });
    expect(findAuthorizingEntry([entry("p", HOST1)], `spiffe://${TD}/web`, ["k8s:ns:prod"])).toBeNull();
    expect(
      findAuthorizingEntry([entry("p", HOST1), entry("q", null)], `spiffe://${TD}/web`, ["k8s:ns:prod"])?.id,
    ).toBe("q");
  });
});

describe("GET /agent/v1/entries", () => {
  it("gives each agent exactly its own entries, with a revision that moves when they change", async () => {
    const one = await call("GET", "/agent/v1/entries", host1);
    expect(one.status).toBe(200);
    expect(one.json.entries).toEqual([
      {
        id: entryIds.api,
        spiffeId: `spiffe://${TD}/api`,
        selectors: ["unix:path:/usr/bin/api", "unix:uid:1002"],
        ttlSeconds: null,
        dnsNames: [],
      },
      {
        id: entryIds.web,
        spiffeId: `spiffe://${TD}/web`,
        selectors: ["unix:uid:1001"],
        ttlSeconds: 600,
        dnsNames: [],
      },
    ]);
    const two = await call("GET", "/agent/v1/entries", host2);
    expect(two.json.entries.map((e: { id: string }) => e.id)).toEqual([entryIds.db]);
    const extra = createEntry([
      "--spiffe-id",
      `spiffe://${TD}/extra`,
      "--parent",
      HOST2,
      "--selector",
      "unix:gid:50",
    ]);
    const after = await call("GET", "/agent/v1/entries", host2);
    expect(after.json.entries).toHaveLength(2);
    expect(after.json.revision).not.toBe(two.json.revision);
    expect(cli(["entry", "delete", extra]).code).toBe(0);
    expect((await call("GET", "/agent/v1/entries", host2)).json.revision).toBe(two.json.revision);
  });

  it("refuses callers without an agent SVID of this CA: none, the admin's, another CA's", async () => {
    const none = await call("GET", "/agent/v1/entries", null);
    expect(none).toMatchObject({ status: 401, type: "application/problem+json" });
    expect(none.json).toMatchObject({
      type: "urn:ietf:params:acme:error:unauthorized",
      detail: expect.stringContaining("X.509-SVID"),
    });
    const asAdmin = await call("GET", "/agent/v1/entries", admin);
    expect(asAdmin.status).toBe(401);
    expect(asAdmin.json.detail).toBe(`spiffe://${TD}/stint/admin is not a node agent of trust domain ${TD}`);
    // And the other way round: an agent's certificate is no admin credential.
    const agentAsAdmin = await call("GET", "/admin/entries", host1);
    expect(agentAsAdmin.status).toBe(403);
    expect(agentAsAdmin.json.detail).toContain(`client certificate for ${HOST1} may not use the admin API`);
    // A self-made CA's certificate for the same ID.
    const foreign = join(dir, "foreign");
    openssl([
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `${foreign}.key`,
      "-out",
      `${foreign}.pem`,
      "-subj",
      "/CN=x",
      "-days",
      "1",
      "-addext",
      `subjectAltName=URI:${HOST1}`,
    ]);
    const forged = await call("GET", "/agent/v1/entries", {
      cert: readFileSync(`${foreign}.pem`, "utf8"),
      key: readFileSync(`${foreign}.key`, "utf8"),
    });
    expect(forged.status).toBe(401);
    expect(forged.json.detail).toMatch(/client certificate not accepted/);
  });
});

describe("POST /agent/v1/x509-svids", () => {
  it("issues a batch through the authority: chains OpenSSL verifies, the entry's TTL, and an audit record naming workload and agent", async () => {
    const web = csrFor(`spiffe://${TD}/web`);
    const api = csrFor(`spiffe://${TD}/api`);
    const res = await call("POST", "/agent/v1/x509-svids", host1, {
      requests: [
        { entryId: entryIds.web, csr: web.csr },
        { entryId: entryIds.api, csr: api.csr },
      ],
    });
    expect(res.status).toBe(200);
    expect(res.json.svids).toHaveLength(2);
    const [w, a] = res.json.svids as {
      entryId: string;
      spiffeId: string;
      certificateChain: string;
      notAfter: string;
      renewAfter: string;
    }[];
    expect(w).toMatchObject({ entryId: entryIds.web, spiffeId: `spiffe://${TD}/web` });
    expect(a).toMatchObject({ entryId: entryIds.api, spiffeId: `spiffe://${TD}/api` });
    const leaf = new X509Certificate(w!.certificateChain);
    expect(leaf.subjectAltName).toBe(`URI:spiffe://${TD}/web`);
    expect(leaf.publicKey.export({ format: "jwk" })).toMatchObject({ kty: "EC", crv: "P-256" });
    const life = Date.parse(leaf.validTo) - Date.parse(leaf.validFrom);
    expect(life).toBeGreaterThan(9 * 60_000);
    expect(life).toBeLessThanOrEqual(11 * 60_000);
    expect(new Date(w!.notAfter).getTime()).toBe(Date.parse(leaf.validTo));
    expect(Date.parse(w!.renewAfter)).toBeLessThan(Date.parse(w!.notAfter));
    const chainPath = join(dir, "web-chain.pem");
    writeFileSync(chainPath, w!.certificateChain);
    expect(
      openssl(["verify", "-CAfile", join(dataDir, "root.pem"), "-untrusted", chainPath, chainPath]),
    ).toMatch(/: OK$/m);

    const audit = await call("GET", "/admin/audit?limit=1000", admin);
    const issued = (
      audit.json.records as { actor: string; action: string; details: Record<string, unknown> }[]
    ).filter((r) => r.action === "cert.issue" && r.details.via === "agent-api");
    expect(
      issued.map((r) => [r.actor, r.details.spiffeId, r.details.entryId, r.details.requestedBy]),
    ).toEqual(
      expect.arrayContaining([
        [HOST1, `spiffe://${TD}/web`, entryIds.web, HOST1],
        [HOST1, `spiffe://${TD}/api`, entryIds.api, HOST1],
      ]),
    );
  });

  it("answers each refused item in place: another agent's entry, an entry without parent, a CSR for another ID", async () => {
    const res = await call("POST", "/agent/v1/x509-svids", host1, {
      requests: [
        { entryId: entryIds.db, csr: csrFor(`spiffe://${TD}/db`).csr },
        { entryId: entryIds.plain, csr: csrFor(`spiffe://${TD}/plain`).csr },
        { entryId: entryIds.web, csr: csrFor(`spiffe://${TD}/db`).csr },
        { entryId: entryIds.web, csr: csrFor(`spiffe://${TD}/web`).csr },
      ],
    });
    expect(res.status).toBe(200);
    const [db, plain, wrong, ok] = res.json.svids;
    expect(db).toEqual({
      entryId: entryIds.db,
      error: {
        type: "urn:ietf:params:acme:error:rejectedIdentifier",
        detail: `no registration entry "${entryIds.db}" has parent ${HOST1}`,
        status: 400,
      },
    });
    expect(plain.error).toMatchObject({ type: "urn:ietf:params:acme:error:rejectedIdentifier" });
    expect(wrong.error).toMatchObject({
      type: "urn:ietf:params:acme:error:badCSR",
      detail: `the CSR's URI SANs (spiffe://${TD}/db) must be exactly the entry's SPIFFE ID spiffe://${TD}/web`,
    });
    expect(ok.certificateChain).toMatch(/^-----BEGIN CERTIFICATE-----/);
    // Agent B obtains its own entry, never agent A's.
    const two = await call("POST", "/agent/v1/x509-svids", host2, {
      requests: [
        { entryId: entryIds.web, csr: csrFor(`spiffe://${TD}/web`).csr },
        { entryId: entryIds.db, csr: csrFor(`spiffe://${TD}/db`).csr },
      ],
    });
    expect(two.json.svids[0].error.type).toBe("urn:ietf:params:acme:error:rejectedIdentifier");
    expect(new X509Certificate(two.json.svids[1].certificateChain).subjectAltName).toBe(
      `URI:spiffe://${TD}/db`,
    );
  });

  it("binds each SVID to its entry: deleting the entry with --revoke revokes what the agent obtained under it", async () => {
    const id = createEntry([
      "--spiffe-id",
      `spiffe://${TD}/cron`,
      "--parent",
      HOST1,
      "--selector",
      "unix:uid:1003",
    ]);
    const res = await call("POST", "/agent/v1/x509-svids", host1, {
      requests: [{ entryId: id, csr: csrFor(`spiffe://${TD}/cron`).csr }],
    });
    const serial = new X509Certificate(res.json.svids[0].certificateChain).serialNumber.toLowerCase();
    const audit = await call("GET", "/admin/audit?limit=1000", admin);
    expect(
      (audit.json.records as { subject: string; details: Record<string, unknown> }[]).find(
        (r) => r.subject === serial,
      )?.details,
    ).toMatchObject({ entryId: id, requestedBy: HOST1, via: "agent-api" });

    const deleted = json<{ revoked: string[] }>(cli(["entry", "delete", id, "--revoke", "--json"]));
    expect(deleted.revoked).toEqual([serial]);
    // The agent can obtain nothing more under it.
    const after = await call("POST", "/agent/v1/x509-svids", host1, {
      requests: [{ entryId: id, csr: csrFor(`spiffe://${TD}/cron`).csr }],
    });
    expect(after.json.svids[0].error.type).toBe("urn:ietf:params:acme:error:rejectedIdentifier");
  });

  it("refuses a malformed batch as a whole", async () => {
    const empty = await call("POST", "/agent/v1/x509-svids", host1, { requests: [] });
    expect(empty).toMatchObject({ status: 400, type: "application/problem+json" });
    expect(empty.json).toMatchObject({
      type: "urn:ietf:params:acme:error:malformed",
      detail: "requests must be a list of 1 to 100 {entryId, csr} objects",
    });
    const tooMany = await call("POST", "/agent/v1/x509-svids", host1, {
      requests: Array.from({ length: 101 }, () => ({ entryId: entryIds.web, csr: "AA" })),
    });
    expect(tooMany.status).toBe(400);
    const extra = await call("POST", "/agent/v1/x509-svids", host1, { requests: [], spiffeId: "x" });
    expect(extra.json.detail).toBe('unknown member "spiffeId"');
    const garbage = await call("POST", "/agent/v1/x509-svids", host1, {
      requests: [{ entryId: entryIds.web, csr: "AAAA" }],
    });
    expect(garbage.json.svids[0].error.type).toBe("urn:ietf:params:acme:error:badCSR");
  });
});

describe("POST /agent/v1/jwt-svids", () => {
  it("signs a token that verifies against /bundle.json for its audience only, and records it", async () => {
    const res = await call("POST", "/agent/v1/jwt-svids", host1, { entryId: entryIds.web, audience: ["a"] });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ spiffeId: `spiffe://${TD}/web` });
    const bundle = await bundleJson();
    const ok = verifyJwtSvid(res.json.token, { audience: "a", bundle, trustDomain: TD });
    expect(ok.spiffeId).toBe(`spiffe://${TD}/web`);
    expect((ok.claims.exp as number) * 1000).toBe(Date.parse(res.json.expiresAt));
    expect((ok.claims.exp as number) - (ok.claims.iat as number)).toBe(300);
    expect(() => verifyJwtSvid(res.json.token, { audience: "b", bundle })).toThrow(/not for audience "b"/);

    const audit = await call("GET", "/admin/audit?limit=1000", admin);
    const jwt = (
      audit.json.records as {
        actor: string;
        action: string;
        subject: string;
        details: Record<string, unknown>;
      }[]
    ).find((r) => r.action === "jwt-svid.issue");
    expect(jwt).toMatchObject({
      actor: HOST1,
      subject: `spiffe://${TD}/web`,
      details: { entryId: entryIds.web, requestedBy: HOST1, audience: ["a"] },
    });
    expect(JSON.stringify(audit.json)).not.toContain(res.json.token.split(".")[2]);
  });

  it("refuses another agent's entry and a token without audience", async () => {
    const other = await call("POST", "/agent/v1/jwt-svids", host2, {
      entryId: entryIds.web,
      audience: ["a"],
    });
    expect(other).toMatchObject({ status: 400 });
    expect(other.json.type).toBe("urn:ietf:params:acme:error:rejectedIdentifier");
    const noAud = await call("POST", "/agent/v1/jwt-svids", host1, { entryId: entryIds.web, audience: [] });
    expect(noAud.json).toMatchObject({ type: "urn:ietf:params:acme:error:malformed" });
  });
});

describe("a revoked agent", () => {
  it("is refused at once", async () => {
    const host3 = issueAgent(`spiffe://${TD}/node/host3`, "host3");
    expect((await call("GET", "/agent/v1/entries", host3)).status).toBe(200);
    expect(cli(["cert", "revoke", host3.serial, "--reason", "keyCompromise"])).toMatchObject({ code: 0 });
    const refused = await call("GET", "/agent/v1/entries", host3);
    expect(refused.status).toBe(401);
    expect(refused.json.detail).toBe(
      `the agent certificate ${host3.serial} for spiffe://${TD}/node/host3 is revoked`,
    );
  });
});

// Last: the rotation retires the intermediate the admin certificate came from.
describe("JWT-SVID keys through ca rotate", () => {
  it("sign with the key published before the rotation, and keep the old one published", async () => {
    const before = JSON.parse(await bundleJson()) as {
      keys: { use: string; kid: string }[];
      spiffe_sequence: number;
    };
    const kids = before.keys.filter((k) => k.use === "jwt-svid").map((k) => k.kid);
    expect(kids).toHaveLength(2);
    const jwt = () => call("POST", "/agent/v1/jwt-svids", host1, { entryId: entryIds.web, audience: ["a"] });
    const old = (await jwt()).json.token as string;
    expect(kidOf(old)).toBe(kids[0]);
    expect(stint(["ca", "rotate", "--ttl-days", "30"], env)).toMatchObject({ code: 0 });
    // The server takes the rotation up at its next poll (feed.pollInterval).
    let next = "";
    for (let i = 0; i < 100 && kidOf(next || old) !== kids[1]; i++) {
      await new Promise((r) => setTimeout(r, 100));
      next = (await jwt()).json.token as string;
    }
    expect(kidOf(next)).toBe(kids[1]);
    const after = JSON.parse(await bundleJson()) as typeof before;
    const published = after.keys.filter((k) => k.use === "jwt-svid").map((k) => k.kid);
    expect(published.slice(0, 2)).toEqual(kids);
    expect(published).toHaveLength(3);
    expect(after.spiffe_sequence).toBeGreaterThan(before.spiffe_sequence);
    const text = JSON.stringify(after);
    expect(verifyJwtSvid(old, { audience: "a", bundle: text }).spiffeId).toBe(`spiffe://${TD}/web`);
    expect(verifyJwtSvid(next, { audience: "a", bundle: text }).spiffeId).toBe(`spiffe://${TD}/web`);
  });
});

import { createPublicKey, X509Certificate } from "node:crypto";
import { readFileSync, rmSync, statSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { type RunResult, type ServerProcess, startServer, stint } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";

/**
 * The admin API and the CLI commands over it, against a real `stint ca serve`
 * process: the admin credential `ca init` writes, every command, who the API
 * refuses, bad input that must change nothing, and renewal of an expired or
 * revoked admin certificate.
 */

const dir = tempDir();
const dataDir = join(dir, "ca");
const adminDir = join(dataDir, "admin");
const ADMIN_ID = "spiffe://example.org/stint/admin";
const env = {
  STINT_CA_PASSPHRASE: "admin test passphrase",
  STINT_DATA_DIR: dataDir,
  STINT_TRUST_DOMAIN: "example.org",
  STINT_POLICY_DNS_SUFFIXES: "svc.example.org",
  STINT_POLICY_MIN_TTL: "1s",
};

let server: ServerProcess;
let stdout = "";
let rootPem: string;

/** A CLI command against the running server. */
const admin = (args: string[], extraEnv: Record<string, string> = {}): RunResult =>
  stint([...args, "--server", server.url], { ...env, ...extraEnv });
const json = <T = Record<string, unknown>>(r: RunResult): T => {
  expect(r).toMatchObject({ code: 0, stderr: "" });
  return JSON.parse(r.stdout) as T;
};
const oneLine = (r: RunResult) => r.stderr.trim().split("\n");

interface Entry {
  id: string;
  spiffeId: string;
  selectors: string[];
  dnsNames: string[];
  ttl: string | null;
}

/** A raw HTTPS request to the admin API with the given client credential (or none). */
function call(
  method: string,
  path: string,
  client: { cert: string; key: string } | null,
  body?: unknown,
): Promise<{ status: number; type: string; json: Record<string, unknown> }> {
  const text = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, server.url),
      {
        method,
        ca: rootPem,
        agent: false,
        ...(client ?? {}),
        headers: text === undefined ? {} : { "content-type": "application/json" },
      },
      (res) => {
        let data = "";
        res.on("data", (d) => {
          data += d;
        });
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            type: String(res.headers["content-type"]),
            json: JSON.parse(data),
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(text);
  });
}

const adminCredential = () => ({
  cert: readFileSync(join(adminDir, "cert.pem"), "utf8"),
  key: readFileSync(join(adminDir, "key.pem"), "utf8"),
});

let initOut: { adminCertificate: { dir: string; serial: string; spiffeId: string; notAfter: string } };

beforeAll(async () => {
  initOut = json(stint(["ca", "init", "--json"], env));
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  server = await startServer([], env);
  server.child.stdout!.on("data", (d) => {
    stdout += d;
  });
});
afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("the admin credential from stint ca init", () => {
  it("is a P-256 key (0600, PKCS#8, unencrypted) and a chain that openssl verifies to the root", () => {
    expect(initOut.adminCertificate).toMatchObject({ dir: adminDir, spiffeId: ADMIN_ID });
    const keyPath = join(adminDir, "key.pem");
    expect(statSync(keyPath).mode & 0o777).toBe(0o600);
    expect(statSync(adminDir).mode & 0o777).toBe(0o700);
    expect(readFileSync(keyPath, "utf8")).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(openssl(["pkey", "-in", keyPath, "-noout", "-text"])).toMatch(/ASN1 OID: prime256v1/);

    const certPath = join(adminDir, "cert.pem");
    expect(
      openssl(["verify", "-CAfile", join(dataDir, "root.pem"), "-untrusted", certPath, certPath]).trim(),
    ).toBe(`${certPath}: OK`);
    const text = openssl(["x509", "-in", certPath, "-noout", "-text"]);
    expect(text).toMatch(/X509v3 Subject Alternative Name: \s*URI:spiffe:\/\/example\.org\/stint\/admin\n/);
    expect(text).toMatch(/TLS Web Client Authentication/);

    const leaf = new X509Certificate(readFileSync(certPath));
    expect(leaf.serialNumber.toLowerCase()).toBe(initOut.adminCertificate.serial);
    expect(leaf.publicKey.equals(createPublicKey(readFileSync(keyPath)))).toBe(true);
    // policy.maxTtl (24h by default) bounds it, like every certificate.
    expect(new Date(leaf.validTo).getTime() - Date.now()).toBeGreaterThan(23 * 3_600_000);
  });

  it("was recorded and audited like any issuance", () => {
    const records = json<{ action: string; subject: string; details: { spiffeId?: string } }[]>(
      admin(["audit", "--json"]),
    );
    expect(records.find((r) => r.subject === initOut.adminCertificate.serial)).toMatchObject({
      action: "cert.issue",
      details: { spiffeId: ADMIN_ID },
    });
  });
});

describe("stint entry", () => {
  it("creates, lists and deletes entries", () => {
    const created = json<Entry>(
      admin([
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--selector",
        "k8s:sa:web",
        "--selector",
        "k8s:ns:prod",
        "--dns",
        "Web.svc.example.org",
        "--ttl",
        "30m",
        "--json",
      ]),
    );
    expect(created).toMatchObject({
      id: expect.stringMatching(/^[0-9a-f]{16}$/),
      spiffeId: "spiffe://example.org/web",
      selectors: ["k8s:ns:prod", "k8s:sa:web"],
      dnsNames: ["web.svc.example.org"],
      ttl: "30m",
    });

    const plain = admin([
      "entry",
      "create",
      "--spiffe-id",
      "spiffe://example.org/db",
      "--selector",
      "k8s:ns:db",
    ]);
    expect(plain).toMatchObject({ code: 0, stderr: "" });
    expect(plain.stdout).toMatch(
      /^Created entry [0-9a-f]{16} for spiffe:\/\/example\.org\/db \(selectors: k8s:ns:db\)\n$/,
    );

    const list = json<Entry[]>(admin(["entry", "list", "--json"]));
    expect(list.map((e) => e.spiffeId)).toEqual(["spiffe://example.org/db", "spiffe://example.org/web"]);
    const filtered = json<Entry[]>(
      admin(["entry", "list", "--spiffe-id", "spiffe://example.org/web", "--json"]),
    );
    expect(filtered).toEqual([expect.objectContaining({ id: created.id })]);
    const table = admin(["entry", "list"]);
    expect(table.stdout).toMatch(/^ID +SPIFFE ID +SELECTORS +DNS +TTL\n/);
    expect(table.stdout).toContain(
      `${created.id}  spiffe://example.org/web  k8s:ns:prod,k8s:sa:web  web.svc.example.org  30m`,
    );

    const deleted = admin(["entry", "delete", created.id]);
    expect(deleted).toMatchObject({ code: 0, stderr: "" });
    expect(deleted.stdout).toMatch(new RegExp(`^Deleted entry ${created.id}  spiffe://example.org/web`));
    expect(json<Entry[]>(admin(["entry", "list", "--json"])).map((e) => e.id)).not.toContain(created.id);
  });

  it("refuses a second entry with the same selectors for the same SPIFFE ID", () => {
    const args = ["entry", "create", "--spiffe-id", "spiffe://example.org/dup", "--selector", "k8s:ns:dup"];
    expect(admin(args).code).toBe(0);
    const again = admin(args);
    expect(again.code).toBe(1);
    expect(oneLine(again)).toEqual([
      expect.stringMatching(
        /^stint entry create: entry [0-9a-f]{16} already maps these selectors to spiffe:\/\/example\.org\/dup/,
      ),
    ]);
  });
});

describe("stint token create", () => {
  it("returns a 43-character secret once and an entry whose only selector is join_token:<id>", async () => {
    const token = json<{ id: string; token: string; spiffeId: string; expiresAt: string; entryId: string }>(
      admin([
        "token",
        "create",
        "--spiffe-id",
        "spiffe://example.org/joiner",
        "--ttl",
        "5m",
        "--cert-ttl",
        "15m",
        "--json",
      ]),
    );
    expect(token).toEqual({
      id: expect.stringMatching(/^[0-9a-f]{16}$/),
      // The SPIFFE ID it is for, in base64url, then the secret.
      token: expect.stringMatching(
        new RegExp(
          `^${Buffer.from("spiffe://example.org/joiner").toString("base64url")}\\.[A-Za-z0-9_-]{43}$`,
        ),
      ),
      spiffeId: "spiffe://example.org/joiner",
      expiresAt: expect.any(String),
      entryId: expect.stringMatching(/^[0-9a-f]{16}$/),
    });
    const lifetime = new Date(token.expiresAt).getTime() - Date.now();
    expect(lifetime).toBeGreaterThan(4 * 60_000);
    expect(lifetime).toBeLessThanOrEqual(5 * 60_000);
    const entries = json<Entry[]>(
      admin(["entry", "list", "--spiffe-id", "spiffe://example.org/joiner", "--json"]),
    );
    expect(entries).toEqual([
      expect.objectContaining({ id: token.entryId, selectors: [`join_token:${token.id}`], ttl: "15m" }),
    ]);

    const text = admin(["token", "create", "--spiffe-id", "spiffe://example.org/joiner2"]);
    expect(text.code).toBe(0);
    const secret = /^ {2}([A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43})$/m.exec(text.stdout)?.[1];
    expect(secret).toBeDefined();
    expect(text.stdout).toMatch(/It is shown only now\./);

    // Neither secret reaches the server's output. Its pipes are read only while this process is
    // not blocked in spawnSync, so wait until the line about the token has arrived.
    const lastId = /^Join token ([0-9a-f]{16}) /.exec(text.stdout)![1]!;
    const output = () => server.logs().join("\n") + stdout;
    for (let i = 0; i < 50 && !output().includes(lastId); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(output()).toContain(token.id);
    expect(output()).toContain(lastId);
    expect(output()).not.toContain(token.token);
    expect(output()).not.toContain(secret!);
  });
});

describe("stint cert", () => {
  let serial: string;
  let leafPem: string;

  beforeAll(() => {
    const out = join(dir, "workload");
    serial = json<{ serial: string }>(
      stint(["ca", "issue", "--spiffe-id", "spiffe://example.org/workload", "--out", out, "--json"], env),
    ).serial;
    const chain = readFileSync(join(out, "cert.pem"), "utf8");
    leafPem = chain.slice(0, chain.indexOf("-----END CERTIFICATE-----") + 26);
  });

  it("lists certificates with their status, filtered by SPIFFE ID", () => {
    const all = json<{ serial: string; spiffeId: string; status: string }[]>(
      admin(["cert", "list", "--json"]),
    );
    expect(all.map((c) => c.spiffeId).sort()).toEqual(
      [
        "spiffe://example.org/stint/admin",
        "spiffe://example.org/stint/ca",
        "spiffe://example.org/workload",
      ].sort(),
    );
    const mine = json(admin(["cert", "list", "--spiffe-id", "spiffe://example.org/workload", "--json"]));
    expect(mine).toEqual([expect.objectContaining({ serial, status: "valid" })]);
    expect(admin(["cert", "list"]).stdout).toMatch(new RegExp(`^${serial}  valid  `, "m"));
  });

  it("shows one certificate's facts and its PEM", () => {
    const shown = json(admin(["cert", "show", serial, "--json"]));
    expect(shown).toMatchObject({
      serial,
      spiffeId: "spiffe://example.org/workload",
      status: "valid",
      keyType: "ec-p256",
      subjectAltName: "URI:spiffe://example.org/workload",
      fingerprint: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
    });
    expect(admin(["cert", "show", serial, "--pem"]).stdout).toBe(leafPem);
    // openssl's colon form of the serial finds it too.
    const colons = serial.toUpperCase().match(/../g)!.join(":");
    expect(admin(["cert", "show", colons]).stdout).toMatch(new RegExp(`^serial +${serial}$`, "m"));
  });

  it("revokes once, then answers 409 alreadyRevoked", async () => {
    const r = admin(["cert", "revoke", serial, "--reason", "keyCompromise"]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout.trim()).toBe(`Revoked ${serial} (spiffe://example.org/workload): keyCompromise`);
    expect(json(admin(["cert", "show", serial, "--json"]))).toMatchObject({
      status: "revoked",
      revocationReason: "keyCompromise",
    });

    const again = admin(["cert", "revoke", serial]);
    expect(again.code).toBe(1);
    expect(oneLine(again)).toEqual([`stint cert revoke: certificate ${serial} is already revoked`]);
    const raw = await call("POST", `/admin/certificates/${serial}/revoke`, adminCredential(), {});
    expect(raw).toMatchObject({
      status: 409,
      type: "application/problem+json",
      json: { type: "urn:ietf:params:acme:error:alreadyRevoked", status: 409 },
    });
  });
});

describe("stint audit", () => {
  it("lists the admin actions with the admin certificate as actor", async () => {
    const records = json<{ seq: number; actor: string; action: string }[]>(
      admin(["audit", "--json", "--limit", "10000"]),
    );
    const byAdmin = new Set(records.filter((r) => r.actor === ADMIN_ID).map((r) => r.action));
    expect([...byAdmin].sort()).toEqual(["cert.revoke", "entry.create", "entry.delete", "join_token.create"]);
    expect(records.map((r) => r.seq)).toEqual(records.map((_, i) => i + 1));

    const page = json<{ seq: number }[]>(admin(["audit", "--after", "2", "--limit", "2", "--json"]));
    expect(page.map((r) => r.seq)).toEqual([3, 4]);
    // The API pages with `next`; the text output says how to get the next page.
    const raw = await call("GET", "/admin/audit?after=2&limit=2", adminCredential());
    expect(raw).toMatchObject({ status: 200, json: { next: 4 } });
    expect((raw.json.records as { seq: number }[]).map((r) => r.seq)).toEqual([3, 4]);
    expect(admin(["audit", "--limit", "2"]).stdout).toMatch(/\nmore: stint audit --after 2\n$/);
    expect(admin(["audit"]).stdout).toMatch(new RegExp(`^\\d+ +\\S+ +${ADMIN_ID} +cert\\.revoke `, "m"));
  });
});

describe("who the admin API refuses", () => {
  it("a request without a client certificate: 401", async () => {
    const r = await call("GET", "/admin/entries", null);
    expect(r.status).toBe(401);
    expect(r.type).toBe("application/problem+json");
    expect(r.json).toMatchObject({
      type: "urn:ietf:params:acme:error:unauthorized",
      detail: expect.stringMatching(/needs the admin client certificate/),
    });
  });

  it("a workload certificate from the same CA: 403, and nothing is created", async () => {
    const out = join(dir, "intruder");
    expect(
      stint(["ca", "issue", "--spiffe-id", "spiffe://example.org/intruder", "--out", out], env).code,
    ).toBe(0);
    const workload = {
      cert: readFileSync(join(out, "cert.pem"), "utf8"),
      key: readFileSync(join(out, "key.pem"), "utf8"),
    };
    const before = admin(["entry", "list", "--json"]).stdout;
    for (const [method, path, body] of [
      ["GET", "/admin/entries", undefined],
      ["GET", "/admin/audit", undefined],
      ["POST", "/admin/entries", { spiffeId: "spiffe://example.org/x", selectors: ["k8s:ns:x"] }],
      ["POST", "/admin/join-tokens", { spiffeId: "spiffe://example.org/x" }],
    ] as const) {
      const r = await call(method, path, workload, body);
      expect(r.status).toBe(403);
      expect(r.json.detail).toBe(
        `client certificate for spiffe://example.org/intruder may not use the admin API; only ${ADMIN_ID} may (its credential is in <dataDir>/admin)`,
      );
    }
    expect(admin(["entry", "list", "--json"]).stdout).toBe(before);
  });
});

describe("bad input changes nothing", () => {
  it.each([
    [
      "a bad selector",
      ["entry", "create", "--spiffe-id", "spiffe://example.org/web", "--selector", "k8s:namespace:prod"],
      /^stint entry create: selector "k8s:namespace:prod" is not of a known type; selectors are/,
    ],
    [
      "a SPIFFE ID in another trust domain",
      ["entry", "create", "--spiffe-id", "spiffe://evil.example/web", "--selector", "k8s:ns:prod"],
      /^stint entry create: SPIFFE ID spiffe:\/\/evil\.example\/web is outside this CA's trust domain "example\.org"$/,
    ],
    [
      "the admin SPIFFE ID",
      ["entry", "create", "--spiffe-id", ADMIN_ID, "--selector", "k8s:ns:prod"],
      /^stint entry create: SPIFFE IDs under \/stint\/ are reserved for the CA's own certificates \(entry create refuses them\); choose another path, or run `stint ca admin-cert` to replace the admin certificate$/,
    ],
    [
      "a DNS name outside policy",
      [
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--selector",
        "k8s:ns:prod",
        "--dns",
        "web.example.com",
      ],
      /^stint entry create: DNS name "web.example.com" is outside policy \(allowed suffixes: svc.example.org\); add its suffix to policy.dnsSuffixes$/,
    ],
    [
      "a TTL without a unit",
      [
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--selector",
        "k8s:ns:prod",
        "--ttl",
        "30",
      ],
      /^stint entry create: ttl: "30" is not a duration; use a number with a unit, e.g. 90s, 10m, 1h$/,
    ],
    [
      "a TTL over policy.maxTtl",
      [
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--selector",
        "k8s:ns:prod",
        "--ttl",
        "48h",
      ],
      /^stint entry create: requested lifetime 2d is beyond the policy maximum 1d \(policy.maxTtl\)$/,
    ],
    [
      "a join token living longer than a day",
      ["token", "create", "--spiffe-id", "spiffe://example.org/web", "--ttl", "25h"],
      /^stint token create: join token lifetime must be between 1 ms and 24 h/,
    ],
    [
      "an unknown entry id",
      ["entry", "delete", "00000000000000ff"],
      /^stint entry delete: no registration entry with id "00000000000000ff" \(see stint entry list\)$/,
    ],
    [
      "an unknown serial to show",
      ["cert", "show", "01aabbccdd"],
      /^stint cert show: no certificate with serial 01aabbccdd was issued by this CA$/,
    ],
    [
      "an unknown serial to revoke",
      ["cert", "revoke", "01aabbccdd", "--reason", "superseded"],
      /^stint cert revoke: no certificate with serial 01aabbccdd was issued by this CA$/,
    ],
    [
      "a revocation reason RFC 5280 does not allow for leaves",
      ["cert", "revoke", "01aabbccdd", "--reason", "certificateHold"],
      /^stint cert revoke: revocation reason "certificateHold" is not accepted; use one of unspecified \(0\), keyCompromise \(1\)/,
    ],
  ])("%s: one line, exit 1", (_what, args, message) => {
    const entries = admin(["entry", "list", "--json"]).stdout;
    const records = json<{ audit: { records: number } }>(stint(["ca", "status", "--json"], env)).audit
      .records;
    const r = admin(args);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(oneLine(r)).toEqual([expect.stringMatching(message)]);
    expect(admin(["entry", "list", "--json"]).stdout).toBe(entries);
    expect(json<{ audit: { records: number } }>(stint(["ca", "status", "--json"], env)).audit.records).toBe(
      records,
    );
  });

  it("the API refuses misspelt filters, unknown members and bodies that are not JSON objects", async () => {
    const before = admin(["entry", "list", "--json"]).stdout;
    const cred = adminCredential();
    expect(await call("GET", "/admin/entries?spiffe_id=spiffe://example.org/web", cred)).toMatchObject({
      status: 400,
      json: { detail: 'unknown query parameter "spiffe_id"; allowed: spiffeId' },
    });
    expect(
      await call("POST", "/admin/entries", cred, {
        spiffeId: "spiffe://example.org/x",
        selector: ["k8s:ns:x"],
      }),
    ).toMatchObject({
      status: 400,
      json: { detail: 'unknown member "selector"; allowed: spiffeId, selectors, dnsNames, ttl, parent' },
    });
    expect(await call("POST", "/admin/entries", cred, ["k8s:ns:x"])).toMatchObject({
      status: 400,
      json: { detail: "the request body must be a JSON object" },
    });
    expect(await call("GET", "/admin/certificates?limit=0", cred)).toMatchObject({
      status: 400,
      json: { detail: "limit must be a whole number from 1 to 10000" },
    });
    expect(admin(["entry", "list", "--json"]).stdout).toBe(before);
  });

  it("usage mistakes exit 2 before any request", () => {
    for (const args of [
      ["entry", "create", "--spiffe-id", "spiffe://example.org/web"],
      ["entry", "delete"],
      ["token", "create"],
      ["cert", "show", "a", "b"],
      ["cert", "show", "01aa", "--json", "--pem"],
    ]) {
      const r = admin(args);
      expect(r.code).toBe(2);
      expect(oneLine(r)).toEqual([
        expect.stringMatching(/^stint (entry|token|cert) \w+: .*\(see stint .* --help\)$/),
      ]);
    }
  });

  it("a server that is not running", () => {
    const r = stint(["entry", "list", "--server", "https://127.0.0.1:1"], env);
    expect(r.code).toBe(1);
    expect(oneLine(r)).toEqual([
      "stint entry list: cannot reach the CA at https://127.0.0.1:1; is `stint ca serve` running?",
    ]);
  });
});

describe("stint --help", () => {
  it.each([
    [["ca", "admin-cert"]],
    [["entry", "create"]],
    [["entry", "list"]],
    [["entry", "delete"]],
    [["token", "create"]],
    [["cert", "list"]],
    [["cert", "show"]],
    [["cert", "revoke"]],
    [["audit"]],
  ])("stint %j --help", (words) => {
    const r = stint([...words, "--help"]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toMatch(new RegExp(`^usage: stint ${words.join(" ")} `));
  });
});

describe("renewing the admin certificate", () => {
  it("an expired one is refused with the fix, by the CLI and by the server; ca admin-cert renews it", async () => {
    const short = json<{ serial: string; notAfter: string }>(
      stint(["ca", "admin-cert", "--ttl", "2s", "--json"], env),
    );
    const oldKey = readFileSync(join(adminDir, "key.pem"), "utf8");
    await new Promise((r) =>
      setTimeout(r, Math.max(0, new Date(short.notAfter).getTime() - Date.now()) + 1100),
    );

    const r = admin(["entry", "list"]);
    expect(r.code).toBe(1);
    expect(oneLine(r)).toEqual([
      expect.stringMatching(
        /^stint entry list: admin certificate expired; run `stint ca admin-cert` \(it expired at /,
      ),
    ]);
    const raw = await call("GET", "/admin/entries", adminCredential());
    expect(raw).toMatchObject({
      status: 401,
      json: { detail: "admin certificate expired; run `stint ca admin-cert`" },
    });

    const renewed = json<{ serial: string; notAfter: string }>(stint(["ca", "admin-cert", "--json"], env));
    expect(renewed.serial).not.toBe(short.serial);
    expect(readFileSync(join(adminDir, "key.pem"), "utf8")).not.toBe(oldKey);
    expect(statSync(join(adminDir, "key.pem")).mode & 0o777).toBe(0o600);
    expect(admin(["entry", "list"]).code).toBe(0);
  });

  it("a revoked one is refused by the server until ca admin-cert issues another", () => {
    const serial = new X509Certificate(readFileSync(join(adminDir, "cert.pem"))).serialNumber.toLowerCase();
    expect(admin(["cert", "revoke", serial, "--reason", "superseded"]).code).toBe(0);
    const r = admin(["audit"]);
    expect(r.code).toBe(1);
    expect(oneLine(r)).toEqual([
      `stint audit: admin certificate ${serial} is revoked; run \`stint ca admin-cert\``,
    ]);
    expect(stint(["ca", "admin-cert"], env).stdout).toMatch(
      /^Issued admin certificate [0-9a-f]+ until \S+ into /,
    );
    expect(admin(["audit"]).code).toBe(0);
  });
});

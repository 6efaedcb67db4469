import { readFileSync, rmSync } from "node:fs";
import { get } from "node:https";
import { join } from "node:path";
import { startServer, stint } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres";

/** The same CLI and server on the PostgreSQL backend, chosen with STINT_STORE_URL. */

const dir = tempDir();
let db: TestDatabase;
let env: Record<string, string>;

beforeAll(async () => {
  db = await createTestDatabase();
  env = {
    STINT_CA_PASSPHRASE: "pg passphrase",
    STINT_DATA_DIR: join(dir, "ca"),
    STINT_STORE_URL: db.url,
    STINT_TRUST_DOMAIN: "pg.example",
  };
});
afterAll(async () => {
  await db.drop();
  rmSync(dir, { recursive: true, force: true });
});

it("initialises, issues, reports and serves with the store in PostgreSQL", async () => {
  expect(stint(["ca", "init"], env).code).toBe(0);
  const issued = stint(
    ["ca", "issue", "--spiffe-id", "spiffe://pg.example/web", "--out", join(dir, "leaf"), "--json"],
    env,
  );
  expect(issued.code).toBe(0);
  const leaf = join(dir, "leaf", "cert.pem");
  expect(
    openssl(["verify", "-CAfile", join(dir, "ca", "root.pem"), "-untrusted", leaf, leaf]).trim(),
  ).toMatch(/OK$/);

  const rows = await db.query<{ serial: string; spiffe_id: string }>(
    "SELECT serial, spiffe_id FROM certificates WHERE spiffe_id <> 'spiffe://pg.example/stint/admin'",
  );
  expect(rows).toEqual([{ serial: JSON.parse(issued.stdout).serial, spiffe_id: "spiffe://pg.example/web" }]);

  const status = JSON.parse(stint(["ca", "status", "--json"], env).stdout);
  expect(status).toMatchObject({
    backend: "postgres",
    trustDomain: "pg.example",
    certificates: { issued: 2 }, // the admin certificate from ca init, and the leaf
    audit: { intact: true },
  });

  const server = await startServer([], env);
  try {
    const root = readFileSync(join(dir, "ca", "root.pem"), "utf8");
    const health = await new Promise<string>((resolve, reject) =>
      get(`${server.url}/health`, { ca: root }, (res) => {
        let body = "";
        res.on("data", (d) => {
          body += d;
        });
        res.on("end", () => resolve(body));
      }).on("error", reject),
    );
    expect(JSON.parse(health)).toMatchObject({ status: "ok", trustDomain: "pg.example" });
  } finally {
    await server.stop();
  }
  const password = new URL(db.url).password;
  for (const text of [server.logs().join("\n"), issued.stdout, issued.stderr]) {
    expect(text).not.toContain(db.url);
    if (password) expect(text).not.toContain(password);
  }
});

it("rotates, taints and revokes an intermediate with the store in PostgreSQL, and a running server takes it up", async () => {
  const server = await startServer([], env);
  try {
    const active = () =>
      JSON.parse(stint(["ca", "status", "--json"], env).stdout).issuers.find(
        (i: { kind: string; state: string }) => i.kind === "intermediate" && i.state === "active",
      ).id as string;
    const first = active();
    const rotated = JSON.parse(stint(["ca", "rotate", "--json"], env).stdout);
    expect(rotated).toMatchObject({ retired: { id: first }, activated: { state: "active" } });
    expect(active()).toBe(rotated.activated.id);
    expect(stint(["ca", "taint", first], env).code).toBe(0);
    // The leaf and admin certificate of the first intermediate were never replaced.
    expect(stint(["ca", "revoke-issuer", first], env)).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("have not been replaced yet"),
    });
    expect(JSON.parse(stint(["ca", "revoke-issuer", first, "--force", "--json"], env).stdout)).toMatchObject({
      revoked: first,
      rootCrlSigned: true,
    });
    const taken = (line: string) => line.includes('"issuers changed"') && line.includes(first);
    const until = Date.now() + 20_000;
    while (!server.logs().some((l) => taken(l) && l.includes('"revokedIssuers":["'))) {
      if (Date.now() > until)
        throw new Error(`the server did not take up the revocation:\n${server.logs().join("\n")}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await server.stop();
  }
});

it("names the database, not the password, when PostgreSQL cannot be reached", () => {
  const r = stint(["ca", "status"], {
    ...env,
    STINT_STORE_URL: "postgres://stint:s3cret-pw@127.0.0.1:1/nowhere",
  });
  expect(r.code).toBe(1);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toContain("127.0.0.1:1/nowhere");
  expect(r.stderr).not.toContain("s3cret-pw");
});

it("refuses a store URL that is not PostgreSQL without echoing it", () => {
  const r = stint(["ca", "status"], { ...env, STINT_STORE_URL: "mysql://root:hunter2@db/ca" });
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/STINT_STORE_URL/);
  expect(r.stderr).not.toContain("hunter2");
});

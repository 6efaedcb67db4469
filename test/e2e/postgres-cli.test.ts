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

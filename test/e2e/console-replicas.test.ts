import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { httpsCall } from "../helpers/https";
import { tempDir } from "../helpers/openssl";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres";

/**
 * Console sessions with two `stint ca serve` replicas on one PostgreSQL
 * store, as behind a load balancer: a login code made by one is redeemed by
 * the other once, the session and its CSRF token hold on both, logging out on
 * one ends it on both, and a restarted replica keeps it.
 */

const dir = tempDir("stint-console-replicas-");
const dataDir = join(dir, "ca");
let db: TestDatabase;
let env: Record<string, string>;
let rootPem: string;
const replicas: ServerProcess[] = [];

interface Answer {
  status: number;
  body: string;
  setCookie: string[];
}

async function call(
  base: string,
  method: string,
  path: string,
  opts: { cookie?: string; form?: Record<string, string> } = {},
): Promise<Answer> {
  const res = await httpsCall(new URL(path, base), {
    method,
    ca: rootPem,
    ...(opts.form && { body: new URLSearchParams(opts.form).toString() }),
    headers: {
      ...(opts.cookie ? { cookie: opts.cookie } : {}),
      // What a browser sends with a form posted from this origin.
      ...(opts.form ? { "content-type": "application/x-www-form-urlencoded", origin: base } : {}),
    },
  });
  return { status: res.status, body: res.text, setCookie: res.headers["set-cookie"] ?? [] };
}

const csrfOf = (page: string): string => {
  const m = /name="csrf" value="([^"]+)"/.exec(page);
  if (!m) throw new Error("the page has no CSRF field");
  return m[1]!;
};

beforeAll(async () => {
  db = await createTestDatabase();
  env = { STINT_DATA_DIR: dataDir, STINT_STORE_URL: db.url, STINT_TRUST_DOMAIN: "replicas.example" };
  expect(stint(["ca", "init", "--insecure-no-passphrase"], env).code).toBe(0);
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  for (let i = 0; i < 2; i++) replicas.push(await startServer(["--insecure-no-passphrase"], env));
}, 60_000);

afterAll(async () => {
  await Promise.all(replicas.map((r) => r.stop()));
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

it("redeems a code once on any replica; the session, its CSRF token and logout hold on every replica", async () => {
  const [a, b] = replicas.map((r) => r.url) as [string, string];
  const login = stint(["console", "login", "--user", "dana", "--server", a, "--json"], env);
  expect(login.code).toBe(0);
  const code = new URL(JSON.parse(login.stdout).url).searchParams.get("code")!;

  const redeemed = await call(b, "GET", `/console/login?code=${code}`);
  expect(redeemed.status).toBe(303);
  const cookie = redeemed.setCookie[0]!.split(";")[0]!;
  expect(cookie).toMatch(/^__Host-stint-console=.+/);
  expect((await call(a, "GET", `/console/login?code=${code}`)).status).toBe(401);

  const onA = await call(a, "GET", "/console/fleet", { cookie });
  expect(onA.status).toBe(200);
  expect(onA.body).toContain("dana");
  const onB = await call(b, "GET", "/console/entries", { cookie });
  expect(csrfOf(onB.body)).toBe(csrfOf(onA.body));

  // A token made on one replica's page creates an entry through the other; a wrong one is refused.
  const entry = { spiffeId: "spiffe://replicas.example/svc/x", selectors: "k8s:ns:prod" };
  const forged = await call(a, "POST", "/console/actions/entry-create", {
    cookie,
    form: { ...entry, csrf: `${csrfOf(onB.body)}x` },
  });
  expect(forged.status).toBe(403);
  const created = await call(a, "POST", "/console/actions/entry-create", {
    cookie,
    form: { ...entry, csrf: csrfOf(onB.body) },
  });
  expect(created.status).toBe(200);
  expect(created.body).toContain("Created entry");

  // A restarted replica still knows the session.
  await replicas[0]!.stop();
  replicas[0] = await startServer(["--insecure-no-passphrase"], env);
  const restarted = replicas[0].url;
  expect((await call(restarted, "GET", "/console/fleet", { cookie })).status).toBe(200);

  const out = await call(b, "POST", "/console/logout", { cookie, form: { csrf: csrfOf(onB.body) } });
  expect(out.status).toBe(200);
  for (const url of [restarted, b]) {
    const after = await call(url, "GET", "/console/fleet", { cookie });
    expect(after.status).toBe(401);
    expect(after.body).not.toContain("spiffe://replicas.example");
  }
}, 90_000);

import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect, type TLSSocket } from "node:tls";
import { waitFor } from "../helpers/agent";
import { type RunResult, type ServerProcess, startServer, stint } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";
import { createTestDatabase } from "../helpers/postgres";

/**
 * The admin API trusts only the admin certificate this CA issued last, from
 * an issuer in good standing, and checks it on every request: a certificate
 * minted with a leaked intermediate key (naming the admin ID, reusing a
 * recorded serial) is refused before and after the issuer is revoked, the
 * genuine one once its issuer is rotated away from, tainted or revoked, and
 * an expired one on a resumed TLS session. Real `stint ca serve`, real TLS.
 */

const TD = "trust.example";
const ADMIN_ID = `spiffe://${TD}/stint/admin`;
const dir = tempDir("stint-admin-trust-");
const dataDir = join(dir, "ca");
const adminDir = join(dataDir, "admin");
const env = {
  STINT_DATA_DIR: dataDir,
  STINT_TRUST_DOMAIN: TD,
  STINT_POLICY_MIN_TTL: "1s",
  STINT_FEED_POLL_INTERVAL: "200ms",
};

let server: ServerProcess;
let rootPem: string;

const run = (args: string[]): RunResult => stint(args, env);
const runJson = <T>(args: string[]): T => {
  const r = run([...args, "--json"]);
  if (r.code !== 0) throw new Error(`stint ${args.join(" ")} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
};
/** A CLI admin command against the running server. */
const admin = (args: string[]): RunResult => run([...args, "--server", server.url]);
const oneLine = (r: RunResult) => r.stderr.trim().split("\n");

interface Credential {
  cert: string;
  key: string;
}

const adminCredential = (): Credential => ({
  cert: readFileSync(join(adminDir, "cert.pem"), "utf8"),
  key: readFileSync(join(adminDir, "key.pem"), "utf8"),
});

/** The leaf's serial as the CA records it (lowercase hex), read by OpenSSL. */
const serialOf = (chainPem: string): string =>
  openssl(["x509", "-noout", "-serial"], chainPem)
    .trim()
    .replace(/^serial=/, "")
    .toLowerCase();

function activeIntermediate(): string {
  const issuers = runJson<{ issuers: { id: string; kind: string; state: string }[] }>([
    "ca",
    "status",
  ]).issuers;
  return issuers.find((i) => i.kind === "intermediate" && i.state === "active")!.id;
}

/**
 * What an attacker holding an intermediate's key can make: a client
 * certificate naming the admin ID with a chosen serial, chained to that
 * intermediate, so the TLS handshake accepts it.
 */
function mintAdmin(name: string, serial: string, issuer: { certPem: string; keyPath: string }): Credential {
  const p = (ext: string) => join(dir, `${name}.${ext}`);
  writeFileSync(p("issuer.pem"), issuer.certPem);
  writeFileSync(
    p("cnf"),
    "[req]\ndistinguished_name = dn\n[dn]\n[leaf]\n" +
      "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n" +
      `extendedKeyUsage = clientAuth\nsubjectAltName = URI:${ADMIN_ID}\n` +
      "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
  );
  openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p("key")]);
  openssl(["req", "-new", "-key", p("key"), "-subj", `/O=${TD}`, "-config", p("cnf"), "-out", p("csr")]);
  openssl(
    ["x509", "-req", "-in", p("csr"), "-CA", p("issuer.pem"), "-CAkey", issuer.keyPath].concat([
      "-set_serial",
      `0x${serial}`,
      "-days",
      "1",
      "-extfile",
      p("cnf"),
      "-extensions",
      "leaf",
      "-out",
      p("pem"),
    ]),
  );
  expect(serialOf(readFileSync(p("pem"), "utf8"))).toBe(serial);
  return { cert: readFileSync(p("pem"), "utf8") + issuer.certPem, key: readFileSync(p("key"), "utf8") };
}

interface Answer {
  status: number;
  detail: string;
  /** Whether the TLS session was resumed from the `session` passed in. */
  reused: boolean;
  /** A session ticket to resume this connection with later. */
  session: Buffer | undefined;
}

/**
 * One GET over its own TLS connection (HTTP/1.1 by hand), optionally resuming
 * an earlier TLS session, or keeping this one's: then it waits for the
 * server's session ticket before closing.
 */
function get(
  path: string,
  client: Credential | null,
  opts: { session?: Buffer; keepSession?: boolean; url?: string } = {},
): Promise<Answer> {
  const { session, keepSession = false, url = server.url } = opts;
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    let ticket: Buffer | undefined;
    let data = "";
    const socket: TLSSocket = connect({
      host: hostname,
      port: Number(port),
      ca: rootPem,
      ...(client ?? {}),
      ...(session ? { session } : {}),
    });
    socket.setTimeout(15_000, () => socket.destroy(new Error(`no answer to GET ${path}`)));
    socket.on("session", (s: Buffer) => {
      ticket = s;
    });
    socket.once("secureConnect", () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\nAccept: application/json\r\n\r\n`);
    });
    socket.on("data", (d: Buffer) => {
      data += d.toString("utf8");
      const head = data.indexOf("\r\n\r\n");
      const length = /\r\ncontent-length: (\d+)/i.exec(data)?.[1];
      if (head < 0 || length === undefined || data.length < head + 4 + Number(length)) return;
      const body = data.slice(head + 4, head + 4 + Number(length));
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1]);
      const reused = socket.isSessionReused();
      const finish = () => {
        socket.destroy();
        const json = JSON.parse(body) as { detail?: string };
        resolve({ status, detail: json.detail ?? "", reused, session: ticket });
      };
      // TLS 1.3 tickets arrive after the handshake, so one may still be on its way.
      if (ticket || !keepSession) finish();
      else socket.once("session", finish);
    });
    socket.on("error", reject);
  });
}

/** Asks until `settled` holds for the answer (at most 10 s), then returns the last answer. */
async function waitForAnswer(client: Credential, settled: (a: Answer) => boolean): Promise<Answer> {
  const until = Date.now() + 10_000;
  for (;;) {
    const a = await get("/admin/entries", client);
    if (settled(a) || Date.now() > until) return a;
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  runJson(["ca", "init", "--insecure-no-passphrase"]);
  rootPem = readFileSync(join(dataDir, "root.pem"), "utf8");
  server = await startServer(["--insecure-no-passphrase"], env);
});
afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("certificates minted with a leaked intermediate key", () => {
  let workloadSerial: string;
  let leaked: { id: string; certPem: string; keyPath: string };
  let minted: { workload: Credential; admin: Credential };

  beforeAll(() => {
    const id = activeIntermediate();
    leaked = {
      id,
      certPem: readFileSync(join(dataDir, "intermediate.pem"), "utf8"),
      keyPath: join(dataDir, "keys", `${id}.key.pem`),
    };
    workloadSerial = runJson<{ serial: string }>([
      "ca",
      "issue",
      "--spiffe-id",
      `spiffe://${TD}/workload`,
      "--out",
      join(dir, "workload"),
    ]).serial;
    minted = {
      workload: mintAdmin("minted-workload-serial", workloadSerial, leaked),
      admin: mintAdmin("minted-admin-serial", serialOf(adminCredential().cert), leaked),
    };
  });

  it("the genuine admin certificate is accepted", async () => {
    expect(await get("/admin/entries", adminCredential())).toMatchObject({ status: 200 });
  });

  it.each([
    ["a workload's serial", "workload"],
    ["the admin certificate's own serial", "admin"],
  ] as const)("one reusing %s is refused, and the server logs a warning", async (_what, which) => {
    const warnings = () =>
      server.logs().filter((l) => l.includes('"level":"warn"') && l.includes("was not issued by this CA"));
    const before = warnings().length;
    const r = await get("/admin/entries", minted[which]);
    expect(r.status).toBe(403);
    expect(r.detail).toMatch(/is not the admin certificate this CA issued last; run `stint ca admin-cert`/);
    const logged = await waitFor("the forgery warning", () => warnings().length > before && warnings());
    expect(logged.at(-1)).toContain(`"serial":"${serialOf(minted[which].cert)}"`);
    expect(logged.join("\n")).not.toMatch(/PRIVATE KEY/);
  });

  it("the minted ones stay refused, and the genuine one is refused, once its issuer is retired, tainted and revoked", async () => {
    const rotated = run(["ca", "rotate", "--insecure-no-passphrase"]);
    expect(rotated.code).toBe(0);
    const genuine = adminCredential();
    for (const [step, args] of [
      ["retired", null],
      ["tainted", ["ca", "taint", leaked.id]],
      ["revoked", ["ca", "revoke-issuer", leaked.id, "--force"]],
    ] as const) {
      if (args) expect(run([...args])).toMatchObject({ code: 0 });
      // Refused at once (issuer states are read from the store); the reason names the revocation
      // once the server has taken it up, within feed.pollInterval.
      const r = await waitForAnswer(
        genuine,
        (a) => a.status !== 403 || a.detail.includes(`which is ${step}`),
      );
      expect({ step, status: r.status }).toEqual({ step, status: 403 });
      expect(r.detail).toMatch(
        new RegExp(`from intermediate ${leaked.id}, which is ${step}; run \`stint ca admin-cert\``),
      );
      for (const forged of [minted.workload, minted.admin]) {
        expect({ step, status: (await get("/admin/entries", forged)).status }).toEqual({ step, status: 403 });
      }
    }
    // ca rotate told the operator so.
    expect(rotated.stdout).toMatch(
      /run `stint ca admin-cert` before the next entry, token, cert or audit command/,
    );
    // The CLI says the same in one line.
    expect(oneLine(admin(["entry", "list"]))).toEqual([
      expect.stringMatching(
        /^stint entry list: admin certificate [0-9a-f]+ comes from intermediate .* revoked/,
      ),
    ]);
    // The runbook's fix: a new admin certificate from the active intermediate is accepted at once.
    expect(run(["ca", "admin-cert"]).code).toBe(0);
    expect(admin(["entry", "list"])).toMatchObject({ code: 0 });
    expect(await get("/admin/entries", adminCredential())).toMatchObject({ status: 200 });
    for (const forged of [minted.workload, minted.admin]) {
      expect((await get("/admin/entries", forged)).status).toBe(403);
    }
  });

  it("one minted with the active intermediate's key, reusing the current admin serial, is refused", async () => {
    const id = activeIntermediate();
    const current = adminCredential();
    const forged = mintAdmin("minted-active", serialOf(current.cert), {
      certPem: readFileSync(join(dataDir, "intermediate.pem"), "utf8"),
      keyPath: join(dataDir, "keys", `${id}.key.pem`),
    });
    expect((await get("/admin/entries", forged)).status).toBe(403);
    expect((await get("/admin/entries", current)).status).toBe(200);
  });
});

describe("only the admin certificate issued last", () => {
  it("a superseded one is refused once stint ca admin-cert has issued the next", async () => {
    const before = adminCredential();
    expect((await get("/admin/entries", before)).status).toBe(200);
    expect(run(["ca", "admin-cert"]).code).toBe(0);
    const r = await get("/admin/entries", before);
    expect(r.status).toBe(403);
    expect(r.detail).toMatch(/is not the admin certificate this CA issued last/);
    expect((await get("/admin/entries", adminCredential())).status).toBe(200);
  });
});

describe("validity is checked on every request", () => {
  it("an expired admin certificate is refused on a resumed TLS session", async () => {
    const short = runJson<{ notAfter: string }>(["ca", "admin-cert", "--ttl", "4s"]);
    const cred = adminCredential();
    const first = await get("/admin/entries", cred, { keepSession: true });
    expect(first).toMatchObject({ status: 200, reused: false });
    expect(first.session).toBeDefined();
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(short.notAfter) - Date.now()) + 1100));

    const resumed = await get("/admin/entries", cred, { session: first.session });
    // The server did not verify the chain again: only the per-request check can refuse it.
    expect(resumed.reused).toBe(true);
    expect(resumed).toMatchObject({
      status: 401,
      detail: "admin certificate expired; run `stint ca admin-cert`",
    });
    expect((await get("/health", null)).status).toBe(200);
    expect(run(["ca", "admin-cert"]).code).toBe(0);
  }, 30_000);
});

describe("with several replicas on one PostgreSQL store", () => {
  it("each replica accepts only the admin certificate issued last, at once", async () => {
    const db = await createTestDatabase();
    const pgDir = join(dir, "pg");
    const pgEnv = { ...env, STINT_DATA_DIR: pgDir, STINT_STORE_URL: db.url };
    const replicas: ServerProcess[] = [];
    try {
      expect(stint(["ca", "init", "--insecure-no-passphrase"], pgEnv).code).toBe(0);
      const pgRoot = readFileSync(join(pgDir, "root.pem"), "utf8");
      for (let i = 0; i < 2; i++) replicas.push(await startServer(["--insecure-no-passphrase"], pgEnv));
      const cred = () => ({
        cert: readFileSync(join(pgDir, "admin", "cert.pem"), "utf8"),
        key: readFileSync(join(pgDir, "admin", "key.pem"), "utf8"),
      });
      const statuses = async (c: Credential) => {
        const saved = rootPem;
        rootPem = pgRoot;
        try {
          return await Promise.all(
            replicas.map(async (r) => (await get("/admin/entries", c, { url: r.url })).status),
          );
        } finally {
          rootPem = saved;
        }
      };
      const old = cred();
      expect(await statuses(old)).toEqual([200, 200]);
      expect(stint(["ca", "admin-cert"], pgEnv).code).toBe(0);
      expect(await statuses(old)).toEqual([403, 403]);
      expect(await statuses(cred())).toEqual([200, 200]);
    } finally {
      await Promise.all(replicas.map((r) => r.stop()));
      await db.drop();
    }
  }, 60_000);
});

import { generateKeyPairSync } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { Agent } from "node:https";
import { connect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { ADMIN_PATHS, type AdminJoinToken } from "../../acme/admin";
import { AcmeClient, type AcmeProblem, joinTokenEvidence } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { AdminClient } from "../../cli/admin-client";
import { freePort } from "../helpers/agent";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";
import { createTestDatabase, type TestDatabase } from "../helpers/postgres";

/**
 * Two `ca serve` replicas on one store, behind one address (a TCP proxy
 * that sends each new connection to the replica the test names), each
 * keeping ACME state in memory (ca/store/acme-cache.ts). One order moves
 * between them step by step, and what one replica changes must be what the
 * other answers next: on PostgreSQL, and on one SQLite file shared by two
 * processes.
 */

const TD = "replicas.example";
const newKey = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
const problemOf = (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: AcmeProblem) => e,
  );

interface Replicas {
  url: string;
  rootPem: string;
  use(replica: "A" | "B"): void;
  token(spiffeId: string): Promise<string>;
  stop(): Promise<void>;
}

async function startReplicas(dir: string, env: Record<string, string>, extra: string[]): Promise<Replicas> {
  const port = await freePort();
  const url = `https://127.0.0.1:${port}`;
  const dataDir = join(dir, "ca");
  const args = ["--data-dir", dataDir, "--trust-domain", TD, "--public-url", url, ...extra];
  // Each listens on a port of its own; their logs name the public URL, the proxy's.
  const ports = { A: await freePort(), B: await freePort() };
  const a: ServerProcess = await startServer([...args, "--listen", `127.0.0.1:${ports.A}`], env);
  const b: ServerProcess = await startServer([...args, "--listen", `127.0.0.1:${ports.B}`], env);
  let target: "A" | "B" = "A";
  const sockets = new Set<Socket>();
  const proxy: Server = createServer((client) => {
    const upstream = connect(ports[target], "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.once("close", () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  await new Promise<void>((r) => proxy.listen(port, "127.0.0.1", r));
  const admin = await AdminClient.fromFlags({
    "data-dir": dataDir,
    server: `https://127.0.0.1:${ports.A}`,
    "ca-file": join(dataDir, "root.pem"),
  });
  return {
    url,
    rootPem: readFileSync(join(dataDir, "root.pem"), "utf8"),
    use: (replica) => {
      target = replica;
    },
    // In this process (stint token create would block the proxy's event loop), straight to replica A.
    token: async (spiffeId) => {
      const made = await admin.post<AdminJoinToken>(ADMIN_PATHS.joinTokens, { spiffeId, ttl: "10m" });
      return made.token;
    },
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => proxy.close(r));
      await Promise.all([a.stop(), b.stop()]);
    },
  };
}

/** A client whose every request opens a new connection, so it reaches the replica named last. */
async function client(r: Replicas): Promise<AcmeClient> {
  const c = await AcmeClient.connect({
    directoryUrl: `${r.url}/acme/directory`,
    ca: r.rootPem,
    accountKey: newKey(),
    agent: new Agent({ keepAlive: false, ca: r.rootPem }),
  });
  await c.newAccount();
  return c;
}

function scenarios(
  backend: string,
  setup: () => Promise<{ dir: string; env: Record<string, string>; args: string[] }>,
) {
  describe(backend, () => {
    let r: Replicas;
    let cleanup: () => Promise<void>;

    beforeAll(async () => {
      const { dir, env, args } = await setup();
      r = await startReplicas(dir, env, args);
      cleanup = async () => {
        await r.stop();
        rmSync(dir, { recursive: true, force: true });
      };
    }, 120_000);
    afterAll(() => cleanup?.());

    it("A orders, B answers the challenge, A finalizes at once and serves the certificate", async () => {
      const spiffeId = `spiffe://${TD}/interleave`;
      const c = await client(r);
      r.use("A");
      const order = await c.newOrder([{ type: "spiffe", value: spiffeId }]);
      const authz = await c.getAuthorization(order.authorizations[0]); // A now holds it, pending
      expect(authz.status).toBe("pending");
      r.use("B");
      const challenge = authz.challenges.find((ch) => ch.type === "attest-01")!;
      const answered = await c.attest(
        challenge.url,
        "join_token",
        joinTokenEvidence(await r.token(spiffeId)),
      );
      expect(answered.status).toBe("valid");
      r.use("A");
      expect((await c.getAuthorization(authz.url)).status).toBe("valid");
      const valid = await c.finalize(order, buildCsr({ key: newKey(), spiffeId }));
      expect(valid.status).toBe("valid");
      r.use("B");
      expect((await c.getOrder(order.url)).status).toBe("valid");
      const pem = await c.downloadCertificate(valid.certificate!);
      expect(pem).toContain("BEGIN CERTIFICATE");
      c.close();
    }, 60_000);

    it("A finalizes straight after B made the order ready, with no read of it on A in between", async () => {
      const spiffeId = `spiffe://${TD}/ready-elsewhere`;
      const c = await client(r);
      r.use("A");
      const order = await c.newOrder([{ type: "spiffe", value: spiffeId }]);
      expect((await c.getOrder(order.url)).status).toBe("pending"); // A holds the order as pending
      r.use("B");
      const authz = await c.getAuthorization(order.authorizations[0]);
      const challenge = authz.challenges.find((ch) => ch.type === "attest-01")!;
      await c.attest(challenge.url, "join_token", joinTokenEvidence(await r.token(spiffeId)));
      expect((await c.getOrder(order.url)).status).toBe("ready"); // B wrote ready
      r.use("A");
      const valid = await c.finalize(order, buildCsr({ key: newKey(), spiffeId }));
      expect(valid.status).toBe("valid");
      // A second finalize, now on B, must see the order A made valid.
      r.use("B");
      const again = await problemOf(c.finalize(order, buildCsr({ key: newKey(), spiffeId })));
      expect(again).toMatchObject({ type: "urn:ietf:params:acme:error:orderNotReady" });
      c.close();
    }, 60_000);

    it("A answers with what B changed, not with the copy it held: a deactivated authorization and account", async () => {
      const spiffeId = `spiffe://${TD}/stale`;
      const c = await client(r);
      r.use("A");
      const order = await c.newOrder([{ type: "spiffe", value: spiffeId }]);
      const authzUrl = order.authorizations[0];
      expect((await c.getAuthorization(authzUrl)).status).toBe("pending");
      r.use("B");
      expect((await c.deactivateAuthorization(authzUrl)).status).toBe("deactivated");
      r.use("A");
      expect((await c.getAuthorization(authzUrl)).status).toBe("deactivated");
      expect((await c.getOrder(order.url)).status).toBe("invalid");
      r.use("B");
      await c.deactivateAccount();
      r.use("A");
      const refused = await problemOf(c.newOrder([{ type: "spiffe", value: spiffeId }]));
      expect(refused).toMatchObject({
        type: "urn:ietf:params:acme:error:unauthorized",
        detail: expect.stringContaining("deactivated"),
      });
      c.close();
    }, 60_000);
  });
}

scenarios("SQLite, two processes on one file", async () => {
  const dir = tempDir("stint-replicas-sqlite-");
  const init = stint([
    "ca",
    "init",
    "--insecure-no-passphrase",
    "--data-dir",
    join(dir, "ca"),
    "--trust-domain",
    TD,
  ]);
  if (init.code !== 0) throw new Error(`stint ca init failed: ${init.stderr}`);
  return { dir, env: {}, args: ["--insecure-no-passphrase"] };
});

let db: TestDatabase | undefined;
afterAll(async () => {
  await db?.drop();
});

scenarios("PostgreSQL", async () => {
  const dir = tempDir("stint-replicas-pg-");
  db = await createTestDatabase();
  const env = { STINT_CA_PASSPHRASE: "replica passphrase", STINT_STORE_URL: db.url };
  const init = stint(["ca", "init", "--data-dir", join(dir, "ca"), "--trust-domain", TD], env);
  if (init.code !== 0) throw new Error(`stint ca init failed: ${init.stderr}`);
  return { dir, env, args: [] };
});

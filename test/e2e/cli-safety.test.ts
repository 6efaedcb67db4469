import "reflect-metadata";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { STINT, snapshot, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * Issue 19, safer commands: `ca issue --out` never replaces files, no command
 * issues, registers or revokes an identity under the CA's reserved /stint/
 * path, a busy listen address gets one line that says so, and `stint verify`
 * without a feed says that it did not check revocation.
 */

const root = tempDir();
const dir = join(root, "ca");
const env = {
  STINT_CA_PASSPHRASE: "correct horse battery staple",
  STINT_DATA_DIR: dir,
  STINT_TRUST_DOMAIN: "example.org",
};
let busy: Server;
let busyPort: number;

beforeAll(async () => {
  expect(stint(["ca", "init"], env).code).toBe(0);
  busy = createServer();
  await new Promise<void>((r) => busy.listen(0, "127.0.0.1", r));
  busyPort = (busy.address() as { port: number }).port;
});
afterAll(async () => {
  await new Promise((r) => busy.close(r));
  rmSync(root, { recursive: true, force: true });
});

function issued(): number {
  return (JSON.parse(stint(["ca", "status", "--json"], env).stdout) as { certificates: { issued: number } })
    .certificates.issued;
}

test("ca issue --out refuses to replace existing files before signing anything, unless --force", () => {
  const out = join(root, "web");
  const args = ["ca", "issue", "--spiffe-id", "spiffe://example.org/web", "--out", out];
  expect(stint(args, env).code).toBe(0);
  const files = snapshot(out);
  const store = snapshot(dir);

  const again = stint(args, env);
  expect(again.code).toBe(1);
  expect(again.stderr).toContain(`${join(out, "key.pem")} already exists`);
  expect(again.stderr).toContain("--force");
  expect(snapshot(out)).toEqual(files);
  expect(snapshot(dir)).toEqual(store); // no certificate was issued for the refused run

  // One file is enough to refuse: a half-written directory is not silently completed.
  const partial = join(root, "partial");
  mkdirSync(partial);
  writeFileSync(join(partial, "bundle.pem"), "mine\n");
  expect(stint(["ca", "issue", "--spiffe-id", "spiffe://example.org/web", "--out", partial], env).code).toBe(
    1,
  );
  expect(readFileSync(join(partial, "bundle.pem"), "utf8")).toBe("mine\n");

  const before = issued();
  expect(stint([...args, "--force"], env).code).toBe(0);
  expect(snapshot(out)).not.toEqual(files);
  expect(issued()).toBe(before + 1);
});

const RESERVED_CASES = [
  ["ca", "issue", "--spiffe-id", "spiffe://example.org/stint/admin", "--out", "adm"],
  ["ca", "issue", "--spiffe-id", "spiffe://example.org/stint", "--out", "adm"],
  ["ca", "issue", "--spiffe-id", "spiffe://example.org/stint/server/x", "--out", "adm"],
  ["ca", "revoke", "--spiffe-id", "spiffe://example.org/stint/admin", "--reason", "keyCompromise"],
  ["entry", "create", "--spiffe-id", "spiffe://example.org/stint/admin", "--selector", "k8s:ns:x"],
];

test.each(RESERVED_CASES.map((args) => [args.slice(0, 4).join(" "), args]))(
  "stint %s is refused: reserved path",
  (_name, args) => {
    const before = snapshot(dir);
    const r = stint(
      args.map((a) => (a === "adm" ? join(root, "adm") : a)),
      env,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("reserved for the CA's own certificates");
    expect(snapshot(dir)).toEqual(before);
  },
);

test("a path that only starts with the letters stint is a workload's", () => {
  const r = stint(
    ["ca", "issue", "--spiffe-id", "spiffe://example.org/stinted", "--out", join(root, "ok")],
    env,
  );
  expect(r.code).toBe(0);
});

test("ca serve on a busy address says so in one line, as the agent does", () => {
  const r = spawnSync(process.execPath, [STINT, "ca", "serve", "--listen", `127.0.0.1:${busyPort}`], {
    encoding: "utf8",
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
    timeout: 30_000,
  });
  expect(r.status).toBe(1);
  const last = r.stderr.trim().split("\n").at(-1);
  expect(last).toBe(
    `stint ca serve: cannot serve HTTPS (listen) on 127.0.0.1:${busyPort}: the address is already in use (another stint ca serve, or another server, listens there)`,
  );
});

test("stint verify says whether revocation was checked: not without --feed, in words and in --json", async () => {
  const out = join(root, "verified");
  expect(stint(["ca", "issue", "--spiffe-id", "spiffe://example.org/checked", "--out", out], env).code).toBe(
    0,
  );
  const args = ["verify", join(out, "cert.pem"), "--bundle", join(out, "bundle.pem")];
  const verifyEnv = { XDG_STATE_HOME: join(root, "verify-state") };

  const plain = stint(args, verifyEnv);
  expect(plain.code).toBe(0);
  expect(plain.stdout).toMatch(/^OK spiffe:\/\/example\.org\/checked/);
  expect(plain.stderr.trim()).toBe(
    "stint verify: revocation was not checked (no --feed); a revoked certificate would pass. " +
      "Pass --feed https://CA:PORT (or a feed file) to check it",
  );
  const json = stint([...args, "--json"], verifyEnv);
  expect(json.code).toBe(0);
  expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, revocation: "not-checked" });

  const server = await startServer([], env);
  try {
    const fed = stint([...args, "--feed", server.url], verifyEnv);
    expect(fed).toMatchObject({ code: 0, stderr: "" });
    const fedJson = stint([...args, "--feed", server.url, "--json"], verifyEnv);
    expect(fedJson.code).toBe(0);
    expect(JSON.parse(fedJson.stdout)).toMatchObject({ ok: true, revocation: "checked" });
  } finally {
    await server.stop();
  }
});

import "reflect-metadata";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ServerProcess, startServer, stint } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";

/**
 * Issue 19: `stint ca bootstrap` as `step ca bootstrap`: a fingerprint (ours or
 * OpenSSL's colon form) pins the root, the URL and root are saved, and the
 * admin commands and the agent then need neither the CA's store nor --server
 * nor --ca-url. A wrong fingerprint is refused without showing the server's,
 * by `ca bootstrap` and by the agent alike.
 */

const root = tempDir();
const dir = join(root, "ca");
const caEnv = {
  STINT_CA_PASSPHRASE: "correct horse battery staple",
  STINT_DATA_DIR: dir,
  STINT_TRUST_DOMAIN: "example.org",
};
// The client: no CA store at hand, its own config directory; only the admin credential is copied over.
const clientConfig = join(root, "client-config");
const clientEnv = { STINT_DATA_DIR: join(root, "client"), XDG_CONFIG_HOME: clientConfig };
let server: ServerProcess;
let fingerprint: string;

beforeAll(async () => {
  const init = stint(["ca", "init", "--json"], caEnv);
  expect(init.code).toBe(0);
  fingerprint = (JSON.parse(init.stdout) as { rootFingerprint: string }).rootFingerprint;
  mkdirSync(clientEnv.STINT_DATA_DIR);
  server = await startServer([], caEnv);
});
afterAll(async () => {
  await server?.stop();
  rmSync(root, { recursive: true, force: true });
});

test("stint ca fingerprint prints the root fingerprint ca init printed", () => {
  expect(stint(["ca", "fingerprint"], caEnv)).toMatchObject({ code: 0, stdout: `${fingerprint}\n` });
  expect(stint(["ca", "fingerprint", join(dir, "root.pem")], caEnv).stdout).toBe(`${fingerprint}\n`);
});

test("a fingerprint no root matches is refused, saves nothing, and does not show the real one", () => {
  const wrong = `sha256:${"ab".repeat(32)}`;
  const r = stint(["ca", "bootstrap", "--ca-url", server.url, "--fingerprint", wrong], clientEnv);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`serves no root with fingerprint ${wrong}`);
  const hex = fingerprint.slice("sha256:".length);
  for (const shown of [hex, hex.toUpperCase(), hex.match(/../g)!.join(":").toUpperCase()]) {
    expect(r.stdout + r.stderr).not.toContain(shown);
  }
  expect(existsSync(join(clientConfig, "stint"))).toBe(false);
});

test("a malformed fingerprint is a usage mistake", () => {
  const r = stint(["ca", "bootstrap", "--ca-url", server.url, "--fingerprint", "sha256:abc"], clientEnv);
  expect(r.code).toBe(2);
});

test("bootstrap with OpenSSL's fingerprint form, then admin commands use the saved URL and root", () => {
  // Without a bootstrap the client has neither the store's roots nor the server's address.
  const adminDir = ["--admin-dir", join(dir, "admin")];
  expect(stint(["entry", "list", ...adminDir], clientEnv).code).toBe(1);

  const colon = openssl(["x509", "-in", join(dir, "root.pem"), "-noout", "-fingerprint", "-sha256"]).trim();
  expect(colon).toMatch(/^sha256 Fingerprint=([0-9A-F]{2}:){31}[0-9A-F]{2}$/i);
  const r = stint(["ca", "bootstrap", "--ca-url", server.url, "--fingerprint", colon], clientEnv);
  expect(r).toMatchObject({ code: 0, stderr: "" });
  expect(r.stdout).toContain(fingerprint);

  expect(stint(["ca", "fingerprint"], clientEnv)).toMatchObject({ code: 0, stdout: `${fingerprint}\n` });
  const created = stint(
    ["entry", "create", ...adminDir, "--spiffe-id", "spiffe://example.org/web", "--selector", "k8s:ns:prod"],
    clientEnv,
  );
  expect(created).toMatchObject({ code: 0, stderr: "" });
  expect(stint(["entry", "list", ...adminDir], clientEnv).stdout).toContain("spiffe://example.org/web");

  // A second bootstrap does not silently replace the first.
  const again = stint(["ca", "bootstrap", "--ca-url", server.url, "--fingerprint", fingerprint], clientEnv);
  expect(again.code).toBe(1);
  expect(again.stderr).toContain("--force");
  expect(
    stint(["ca", "bootstrap", "--ca-url", server.url, "--fingerprint", fingerprint, "--force"], clientEnv)
      .code,
  ).toBe(0);
});

test("the agent refuses a wrong --ca-fingerprint without showing the server's, and says what to do", () => {
  const wrong = `sha256:${"cd".repeat(32)}`;
  const state = join(root, "agent-wrong");
  const r = stint(
    ["agent", "--once", "--ca-url", server.url, "--ca-fingerprint", wrong, "--state-dir", state],
    { ...clientEnv, STINT_JOIN_TOKEN: "unused" },
  );
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`serves no root with fingerprint ${wrong}`);
  expect(r.stderr).toContain("`stint ca fingerprint` on the CA host");
  const hex = fingerprint.slice("sha256:".length);
  for (const shown of [hex, hex.toUpperCase(), hex.match(/../g)!.join(":").toUpperCase()]) {
    expect(r.stdout + r.stderr).not.toContain(shown);
  }
  expect(existsSync(join(state, "roots.pem"))).toBe(false);
});

test("the agent uses the CA saved by ca bootstrap when --ca-url and --ca-fingerprint are not given", () => {
  // Runs after the bootstrap test above: clientConfig holds the saved CA.
  const adminDir = ["--admin-dir", join(dir, "admin")];
  const created = stint(
    ["token", "create", ...adminDir, "--spiffe-id", "spiffe://example.org/saved", "--json"],
    clientEnv,
  );
  expect(created).toMatchObject({ code: 0, stderr: "" });
  const tokenFile = join(root, "saved-token");
  writeFileSync(tokenFile, (JSON.parse(created.stdout) as { token: string }).token, { mode: 0o600 });

  const state = join(root, "agent-saved");
  const out = join(state, "out");
  const args = ["agent", "--once", "--state-dir", state, "--out-dir", out, "--join-token-file", tokenFile];
  const r = stint(args, clientEnv);
  expect(r.stderr).not.toMatch(/"level":"error"/);
  expect(r.code).toBe(0);
  // The pinned root is the saved one, and the certificate chains to it.
  expect(readFileSync(join(state, "roots.pem"), "utf8")).toBe(readFileSync(join(dir, "root.pem"), "utf8"));
  const verified = openssl([
    "verify",
    "-CAfile",
    join(out, "bundle.pem"),
    "-untrusted",
    join(out, "cert.pem"),
    join(out, "cert.pem"),
  ]);
  expect(verified.trim()).toBe(`${join(out, "cert.pem")}: OK`);

  // Without a saved CA and without --ca-url, the agent says both ways to name its CA.
  const none = stint(["agent", "--once", "--state-dir", join(root, "agent-none")], {
    ...clientEnv,
    XDG_CONFIG_HOME: join(root, "nothing-saved"),
  });
  expect(none.code).toBe(1);
  expect(none.stderr).toContain("--ca-url");
  expect(none.stderr).toContain("stint ca bootstrap");
});

import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Pkcs11Token } from "../../ca/pkcs11";
import { stint } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";
import { type SoftHsmToken, softHsmToken } from "../helpers/softhsm";

/**
 * Issue 15: the offline host keeps the new root's key in a PKCS#11 token
 * (SoftHSM here). `stint root init` makes it inside the token and prints its
 * URI; `root sign-crl`, `root sign` and `root cross-sign` sign through the
 * token with `--root-key pkcs11:…`. The CA host sees only certificates and a
 * CRL; the token refuses to give the key out.
 */

const top = tempDir("stint-offline-pkcs11-e2e-");
const caDir = join(top, "ca");
const newDir = join(top, "new");
const oldDir = join(top, "old");
let hsm: SoftHsmToken;
afterAll(() => {
  hsm?.cleanup();
  rmSync(top, { recursive: true, force: true });
});

const caEnv = { STINT_DATA_DIR: caDir, STINT_TRUST_DOMAIN: "example.org" };
const at = (...p: string[]) => join(top, ...p);
let offlineEnv: Record<string, string>;
let tokenFlags: string[];

function ok(args: string[], env: Record<string, string>): string {
  const r = stint(args, env);
  expect({ args, ...r }).toMatchObject({ code: 0, stderr: "" });
  return r.stdout;
}

function fails(args: string[], code: number, env: Record<string, string>): string {
  const r = stint(args, env);
  expect({ code: r.code, stdout: r.stdout }).toEqual({ code, stdout: "" });
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).not.toContain(hsm.pin);
  return r.stderr.trim();
}

beforeAll(() => {
  hsm = softHsmToken({ label: "offline-roots" });
  offlineEnv = { ...hsm.env, STINT_PKCS11_PIN: hsm.pin };
  tokenFlags = ["--pkcs11-module", hsm.module, "--pkcs11-token", hsm.tokenLabel];
  ok(["ca", "init", "--insecure-no-passphrase"], caEnv);
  mkdirSync(oldDir, { mode: 0o700 });
  renameSync(join(caDir, "keys", "root.key.pem"), join(oldDir, "root.key.pem"));
  writeFileSync(join(oldDir, "root.pem"), readFileSync(join(caDir, "root.pem")));
});

it("rotates to a root whose key never leaves the offline host's token", async () => {
  // Bad token input: one line, the PIN never shown.
  const init = ["root", "init", "--out-dir", newDir, "--trust-domain", "example.org"];
  expect(fails([...init, ...tokenFlags], 1, { ...hsm.env, STINT_PKCS11_PIN: "0000-wrong" })).toMatch(
    /^stint root init: /,
  );
  expect(fails([...init, "--pkcs11-module", hsm.module], 2, offlineEnv)).toMatch(
    /--pkcs11-module needs --pkcs11-token LABEL or --pkcs11-slot N/,
  );

  const made = JSON.parse(ok([...init, ...tokenFlags, "--json"], offlineEnv));
  expect(made).toMatchObject({
    keyFile: null,
    keyRef: expect.stringMatching(/^pkcs11:token=offline-roots;/),
  });
  expect(readdirSync(newDir)).toEqual([`root-${made.id}.pem`]);
  const signWith = ["--root-cert", made.certFile, "--root-key", made.keyRef];

  // The CA host: the certificate, then the first CRL signed in the token.
  ok(["ca", "root", "prepare", "--offline", "--root-cert", made.certFile], caEnv);
  ok(["ca", "root", "crl-request", made.id, "--out", at("req.json")], caEnv);
  expect(
    fails(
      ["root", "sign-crl", ...signWith, "--request", at("req.json"), "--out", at("root.crl")],
      2,
      offlineEnv,
    ),
  ).toMatch(/--root-key pkcs11:… needs --pkcs11-module and --pkcs11-token/);
  ok(
    ["root", "sign-crl", ...signWith, ...tokenFlags, "--request", at("req.json"), "--out", at("root.crl")],
    offlineEnv,
  );
  expect(openssl(["crl", "-in", at("root.crl"), "-CAfile", made.certFile, "-noout"]).trim()).toBe("");
  ok(["ca", "import-crl", at("root.crl")], caEnv);

  // The intermediate signed in the token; the cross-certificate by the old root's key file.
  ok(["ca", "intermediate-csr", "--insecure-no-passphrase", "--out", at("int.csr")], caEnv);
  ok(
    ["root", "sign", ...signWith, ...tokenFlags, "--csr", at("int.csr"), "--out", at("int.pem")],
    offlineEnv,
  );
  const cross = ["--root-cert", join(oldDir, "root.pem"), "--root-key", join(oldDir, "root.key.pem")];
  ok(["root", "cross-sign", ...cross, "--new-root-cert", made.certFile, "--out", at("cross.pem")], {});
  ok(
    ["ca", "root", "activate", "--force", "--cross-cert", at("cross.pem"), "--intermediate", at("int.pem")],
    caEnv,
  );
  ok(["ca", "issue", "--spiffe-id", "spiffe://example.org/svc/a", "--out", at("leaf")], caEnv);
  const chain = at("leaf", "cert.pem");
  for (const trusted of [made.certFile, join(oldDir, "root.pem")]) {
    expect(openssl(["verify", "-CAfile", trusted, "-untrusted", chain, chain])).toMatch(/: OK$/m);
  }

  // The token holds the key as generated: sensitive, never extractable, its secret refused.
  hsm.activate();
  const token = await Pkcs11Token.open({
    module: hsm.module,
    tokenLabel: hsm.tokenLabel,
    slot: null,
    pin: hsm.pin,
    sessions: 1,
  });
  try {
    expect(await token.keyExposure(made.keyRef)).toMatchObject({
      sensitive: true,
      extractable: false,
      neverExtractable: true,
      secretRead: "CKR_ATTRIBUTE_SENSITIVE",
    });
  } finally {
    await token.close();
  }
}, 120_000);

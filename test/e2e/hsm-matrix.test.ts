import "reflect-metadata";
import { spawnSync } from "node:child_process";
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { readJwtKeys } from "../../ca/jwt-keys";
import type { IssuerRecord } from "../../ca/store";
import { openStore } from "../../ca/store/open";
import { parseSignedFeed, verifyFeedSignature } from "../../formats/feed";
import { toPem } from "../../formats/pem";
import { type ServerProcess, startServer, stint, tokenCaEnv } from "../helpers/cli";
import { openssl, tempDir } from "../helpers/openssl";
import { type SoftHsmToken, softHsmToken } from "../helpers/softhsm";
import { keyExposures, NOT_EXTRACTABLE } from "../helpers/token-keys";

/**
 * Issue 15 with keys.backend pkcs11 on SoftHSM: a CA made, rotated and
 * root-rotated with every root and intermediate key generated in the token.
 * No CA private key reaches the data directory, the token refuses to give
 * the keys out, and OpenSSL accepts what the token signed: leaves, CRLs and
 * the cross-signed chain; the revocation feed verifies too.
 */

const PASSPHRASE = "hsm-matrix-passphrase";
let dir: string;
let dataDir: string;
let token: SoftHsmToken;
let env: Record<string, string>;
let server: ServerProcess | undefined;

const ca = (...args: string[]) => {
  const r = stint(["ca", ...args, "--data-dir", dataDir], env);
  expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
  return r.stdout;
};

async function issuers(): Promise<IssuerRecord[]> {
  const store = await openStore(dataDir);
  try {
    return await store.listIssuers();
  } finally {
    await store.close();
  }
}

/** Where the JWT-SVID key ring's keys are, as the store records them. */
async function jwtKeyRefs(): Promise<string[]> {
  const store = await openStore(dataDir);
  try {
    return (await readJwtKeys(store)).map((k) => k.keyPath);
  } finally {
    await store.close();
  }
}

function get(url: string, ca: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end();
  });
}

function files(root: string): string[] {
  return readdirSync(root).flatMap((name) => {
    const p = join(root, name);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}

const pemFile = (name: string, der: Buffer) => {
  const path = join(dir, name);
  writeFileSync(path, toPem("CERTIFICATE", der));
  return path;
};

beforeAll(() => {
  dir = tempDir("stint-hsm-");
  dataDir = join(dir, "ca");
  token = softHsmToken({ label: "stint-matrix" });
  env = {
    ...tokenCaEnv(token),
    STINT_CA_PASSPHRASE: PASSPHRASE,
    STINT_TRUST_DOMAIN: "example.org",
  };
});

afterAll(async () => {
  await server?.stop();
  token.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe("CA keys in a PKCS#11 token (SoftHSM)", () => {
  it("init, rotate, root prepare, activate and revoke-issuer: every CA key in the token, none on disk", async () => {
    expect(ca("init")).toMatch(/keys {10}in the PKCS#11 token stint-matrix \(not extractable\)/);
    ca("rotate");
    ca("root", "prepare");
    ca("root", "activate", "--force");
    // The first intermediate (retired by the rotate) tainted and revoked: its root's CRL is re-signed in the token.
    const first = (await issuers()).find((i) => i.kind === "intermediate" && i.state === "retired")!;
    ca("taint", first.id);
    expect(JSON.parse(ca("revoke-issuer", first.id, "--force", "--json"))).toMatchObject({
      revoked: first.id,
      rootCrlSigned: true,
    });

    const all = await issuers();
    expect(all.map((i) => i.kind).sort()).toEqual([
      "intermediate",
      "intermediate",
      "intermediate",
      "root",
      "root",
    ]);
    for (const issuer of all) expect(issuer.keyPath).toMatch(/^pkcs11:token=stint-matrix;object=stint-/);

    // The JWT-SVID key ring, made and advanced by the rotations, is in the token too.
    const jwtRefs = await jwtKeyRefs();
    expect(jwtRefs.length).toBeGreaterThan(0);
    for (const ref of jwtRefs) expect(ref).toMatch(/^pkcs11:token=stint-matrix;object=stint-jwt-/);

    // The only private key under the data directory is the admin client's, never a CA or JWT-SVID key.
    const caSpkis = new Set(
      all.map((i) =>
        new X509Certificate(i.certDer).publicKey.export({ type: "spki", format: "der" }).toString("hex"),
      ),
    );
    const keyFiles = files(dataDir).filter((p) => readFileSync(p, "latin1").includes("PRIVATE KEY"));
    expect(keyFiles.length).toBeGreaterThan(0);
    for (const path of keyFiles) {
      expect(path.slice(dataDir.length)).toBe("/admin/key.pem");
      const key = createPrivateKey({ key: readFileSync(path), passphrase: PASSPHRASE });
      const spki = createPublicKey(key).export({ type: "spki", format: "der" }).toString("hex");
      expect(caSpkis.has(spki)).toBe(false);
    }

    // The token answers C_GetAttributeValue on the secret with a refusal, for every CA and JWT-SVID key.
    for (const exposure of keyExposures(token, [...all.map((i) => i.keyPath!), ...jwtRefs])) {
      expect(exposure).toMatchObject(NOT_EXTRACTABLE);
    }
  });

  it("OpenSSL verifies leaves through the cross-signed chain and CRLs; the feed verifies; the old root retires", async () => {
    const all = await issuers();
    const roots = all.filter((i) => i.kind === "root");
    const newRoot = roots.find((r) => all.some((i) => i.parentId === r.id && i.state === "active"))!;
    const oldRoot = roots.find((r) => r !== newRoot)!;
    const active = all.find((i) => i.kind === "intermediate" && i.state === "active")!;

    const out = (name: string) => join(dir, name);
    ca("issue", "--spiffe-id", "spiffe://example.org/good", "--out", out("good"));
    const bad = JSON.parse(
      ca("issue", "--spiffe-id", "spiffe://example.org/bad", "--out", out("bad"), "--json"),
    );
    ca("revoke", "--serial", bad.serial, "--reason", "keyCompromise");

    // cert.pem: leaf, intermediate, cross-certificate (new root signed by the old one).
    const chain = readFileSync(join(out("good"), "cert.pem"), "utf8").match(
      /-----BEGIN[\s\S]+?-----END CERTIFICATE-----\n/g,
    )!;
    expect(chain).toHaveLength(3);
    writeFileSync(out("untrusted.pem"), chain.slice(1).join(""));
    writeFileSync(out("leaf.pem"), chain[0]);
    const oldRootPem = pemFile("old-root.pem", oldRoot.certDer);
    const newRootPem = pemFile("new-root.pem", newRoot.certDer);
    for (const anchor of [oldRootPem, newRootPem]) {
      expect(
        openssl(["verify", "-CAfile", anchor, "-untrusted", out("untrusted.pem"), out("leaf.pem")]),
      ).toMatch(/: OK/);
    }

    server = await startServer(["--data-dir", dataDir], env);
    const bundle = readFileSync(oldRootPem, "utf8") + readFileSync(newRootPem, "utf8");
    const crls: Record<string, string> = {};
    for (const issuer of [active, newRoot, oldRoot]) {
      const res = await get(`${server.url}/crl/${issuer.id}.crl`, bundle);
      expect(res.status).toBe(200);
      const derPath = out(`${issuer.id}.crl`);
      writeFileSync(derPath, res.body);
      crls[issuer.id] = out(`${issuer.id}.crl.pem`);
      openssl(["crl", "-inform", "DER", "-in", derPath, "-out", crls[issuer.id]]);
      const signer = pemFile(`${issuer.id}.pem`, issuer.certDer);
      const verified = spawnSync(
        "openssl",
        ["crl", "-in", crls[issuer.id], "-CAfile", signer, "-noout", "-verify"],
        {
          encoding: "utf8",
        },
      );
      expect(`${verified.stdout}${verified.stderr}`.trim()).toBe("verify OK");
    }
    const listed = openssl(["crl", "-in", crls[active.id], "-noout", "-text"]).toLowerCase();
    expect(listed).toContain(bad.serial.replace(/^0+/, ""));
    // The revoked leaf fails a CRL check through the token-signed CRL; the good one passes it.
    writeFileSync(
      out("crl-bundle.pem"),
      readFileSync(newRootPem, "utf8") + readFileSync(crls[active.id], "utf8"),
    );
    const badChain = readFileSync(join(out("bad"), "cert.pem"), "utf8").match(
      /-----BEGIN[\s\S]+?-----END CERTIFICATE-----\n/g,
    )!;
    writeFileSync(out("bad-leaf.pem"), badChain[0]);
    const check = (leaf: string) =>
      verdict(["-CAfile", out("crl-bundle.pem"), "-untrusted", out("untrusted.pem"), "-crl_check", leaf]);
    expect(check(out("leaf.pem"))).toMatch(/: OK/);
    expect(check(out("bad-leaf.pem"))).toMatch(/certificate revoked/);

    const feed = await get(`${server.url}/feed`, bundle);
    expect(feed.status).toBe(200);
    const envelope = parseSignedFeed(feed.body);
    expect(verifyFeedSignature(envelope)).toBe(true);
    expect(
      new X509Certificate(envelope.chain[0]).publicKey.equals(new X509Certificate(active.certDer).publicKey),
    ).toBe(true);

    // The intermediate revoked above is on its root's token-signed CRL; then the old root retires.
    const revokedInt = all.find((i) => i.parentId === oldRoot.id && i.state === "tainted")!;
    const rootCrl = openssl(["crl", "-in", crls[oldRoot.id], "-noout", "-text"]).toLowerCase();
    const revokedSerial = new X509Certificate(revokedInt.certDer).serialNumber
      .toLowerCase()
      .replace(/^0+/, "");
    expect(rootCrl).toContain(revokedSerial);
    await server.stop();
    server = undefined;
    expect(JSON.parse(ca("root", "retire", oldRoot.id, "--force", "--json"))).toMatchObject({
      retired: { id: oldRoot.id, state: "retired" },
    });
  });
});

describe("other key algorithms in the token", () => {
  it.each([
    ["ec-p384", "ecdsa-with-SHA384"],
    ["rsa-2048", "sha256WithRSAEncryption"],
  ])("%s: ca init signs the root, the intermediate and a leaf that OpenSSL verifies", (alg, signature) => {
    const caDir = join(dir, `ca-${alg}`);
    const r = stint(["ca", "init", "--data-dir", caDir], { ...env, STINT_KEY_ALGORITHM: alg });
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    const chain = readFileSync(join(caDir, "admin", "cert.pem"), "utf8").match(
      /-----BEGIN[\s\S]+?-----END CERTIFICATE-----\n/g,
    )!;
    writeFileSync(join(dir, `${alg}-leaf.pem`), chain[0]);
    writeFileSync(join(dir, `${alg}-int.pem`), chain[1]);
    const verified = openssl([
      "verify",
      "-CAfile",
      join(caDir, "root.pem"),
      "-untrusted",
      join(dir, `${alg}-int.pem`),
      join(dir, `${alg}-leaf.pem`),
    ]);
    expect(verified).toMatch(/: OK/);
    for (const cert of [join(caDir, "root.pem"), join(dir, `${alg}-int.pem`), join(dir, `${alg}-leaf.pem`)]) {
      expect(openssl(["x509", "-in", cert, "-noout", "-text"])).toContain(
        `Signature Algorithm: ${signature}`,
      );
    }
  });
});

describe("a CA that switches to keys.backend pkcs11", () => {
  it("keeps its file keys working and makes the next intermediate's key in the token (intermediate-csr, import)", () => {
    const switched = join(dir, "switched");
    const fileEnv = { ...env, STINT_KEYS_BACKEND: "file" };
    const run = (e: Record<string, string>, ...args: string[]) => {
      const r = stint(args, e);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
      return r.stdout;
    };
    run(fileEnv, "ca", "init", "--data-dir", switched);
    const csr = join(dir, "switched-int.csr");
    const made = JSON.parse(
      run(env, "ca", "intermediate-csr", "--data-dir", switched, "--out", csr, "--json"),
    );
    expect(made.keyPath).toMatch(/^pkcs11:token=stint-matrix;object=stint-intermediate-/);
    // The root key is a file here, standing in for an offline root: `stint root sign` signs the request with it.
    const signed = join(dir, "switched-int.pem");
    run(
      env,
      "root",
      "sign",
      "--root-cert",
      join(switched, "root.pem"),
      "--root-key",
      join(switched, "keys/root.key.pem"),
      "--csr",
      csr,
      "--out",
      signed,
    );
    run(env, "ca", "import-intermediate", signed, "--data-dir", switched);
    const leafDir = join(dir, "switched-leaf");
    run(
      env,
      "ca",
      "issue",
      "--spiffe-id",
      "spiffe://example.org/switched",
      "--out",
      leafDir,
      "--data-dir",
      switched,
    );
    const leaf = new X509Certificate(readFileSync(join(leafDir, "cert.pem")));
    const intermediate = new X509Certificate(readFileSync(signed));
    expect(leaf.verify(intermediate.publicKey)).toBe(true);
    expect(files(join(switched, "keys")).map((p) => p.slice(switched.length))).toEqual(
      expect.not.arrayContaining([expect.stringContaining(made.id)]),
    );
  });
});

describe("ca serve without its token", () => {
  // Runs after the server above stopped: the CA in dataDir keeps its keys in the token.
  beforeAll(async () => {
    await server?.stop();
    server = undefined;
  });

  it.each([
    ["a wrong PIN", { STINT_PKCS11_PIN: "0000-wrong-pin" }, /PIN/],
    ["a token that is not there", { STINT_KEYS_PKCS11_TOKEN_LABEL: "no-such-token" }, /no-such-token/],
  ])("refuses to start with %s: one line, exit code 1, no PIN in it", (_what, change, message) => {
    const r = stint(["ca", "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0"], { ...env, ...change });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^stint ca serve: /);
    expect(lines[0]).toMatch(message);
    expect(r.stderr).not.toContain(token.pin);
    expect(r.stderr).not.toContain("0000-wrong-pin");
  });
});

/** `openssl verify` with its verdict, whether it passes or not. */
function verdict(args: string[]): string {
  try {
    return openssl(["verify", ...args]);
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ""}${e.stderr ?? ""}`;
  }
}

import "reflect-metadata";
import { createPublicKey } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";
import Database from "better-sqlite3";
import { decodeSerial } from "../../formats/serial";
import { snapshot, startServer, stint, TEST_KEY_BACKEND } from "../helpers/cli";
import { openssl, opensslCsr, tempDir } from "../helpers/openssl";

const PASS = "correct horse battery staple";
const root = tempDir();
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A fresh initialised CA in its own data directory. */
function newCa(name: string, extra: string[] = []): { dir: string; env: Record<string, string> } {
  const dir = join(root, name);
  const env = { STINT_CA_PASSPHRASE: PASS, STINT_DATA_DIR: dir, STINT_TRUST_DOMAIN: "example.org" };
  const r = stint(["ca", "init", ...extra], env);
  expect(r).toMatchObject({ code: 0, stderr: "" });
  return { dir, env };
}

const oneLine = (text: string) => text.trim().split("\n");

/** Tests of key files and their passphrase: with the keys in a token (npm run test:pkcs11) there are none (hsm-matrix.test.ts covers that). */
const fileKeys = TEST_KEY_BACKEND === "file" ? it : it.skip;

describe("stint ca init", () => {
  fileKeys("writes encrypted keys 0600 in a 0700 directory and prints the root fingerprint", () => {
    const dir = join(root, "init");
    const r = stint(["ca", "init", "--data-dir", dir, "--trust-domain", "example.org", "--json"], {
      STINT_CA_PASSPHRASE: PASS,
    });
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    const expected = openssl(["x509", "-in", join(dir, "root.pem"), "-noout", "-fingerprint", "-sha256"])
      .trim()
      .replace(/^.*=/, "")
      .replace(/:/g, "")
      .toLowerCase();
    expect(out).toMatchObject({
      trustDomain: "example.org",
      keysEncrypted: true,
      rootFingerprint: `sha256:${expected}`,
    });
    expect(statSync(join(dir, "keys")).mode & 0o777).toBe(0o700);
    for (const key of [
      join(dir, "keys", "root.key.pem"),
      join(dir, "keys", `${out.intermediateId}.key.pem`),
    ]) {
      expect(statSync(key).mode & 0o777).toBe(0o600);
      expect(readFileSync(key, "utf8")).toMatch(/^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    }
    const text = openssl(["x509", "-in", join(dir, "intermediate.pem"), "-noout", "-text"]);
    expect(text).toMatch(/X509v3 Name Constraints: critical\s+Permitted:\s+URI:example\.org/);
    expect(text).toMatch(/CA:TRUE, pathlen:0/);
    expect(
      openssl(["verify", "-CAfile", join(dir, "root.pem"), join(dir, "intermediate.pem")]).trim(),
    ).toMatch(/OK$/);
  });

  it("refuses to run twice and changes nothing", () => {
    const { dir, env } = newCa("twice");
    const before = snapshot(dir);
    const r = stint(["ca", "init"], env);
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toEqual([
      expect.stringMatching(/^stint ca init: .* already holds a CA .*use a new --data-dir/),
    ]);
    expect(snapshot(dir)).toEqual(before);
  });

  fileKeys("demands a passphrase unless told --insecure-no-passphrase", () => {
    const dir = join(root, "nopass");
    const r = stint(["ca", "init", "--data-dir", dir]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(
      "stint ca init: CA keys need a passphrase: set STINT_CA_PASSPHRASE or --passphrase-file (or --insecure-no-passphrase for development)",
    );
    const ok = stint([
      "ca",
      "init",
      "--data-dir",
      dir,
      "--insecure-no-passphrase",
      "--key-algorithm",
      "ed25519",
    ]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain("NOT ENCRYPTED (development only)");
    expect(readFileSync(join(dir, "keys", "root.key.pem"), "utf8")).toMatch(/^-----BEGIN PRIVATE KEY-----/);
  });
});

describe("stint ca issue", () => {
  const ca = newCa("issue", ["--policy-dns-suffixes", "svc.example.org"]);
  const caFlags = ["--policy-dns-suffixes", "svc.example.org"];

  it("issues a key and chain that openssl verify accepts", () => {
    const out = join(root, "leaf1");
    const r = stint(
      [
        "ca",
        "issue",
        ...caFlags,
        "--spiffe-id",
        "spiffe://example.org/web",
        "--dns",
        "web.svc.example.org",
        "--out",
        out,
        "--json",
      ],
      ca.env,
    );
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.stdout);
    const verified = openssl([
      "verify",
      "-CAfile",
      join(ca.dir, "root.pem"),
      "-untrusted",
      join(ca.dir, "intermediate.pem"),
      join(out, "cert.pem"),
    ]);
    expect(verified.trim()).toBe(`${join(out, "cert.pem")}: OK`);
    expect(statSync(join(out, "key.pem")).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(out, "bundle.pem"), "utf8")).toBe(
      readFileSync(join(ca.dir, "root.pem"), "utf8"),
    );

    const chain = readFileSync(join(out, "cert.pem"), "utf8");
    const leaf = new x509.X509Certificate(chain.slice(0, chain.indexOf("-----END CERTIFICATE-----") + 25));
    expect(leaf.serialNumber).toBe(summary.serial);
    expect(leaf.getExtension(x509.SubjectAlternativeNameExtension)!.names.toJSON()).toEqual([
      { type: "url", value: "spiffe://example.org/web" },
      { type: "dns", value: "web.svc.example.org" },
    ]);
    const lifetime = leaf.notAfter.getTime() - leaf.notBefore.getTime();
    expect(lifetime).toBe(3_600_000 + 30_000); // default 1h plus the 30s backdate
    const keyPub = createPublicKey(readFileSync(join(out, "key.pem"))).export({
      format: "der",
      type: "spki",
    });
    expect(Buffer.from(leaf.publicKey.rawData).equals(keyPub)).toBe(true);
  });

  it("signs an OpenSSL CSR and prints the chain", () => {
    const { csrPath } = opensslCsr(root, {
      name: "cli-csr",
      keyType: "rsa-2048",
      sans: ["URI:spiffe://example.org/db", "DNS:db.svc.example.org"],
    });
    const r = stint(
      [
        "ca",
        "issue",
        ...caFlags,
        "--spiffe-id",
        "spiffe://example.org/db",
        "--dns",
        "db.svc.example.org",
        "--csr",
        csrPath,
        "--ttl",
        "10m",
      ],
      ca.env,
    );
    expect(r.code).toBe(0);
    const chainPath = join(root, "cli-csr-chain.pem");
    writeFileSync(chainPath, r.stdout);
    expect(
      openssl(["verify", "-CAfile", join(ca.dir, "root.pem"), "-untrusted", chainPath, chainPath]).trim(),
    ).toMatch(/OK$/);
    expect(openssl(["x509", "-in", chainPath, "-noout", "-text"])).toMatch(
      /Digital Signature, Key Encipherment/,
    );
  });

  it.each([
    [
      ["--dns", "db.example.com"],
      /^stint ca issue: DNS name "db.example.com" is outside policy \(allowed suffixes: svc.example.org\); add its suffix to policy.dnsSuffixes$/,
    ],
    [
      ["--ttl", "25h"],
      /^stint ca issue: requested lifetime 1d1h is beyond the policy maximum 1d \(policy.maxTtl\)$/,
    ],
    [
      ["--ttl", "5s"],
      /^stint ca issue: requested lifetime 5s is below the policy minimum 1m \(policy.minTtl\)$/,
    ],
    [["--key-type", "dsa"], /^stint ca issue: unknown key algorithm "dsa"; use one of: ec-p256/],
  ])("refuses %j with one line and stores nothing", (flags, message) => {
    const before = snapshot(ca.dir);
    const r = stint(
      [
        "ca",
        "issue",
        ...caFlags,
        "--spiffe-id",
        "spiffe://example.org/web",
        ...flags,
        "--out",
        join(root, "refused"),
      ],
      ca.env,
    );
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toEqual([expect.stringMatching(message)]);
    expect(snapshot(ca.dir)).toEqual(before);
  });

  it("refuses a CSR asking for other names or for CA:TRUE", () => {
    const wide = opensslCsr(root, {
      name: "wide",
      sans: ["URI:spiffe://example.org/web", "DNS:admin.svc.example.org"],
    });
    const r1 = stint(
      ["ca", "issue", "--spiffe-id", "spiffe://example.org/web", "--csr", wide.csrPath],
      ca.env,
    );
    expect(r1).toMatchObject({ code: 1 });
    expect(r1.stderr).toMatch(
      /^stint ca issue: CSR names \(spiffe:\/\/example.org\/web, admin.svc.example.org\) differ from the names asked for/,
    );
    const caReq = opensslCsr(root, {
      name: "careq",
      sans: ["URI:spiffe://example.org/web"],
      extraExt: ["basicConstraints=critical,CA:TRUE"],
    });
    const r2 = stint(
      ["ca", "issue", "--spiffe-id", "spiffe://example.org/web", "--csr", caReq.csrPath],
      ca.env,
    );
    expect(r2.stderr.trim()).toBe(
      "stint ca issue: CSR asks for a CA certificate; workloads get CA:FALSE only",
    );
  });

  it("never repeats a sequence number across restarts, even after a crash", async () => {
    const seqs: number[] = [];
    const issueOne = () => {
      const r = stint(
        // --force: the same --out directory each time (ca issue refuses to replace files otherwise)
        [
          "ca",
          "issue",
          "--spiffe-id",
          "spiffe://example.org/seq",
          "--out",
          join(root, "seq"),
          "--force",
          "--json",
        ],
        ca.env,
      );
      expect(r.code).toBe(0);
      const { serial, sequence } = JSON.parse(r.stdout);
      expect(decodeSerial(Buffer.from(serial, "hex"))!.sequence).toBe(sequence);
      seqs.push(sequence);
    };
    issueOne();
    issueOne();
    // A server reserves a block for its own certificate; kill it without letting it shut down.
    const server = await startServer([], ca.env);
    server.child.kill("SIGKILL");
    await server.stop();
    issueOne();
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1]);
    const db = new Database(join(ca.dir, "stint.db"), { readonly: true });
    const rows = db.prepare("SELECT sequence FROM certificates").all() as { sequence: number }[];
    db.close();
    expect(new Set(rows.map((r) => r.sequence)).size).toBe(rows.length);
    expect(Math.max(...rows.map((r) => r.sequence))).toBe(seqs[seqs.length - 1]);
  });
});

describe("failures that must change nothing", () => {
  const ca = newCa("failures");
  const issue = (env: Record<string, string>) =>
    stint(["ca", "issue", "--spiffe-id", "spiffe://example.org/x", "--out", join(root, "never")], env);
  const keyFile = () => {
    const id = JSON.parse(stint(["ca", "status", "--json"], ca.env).stdout).issuers.find(
      (i: { kind: string }) => i.kind === "intermediate",
    ).id;
    return join(ca.dir, "keys", `${id}.key.pem`);
  };

  fileKeys.each([
    [
      "a wrong passphrase",
      { STINT_CA_PASSPHRASE: "not it" },
      /^stint ca issue: wrong passphrase for .*\.key\.pem$/,
    ],
    ["no passphrase", { STINT_CA_PASSPHRASE: "" }, /^stint ca issue: STINT_CA_PASSPHRASE is set but empty$/],
  ])("%s gives one line", (_what, change, message) => {
    const before = snapshot(ca.dir);
    const r = issue({ ...ca.env, ...change });
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toEqual([expect.stringMatching(message)]);
    expect(r.stderr).not.toContain(PASS);
    expect(snapshot(ca.dir)).toEqual(before);
  });

  fileKeys("an encrypted key with no passphrase at all says where to give one", () => {
    const { STINT_CA_PASSPHRASE: _, ...withoutPassphrase } = ca.env;
    const r = issue(withoutPassphrase);
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toEqual([
      expect.stringMatching(
        /^stint ca issue: .*\.key\.pem is encrypted and no passphrase was given; set STINT_CA_PASSPHRASE or use --passphrase-file$/,
      ),
    ]);
  });

  fileKeys("ca status says which keys are on this host: a root key moved away (offline) is not", () => {
    const ca = newCa("key-on-host");
    const onHost = () =>
      Object.fromEntries(
        (
          JSON.parse(stint(["ca", "status", "--json"], ca.env).stdout).issuers as {
            kind: string;
            keyOnHost: boolean;
          }[]
        ).map((i) => [i.kind, i.keyOnHost]),
      );
    expect(onHost()).toEqual({ root: true, intermediate: true });
    renameSync(join(ca.dir, "keys", "root.key.pem"), join(root, "root.key.pem.offline"));
    expect(onHost()).toEqual({ root: false, intermediate: true });
  });

  fileKeys("a corrupt key file gives one line", () => {
    const path = keyFile();
    const saved = readFileSync(path);
    const damaged = readFileSync(path, "utf8").replace(
      /(\n[A-Za-z0-9+/]{10})[A-Za-z0-9+/]{20}/,
      "$1AAAAAAAAAAAAAAAAAAAA",
    );
    chmodSync(path, 0o600);
    writeFileSync(path, damaged);
    try {
      const before = snapshot(ca.dir);
      const r = issue(ca.env);
      expect(r.code).toBe(1);
      expect(oneLine(r.stderr)).toEqual([
        expect.stringMatching(
          /^stint ca issue: (.*\.key\.pem is not a readable private key \(damaged or not PEM\); restore it from backup|wrong passphrase for .*)$/,
        ),
      ]);
      expect(snapshot(ca.dir)).toEqual(before);
      writeFileSync(path, "this is not a key\n");
      expect(issue(ca.env).stderr.trim()).toMatch(
        /is not a readable private key \(damaged or not PEM\); restore it from backup$/,
      );
    } finally {
      writeFileSync(path, saved);
    }
    expect(issue(ca.env).code).toBe(0);
  });

  it.each([
    [
      "random bytes",
      (p: string) => writeFileSync(p, Buffer.alloc(8192, 0x5a)),
      /is not a Stint database|not SQLite|damaged/,
    ],
    [
      "another program's SQLite database",
      (p: string) => {
        const db = new Database(p);
        db.exec("CREATE TABLE songs (title TEXT); INSERT INTO songs VALUES ('x')");
        db.close();
      },
      /not a Stint/,
    ],
  ])("a store that is %s gives one line", (_what, make, message) => {
    const dir = join(root, `badstore-${_what.length}`);
    mkdirSync(dir, { recursive: true });
    make(join(dir, "stint.db"));
    const before = snapshot(dir);
    for (const cmd of [
      ["ca", "status"],
      // Not "never": the corrupt-key test's last issue wrote there, and --out does not replace files.
      ["ca", "issue", "--spiffe-id", "spiffe://example.org/x", "--out", join(root, "never-bad-store")],
    ]) {
      const r = stint([...cmd, "--data-dir", dir], { STINT_CA_PASSPHRASE: PASS });
      expect(r.code).toBe(1);
      expect(oneLine(r.stderr)).toEqual([expect.stringMatching(message)]);
    }
    expect(snapshot(dir)).toEqual(before);
  });

  it("a missing data directory says to run ca init", () => {
    const r = stint(["ca", "status", "--data-dir", join(root, "nothing-here")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/create a CA there first \(stint ca init\)/);
  });
});

describe("audit log", () => {
  it("records issuance and detects an edited record", () => {
    const ca = newCa("audit");
    expect(
      stint(
        ["ca", "issue", "--spiffe-id", "spiffe://example.org/a", "--out", join(root, "audit-leaf")],
        ca.env,
      ).code,
    ).toBe(0);
    const ok = JSON.parse(stint(["ca", "status", "--json"], ca.env).stdout);
    // root, intermediate, the admin certificate (ca init), then the leaf.
    expect(ok.audit).toEqual({ records: 4, intact: true });
    expect(ok.certificates).toEqual({ issued: 2, unexpired: 2, revoked: 0 });

    // Someone with write access to the file rewrites history, working around the append-only triggers.
    const copy = join(root, "audit-copy");
    mkdirSync(copy);
    copyFileSync(join(ca.dir, "stint.db"), join(copy, "stint.db"));
    const db = new Database(join(copy, "stint.db"));
    const triggers = db.prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'").all() as {
      name: string;
    }[];
    for (const t of triggers) db.exec(`DROP TRIGGER ${t.name}`);
    db.prepare("UPDATE audit_log SET details = ? WHERE seq = 4").run(
      '{"spiffeId":"spiffe://example.org/innocent"}',
    );
    db.close();
    const r = stint(["ca", "status", "--data-dir", copy]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("audit log: BROKEN: audit log: record 4 was altered after it was written");
  });
});

describe("stint --help", () => {
  it.each([
    [[]],
    [["--help"]],
    [["ca"]],
    [["ca", "init", "--help"]],
    [["ca", "serve", "--help"]],
    [["ca", "issue", "--help"]],
    [["ca", "status", "--help"]],
  ])("stint %j prints help and exits 0", (args) => {
    const r = stint(args);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toMatch(/^usage: stint/);
  });

  it("names an unknown command or flag in one line with exit 2", () => {
    expect(stint(["ca", "launch"])).toMatchObject({
      code: 2,
      stderr: 'stint: unknown command "ca launch"; see stint ca --help\n',
    });
    const r = stint(["ca", "status", "--colour"]);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toEqual([expect.stringMatching(/^stint ca status: Unknown option '--colour'/)]);
  });

  it("names a bad config key in one line", () => {
    const file = join(root, "bad.yaml");
    writeFileSync(file, "policy:\n  maxTTL: 2h\n");
    const r = stint(["ca", "status", "--config", file]);
    expect(r.code).toBe(1);
    expect(oneLine(r.stderr)).toEqual([
      expect.stringMatching(
        /^stint ca status: config file .*bad.yaml: unknown key "policy.maxTTL" \(did you mean "policy.maxTtl"\?\)$/,
      ),
    ]);
  });
});

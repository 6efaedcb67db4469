import { spawn } from "node:child_process";
import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { AcmeClient, joinTokenEvidence } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { pemDecodeAll } from "../../formats/pem";
import { fingerprint, waitFor } from "../helpers/agent";
import { type ServerProcess, STINT, startServer, stint } from "../helpers/cli";
import { tempDir } from "../helpers/openssl";

/**
 * What `stint ca serve` tells its operator (issue 19, readable output): a
 * startup summary — one JSON record when stderr is not a terminal, a short
 * block with --log-format pretty — and one line per certificate issued or
 * revoked, found by serial, without the secrets that obtained it.
 */

const TD = "logs.example";
const dir = tempDir("stint-readable-output-");
const dataDir = join(dir, "ca");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Rec = Record<string, unknown>;

describe("ca serve with stderr on a pipe (log.format auto)", () => {
  let server: ServerProcess;
  const records = (): Rec[] => server.logs().map((l) => JSON.parse(l) as Rec);

  beforeAll(async () => {
    server = await startServer(["--insecure-no-passphrase", "--data-dir", dataDir, "--trust-domain", TD]);
  });
  afterAll(() => server.stop());

  it("writes only JSON lines, the startup summary in one record", () => {
    // JSON.parse throws on any line that is not a JSON object.
    const startup = records().filter((r) => r["msg"] === "listening");
    expect(startup).toHaveLength(1);
    expect(startup[0]).toMatchObject({
      level: "info",
      component: "ca",
      url: server.url,
      directory: `${server.url}/acme/directory`,
      rootFingerprint: fingerprint(dataDir),
      rootFingerprints: [fingerprint(dataDir)],
      dataDir,
      store: "sqlite",
      trustDomain: TD,
      encryptedAtRest: false,
    });
    expect(records().find((r) => r["level"] === "warn")).toMatchObject({
      msg: "CA keys are stored WITHOUT encryption; use this only for development",
    });
  });

  it("logs one info record per issuance and per revocation, with the serial and no secret", async () => {
    const spiffeId = `spiffe://${TD}/web`;
    const made = stint([
      "token",
      "create",
      "--spiffe-id",
      spiffeId,
      "--json",
      "--data-dir",
      dataDir,
      "--server",
      server.url,
    ]);
    expect(made.stderr).toBe("");
    const { token } = JSON.parse(made.stdout) as { token: string };

    const client = await AcmeClient.connect({
      directoryUrl: `${server.url}/acme/directory`,
      ca: readFileSync(join(dataDir, "root.pem"), "utf8"),
      accountKey: generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey,
    });
    await client.newAccount();
    const key = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const { pem } = await client.obtainCertificate({
      identifiers: [{ type: "spiffe", value: spiffeId }],
      csrDer: buildCsr({ key, spiffeId, dnsNames: [] }),
      authorize: (_authz, challenge) => client.attest(challenge.url, "join_token", joinTokenEvidence(token)),
    });
    const leaf = pemDecodeAll(pem, "CERTIFICATE", "chain")[0]!;
    const cert = new X509Certificate(leaf);
    const serial = cert.serialNumber.toLowerCase();

    const issued = await waitFor("the issuance line", () => {
      const found = records().filter((r) => r["msg"] === "certificate issued" && r["serial"] === serial);
      return found.length > 0 && found;
    });
    expect(issued).toHaveLength(1);
    expect(issued[0]).toMatchObject({
      level: "info",
      spiffeId,
      dnsNames: [],
      issuer: expect.stringMatching(/\S/),
      notAfter: new Date(cert.validTo).toISOString(),
      via: "acme attest-01 (join_token)",
    });

    await client.revoke(leaf, { reason: 1, signWith: key });
    const revoked = await waitFor("the revocation line", () => {
      const found = records().filter((r) => r["msg"] === "certificate revoked" && r["serial"] === serial);
      return found.length > 0 && found;
    });
    expect(revoked).toHaveLength(1);
    expect(revoked[0]).toMatchObject({ level: "info", reason: "keyCompromise", actor: expect.any(String) });
    expect(server.logs().join("\n")).not.toContain(token);
  });
});

describe("ca serve --log-format pretty", () => {
  it("prints a short startup block a person can read, the key warning last", async () => {
    const child = spawn(
      process.execPath,
      [STINT, "ca", "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-format", "pretty"],
      {
        env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let err = "";
    child.stderr!.on("data", (chunk: Buffer) => {
      err += chunk.toString();
    });
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    try {
      await waitFor("the key warning", () => err.includes("WITHOUT encryption") && err.endsWith("\n"));
      const lines = err.trimEnd().split("\n");
      const first = lines.findIndex((l) => / INFO: ca: listening on https:\/\//.test(l));
      const block = lines.slice(first);
      expect(first).toBeGreaterThanOrEqual(0);
      expect(block.length).toBeGreaterThanOrEqual(5);
      expect(block.length).toBeLessThanOrEqual(8);
      expect(block.join("\n")).toContain(fingerprint(dataDir));
      expect(block.join("\n")).toContain(dataDir);
      expect(block.at(-1)).toMatch(/WARN: ca: .*WITHOUT encryption/);
      // No JSON, and no colour codes: stderr is a pipe here.
      expect(lines.filter((l) => l.startsWith("{"))).toEqual([]);
      expect(err).not.toContain("\u001b[");
    } finally {
      child.kill("SIGTERM");
      await exited;
    }
  });
});

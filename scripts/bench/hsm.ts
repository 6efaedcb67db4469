import "reflect-metadata";
import { execFileSync } from "node:child_process";
import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { LeafEngine } from "../../ca/engine";
import { type CaKey, fileKey } from "../../ca/key-backend";
import { CaKeyStore } from "../../ca/key-store";
import { generateKeyPair } from "../../ca/keys";
import { Pkcs11Token } from "../../ca/pkcs11";
import type { KeyAlgorithm } from "../../ca/spki";
import { createRootCertificate, randomSerial } from "../../ca/x509";
import { runConcurrently } from "./concurrent";
import { withDurableAuthority } from "./durable-authority";

/**
 * Leaf issuance with the issuer's key in a PKCS#11 token (Debian's SoftHSM)
 * against the same key algorithm in a file, with 1, 4 and 8 token sessions:
 *   engine     LeafEngine.issue alone (build, sign, wrap), 64 in flight;
 *   authority  Authority.issue: policy, sequence, signature and the durable
 *              SQLite commit, 64 in flight.
 * Every configuration's first leaf is checked against its issuer.
 * Prints one JSON document on stdout; progress goes to stderr.
 *   npm run bench:hsm [-- --seconds 3]
 */

const SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so";
const PIN = "bench-pin-1234";
const TOKEN_LABEL = "stint-bench";
const IN_FLIGHT = 64;
const SESSIONS = [1, 4, 8];

const secondsArg = process.argv.indexOf("--seconds");
const SECONDS = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 3;

interface Result {
  level: "engine" | "authority";
  algorithm: KeyAlgorithm;
  key: "file" | "pkcs11";
  sessions: number | null;
  certificates: number;
  seconds: number;
  certsPerSecond: number;
}

/** A SoftHSM token in a temp dir of its own; SOFTHSM2_CONF must be set before the module initializes. */
function softHsm(dir: string): void {
  mkdirSync(join(dir, "tokens"));
  const conf = join(dir, "softhsm2.conf");
  writeFileSync(
    conf,
    `directories.tokendir = ${join(dir, "tokens")}\nobjectstore.backend = file\nlog.level = ERROR\n`,
  );
  process.env.SOFTHSM2_CONF = conf;
  execFileSync(
    "softhsm2-util",
    ["--init-token", "--free", "--label", TOKEN_LABEL, "--pin", PIN, "--so-pin", "so-bench"],
    {
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
}

const openToken = (sessions: number) =>
  Pkcs11Token.open({ module: SOFTHSM_MODULE, tokenLabel: TOKEN_LABEL, slot: null, pin: PIN, sessions });

async function measure(
  what: Omit<Result, "certificates" | "seconds" | "certsPerSecond">,
  once: () => Promise<unknown>,
): Promise<Result> {
  for (let i = 0; i < 100; i++) await once(); // warm-up
  const label = `${what.level} ${what.algorithm} ${what.key}${what.sessions ? ` ×${what.sessions}` : ""}`;
  process.stderr.write(`bench: ${label} (${IN_FLIGHT} in flight) for ${SECONDS}s…\n`);
  const { operations: n, seconds } = await runConcurrently(SECONDS, IN_FLIGHT, once);
  return {
    ...what,
    certificates: n,
    seconds: Number(seconds.toFixed(3)),
    certsPerSecond: Math.round(n / seconds),
  };
}

const spkis = Array.from({ length: 256 }, () =>
  generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ format: "der", type: "spki" }),
);

/** LeafEngine under `key`, its issuer certificate signed by the same key; the first leaf must verify. */
async function engineRun(algorithm: KeyAlgorithm, key: CaKey, sessions: number | null): Promise<Result> {
  const now = new Date();
  const certDer = await createRootCertificate({
    keys: key,
    commonName: "Bench Issuer",
    trustDomain: "bench.example",
    notBefore: now,
    notAfter: new Date(now.getTime() + 86_400_000),
    serial: randomSerial(),
  });
  const engine = new LeafEngine<CaKey>({ certDer, privateKey: key, organization: "bench.example" });
  let i = 0;
  const issue = async () =>
    engine.issue({
      spki: spkis[i & 255],
      keyAlgorithm: "ec-p256",
      spiffeId: "spiffe://bench.example/ns/default/sa/bench",
      dnsNames: ["bench.svc.example"],
      ipAddresses: [],
      notBefore: now,
      notAfter: new Date(now.getTime() + 3_600_000),
      sequence: ++i,
    });
  const first = await issue();
  if (!new X509Certificate(first.der).verify(key.publicKey))
    throw new Error(`a ${key.backend} leaf does not verify`);
  return measure({ level: "engine", algorithm, key: key.backend, sessions }, issue);
}

/** The whole issue path with a durable SQLite commit, the hierarchy's keys made where `keys` says. */
function authorityRun(keys: (dataDir: string) => CaKeyStore, sessions: number | null): Promise<Result> {
  return withDurableAuthority(spkis, keys, (issueOne) =>
    measure(
      { level: "authority", algorithm: "ec-p256", key: keys === fileKeys ? "file" : "pkcs11", sessions },
      issueOne,
    ),
  );
}

const fileKeys = (dataDir: string) => CaKeyStore.files(dataDir, null);

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "stint-bench-softhsm-"));
  const results: Result[] = [];
  try {
    softHsm(dir);
    for (const algorithm of ["ec-p256", "rsa-2048"] as const) {
      results.push(await engineRun(algorithm, fileKey((await generateKeyPair(algorithm)).privateKey), null));
      const maker = await openToken(1);
      const ref = (await maker.generateKey(algorithm, `bench-${algorithm}`)).ref;
      await maker.close();
      for (const sessions of SESSIONS) {
        const token = await openToken(sessions);
        results.push(await engineRun(algorithm, await token.openKey(ref), sessions));
        await token.close();
      }
    }
    results.push(await authorityRun(fileKeys, null));
    for (const sessions of [1, 4]) {
      const token = await openToken(sessions);
      results.push(
        await authorityRun(
          (dataDir) =>
            new CaKeyStore({ dataDir, passphrase: null, backend: "pkcs11", openToken: async () => token }),
          sessions,
        ),
      );
      await token.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const report = {
    bench: "hsm",
    command: "npm run bench:hsm",
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model ?? "unknown",
      node: process.version,
      loadAverage: loadavg().map((l) => Number(l.toFixed(2))),
      uvThreadpoolSize: Number(process.env.UV_THREADPOOL_SIZE ?? 4),
    },
    module: SOFTHSM_MODULE,
    inFlight: IN_FLIGHT,
    leafKey: "ec-p256",
    results,
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench:hsm failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

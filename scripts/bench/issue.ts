import "reflect-metadata";
import { generateKeyPairSync, sign } from "node:crypto";
import { cpus } from "node:os";
import * as x509 from "@peculiar/x509";
import { LeafEngine } from "../../ca/engine";
import { generateKeyPair } from "../../ca/keys";
import { createRootCertificate, randomSerial } from "../../ca/x509";
import { runConcurrently } from "./concurrent";
import { withDurableAuthority } from "./durable-authority";

/**
 * Issue-engine throughput in one process on one thread: Stint's DER-template
 * engine, the bare P-256 signature it cannot beat, and the @peculiar/x509
 * generator making the same certificate, all in the same run; then the
 * authority's whole issue path with durable SQLite commits.
 * Prints one JSON document on stdout; progress goes to stderr.
 *   npm run bench:issue [-- --seconds 3]
 */

interface Result {
  name: string;
  certificates: number;
  seconds: number;
  certsPerSecond: number;
  microsPerCert: number;
}

const secondsArg = process.argv.indexOf("--seconds");
const SECONDS = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 3;

async function measure(name: string, once: (i: number) => unknown | Promise<unknown>): Promise<Result> {
  for (let i = 0; i < 200; i++) await once(i); // warm-up: JIT and caches
  process.stderr.write(`bench: ${name} for ${SECONDS}s…\n`);
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(SECONDS * 1e9);
  let n = 0;
  // Check the clock every 64 iterations so timing overhead stays out of the figure.
  while (process.hrtime.bigint() < deadline) {
    for (let j = 0; j < 64; j++) await once(n++);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return {
    name,
    certificates: n,
    seconds: Number(seconds.toFixed(3)),
    certsPerSecond: Math.round(n / seconds),
    microsPerCert: Number(((seconds / n) * 1e6).toFixed(2)),
  };
}

async function main(): Promise<void> {
  const trustDomain = "bench.example";
  const issuerKeys = await generateKeyPair("ec-p256");
  const now = new Date();
  const notAfter = new Date(now.getTime() + 3_600_000);
  const issuerDer = await createRootCertificate({
    keys: issuerKeys,
    commonName: "Bench Issuer",
    trustDomain,
    notBefore: now,
    notAfter: new Date(now.getTime() + 86_400_000),
    serial: randomSerial(),
  });
  // A pool of distinct leaf keys, so each certificate carries a different SPKI as in real use.
  const leafKeys = Array.from(
    { length: 256 },
    () => generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey,
  );
  const spkis = leafKeys.map((k) => k.export({ format: "der", type: "spki" }));
  const spiffeId = `spiffe://${trustDomain}/ns/default/sa/bench`;

  const engine = new LeafEngine({
    certDer: issuerDer,
    privateKey: issuerKeys.privateKey,
    organization: trustDomain,
  });
  const stint = await measure("stint-engine", (i) =>
    engine.issue({
      spki: spkis[i & 255],
      keyAlgorithm: "ec-p256",
      spiffeId,
      dnsNames: ["bench.svc.example"],
      ipAddresses: [],
      notBefore: now,
      notAfter,
      sequence: i + 1,
    }),
  );

  const tbsSized = Buffer.alloc(420, 1);
  const signOnly = await measure("node-sign-p256-only", () =>
    sign("sha256", tbsSized, { key: issuerKeys.privateKey, dsaEncoding: "der" }),
  );

  x509.cryptoProvider.set(globalThis.crypto);
  const issuerCert = new x509.X509Certificate(issuerDer);
  const signingKey = await globalThis.crypto.subtle.importKey(
    "pkcs8",
    issuerKeys.privateKey.export({ format: "der", type: "pkcs8" }),
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["sign"],
  );
  const webLeafKeys = await Promise.all(
    spkis.map((s) =>
      globalThis.crypto.subtle.importKey("spki", s, { name: "ECDSA", namedCurve: "P-256" }, true, ["verify"]),
    ),
  );
  const authorityKeyId = await x509.AuthorityKeyIdentifierExtension.create(issuerCert);
  const peculiar = await measure("peculiar-x509-generator", async (i) =>
    x509.X509CertificateGenerator.create({
      serialNumber: randomSerial().toString("hex"),
      subject: `O=${trustDomain}`,
      issuer: issuerCert.subject,
      notBefore: now,
      notAfter,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      publicKey: webLeafKeys[i & 255],
      signingKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([
          x509.ExtendedKeyUsage.serverAuth,
          x509.ExtendedKeyUsage.clientAuth,
        ]),
        authorityKeyId,
        await x509.SubjectKeyIdentifierExtension.create(webLeafKeys[i & 255]),
        new x509.SubjectAlternativeNameExtension([
          { type: "url", value: spiffeId },
          { type: "dns", value: "bench.svc.example" },
        ]),
      ],
    }),
  );

  const authority = await measureAuthority(spkis);

  const report = {
    bench: "issue-engine",
    command: "npm run bench:issue",
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? "unknown", node: process.version },
    issuer: "ec-p256",
    leafKey: "ec-p256",
    results: [stint, signOnly, peculiar, authority],
    speedupOverPeculiar: Number((stint.certsPerSecond / peculiar.certsPerSecond).toFixed(1)),
    signatureShareOfEngine: Number((signOnly.microsPerCert / stint.microsPerCert).toFixed(2)),
  };
  process.stdout.write(JSON.stringify(report, null, 2) + "\n");
}

/**
 * The whole in-process path a client waits for: policy check, sequence,
 * signature, and the certificate plus its audit record durably committed to
 * SQLite (WAL, synchronous=FULL), with 256 requests in flight.
 */
function measureAuthority(spkis: Buffer[]): Promise<Result> {
  return withDurableAuthority(spkis, undefined, (issueOne) =>
    measureConcurrent("stint-authority-sqlite-durable", 256, issueOne),
  );
}

/** Like measure(), with `inFlight` operations outstanding at all times. */
async function measureConcurrent(
  name: string,
  inFlight: number,
  once: () => Promise<unknown>,
): Promise<Result> {
  process.stderr.write(`bench: ${name} (${inFlight} in flight) for ${SECONDS}s…\n`);
  const { operations: n, seconds } = await runConcurrently(SECONDS, inFlight, once);
  return {
    name,
    certificates: n,
    seconds: Number(seconds.toFixed(3)),
    certsPerSecond: Math.round(n / seconds),
    microsPerCert: Number(((seconds / n) * 1e6).toFixed(2)),
  };
}

main().catch((err) => {
  console.error(`bench:issue failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});

import "reflect-metadata";
import { constants, generateKeyPairSync } from "node:crypto";
import type { AddressInfo } from "node:net";
import { cpus, loadavg } from "node:os";
import { resolve } from "node:path";
import * as tls from "node:tls";
import { LeafEngine } from "../../ca/engine";
import { generateKeyPair } from "../../ca/keys";
import { createIntermediateCertificate, createRootCertificate, randomSerial } from "../../ca/x509";
import { toPem } from "../../formats/pem";
import { checkSocket } from "../../verify/node";
import { createVerifier, type Verifier } from "../../verify/verifier";

/**
 * What the verifier adds to a mutual-TLS handshake, in one process on one
 * thread: Node tls server and client on loopback with P-256 X509-SVIDs from
 * Stint's own engine, with and without checkSocket on the server for every
 * connection; then verify() alone, cached and uncached. Both sides of each
 * handshake run in this process, so "µs per handshake" is client plus server
 * CPU. Then a new chain: each of 2,000 distinct leaves under one known
 * intermediate verified once by a verifier with its default cache, which
 * is what a service pays at a new peer's first contact. Prints one JSON
 * document on stdout; progress goes to stderr.
 *   npm run bench:verify [-- --seconds 2]
 *   npm run bench:verify -- --new-chain-only [--build OTHER/dist]   (A/B: another commit's verify/)
 */

const arg = (name: string) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const SECONDS = Number(arg("--seconds") ?? 2);
const NEW_CHAIN_ONLY = process.argv.includes("--new-chain-only");
/** The verifier under test: this build's, or another build's dist/ (--build). */
const verifierModule: { createVerifier: typeof createVerifier } = arg("--build")
  ? require(resolve(arg("--build") as string, "verify/verifier"))
  : { createVerifier };
const NEW_LEAVES = 2000;
const ROUNDS = 3;
const TRUST_DOMAIN = "bench.example";

interface Pki {
  rootPem: string;
  server: { key: string; cert: string };
  client: { key: string; cert: string };
  clientChain: Buffer[];
  /** Distinct client chains (leaf, intermediate), each with its own key. */
  newChains: (n: number) => Buffer[][];
}

async function makePki(): Promise<Pki> {
  const now = new Date();
  const rootKeys = await generateKeyPair("ec-p256");
  const rootDer = await createRootCertificate({
    keys: rootKeys,
    commonName: "Bench Root",
    trustDomain: TRUST_DOMAIN,
    notBefore: now,
    notAfter: new Date(now.getTime() + 86_400_000),
    serial: randomSerial(),
  });
  const interKeys = await generateKeyPair("ec-p256");
  const interDer = await createIntermediateCertificate({
    issuer: { certDer: rootDer, privateKey: rootKeys.privateKey },
    subjectPublicKey: interKeys.publicKey,
    commonName: "Bench Intermediate",
    trustDomain: TRUST_DOMAIN,
    notBefore: now,
    notAfter: new Date(now.getTime() + 43_200_000),
    serial: randomSerial(),
    pathLength: 0,
  });
  const engine = new LeafEngine({
    certDer: interDer,
    privateKey: interKeys.privateKey,
    organization: TRUST_DOMAIN,
  });
  const leaf = (path: string, sequence: number) => {
    const keys = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const issued = engine.issue({
      spki: keys.publicKey.export({ format: "der", type: "spki" }),
      keyAlgorithm: "ec-p256",
      spiffeId: `spiffe://${TRUST_DOMAIN}/${path}`,
      dnsNames: [],
      ipAddresses: [],
      notBefore: new Date(now.getTime() - 60_000),
      notAfter: new Date(now.getTime() + 3_600_000),
      sequence,
    });
    return {
      der: issued.der,
      key: keys.privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
      cert: toPem("CERTIFICATE", issued.der) + toPem("CERTIFICATE", interDer),
    };
  };
  const server = leaf("ns/bench/sa/server", 1);
  const client = leaf("ns/bench/sa/client", 2);
  return {
    rootPem: toPem("CERTIFICATE", rootDer),
    server: { key: server.key, cert: server.cert },
    client: { key: client.key, cert: client.cert },
    clientChain: [client.der, interDer],
    newChains: (n) =>
      Array.from({ length: n }, (_, i) => [leaf(`ns/bench/sa/new-${i}`, 100 + i).der, interDer]),
  };
}

/**
 * µs per first verification of a new leaf under a known intermediate, median
 * of 3 rounds: wall time, and this process's CPU time, which a loaded machine
 * inflates far less (preemption is not counted).
 */
function newChain(pki: Pki) {
  const wall: number[] = [];
  const cpu: number[] = [];
  const make = verifierModule.createVerifier;
  const options = { bundle: pki.rootPem, usage: "client" as const, allow: { trustDomain: TRUST_DOMAIN } };
  // Warm the JIT on chains no measured verifier sees.
  const warm = make(options);
  for (const c of pki.newChains(500)) if (!warm.verify(c).ok) throw new Error("bench chain refused");
  for (let round = 0; round < 3; round++) {
    const chains = pki.newChains(NEW_LEAVES);
    const v = make(options);
    v.verify(pki.clientChain); // the intermediate, as a running service has seen it
    const cpu0 = process.cpuUsage();
    const start = process.hrtime.bigint();
    for (const c of chains) v.verify(c);
    wall.push(Number(process.hrtime.bigint() - start) / 1e3 / chains.length);
    const used = process.cpuUsage(cpu0);
    cpu.push((used.user + used.system) / chains.length);
  }
  process.stderr.write("bench: new chains done\n");
  const median = (xs: number[]) => round([...xs].sort((x, y) => x - y)[1]);
  return {
    leaves: NEW_LEAVES,
    microsPerNewChain: median(wall),
    cpuMicrosPerNewChain: median(cpu),
    rounds: wall.map((r) => round(r)),
    cpuRounds: cpu.map((r) => round(r)),
  };
}

interface HandshakeRun {
  handshakes: number;
  seconds: number;
  /** Time spent inside checkSocket on the server, summed. */
  checkSeconds: number;
}

/** Sequential handshakes for `seconds`: connect, wait for the server's one byte (sent after its check), close. */
async function handshakes(pki: Pki, verifier: Verifier | null, seconds: number): Promise<HandshakeRun> {
  let checkNs = 0n;
  const server = tls.createServer(
    {
      key: pki.server.key,
      cert: pki.server.cert,
      ca: pki.rootPem,
      requestCert: true,
      rejectUnauthorized: false,
      secureOptions: constants.SSL_OP_NO_TICKET,
    },
    (socket) => {
      if (verifier) {
        const t0 = process.hrtime.bigint();
        const result = checkSocket(socket, verifier);
        checkNs += process.hrtime.bigint() - t0;
        if (!result.ok) throw new Error(`bench client refused: ${result.reason}`);
      }
      socket.end("k");
    },
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  const once = () =>
    new Promise<void>((resolve, reject) => {
      const socket = tls.connect({
        host: "127.0.0.1",
        port,
        key: pki.client.key,
        cert: pki.client.cert,
        ca: pki.rootPem,
        checkServerIdentity: () => undefined,
      });
      socket.once("data", () => {
        socket.destroy();
        resolve();
      });
      socket.once("error", reject);
    });
  for (let i = 0; i < 50; i++) await once(); // warm-up
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(seconds * 1e9));
  checkNs = 0n;
  let n = 0;
  while (process.hrtime.bigint() < deadline) {
    await once();
    n++;
  }
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  await new Promise<void>((r) => server.close(() => r()));
  return { handshakes: n, seconds: elapsed, checkSeconds: Number(checkNs) / 1e9 };
}

function perCall(name: string, seconds: number, once: () => unknown) {
  for (let i = 0; i < 500; i++) once();
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(seconds * 1e9));
  let n = 0;
  while (process.hrtime.bigint() < deadline) {
    for (let j = 0; j < 64; j++) once();
    n += 64;
  }
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  process.stderr.write(`bench: ${name} done\n`);
  return { calls: n, microsPerCall: round((elapsed / n) * 1e6) };
}

const round = (x: number, digits = 2) => Number(x.toFixed(digits));

async function main(): Promise<void> {
  const pki = await makePki();
  if (NEW_CHAIN_ONLY) {
    const report = {
      bench: "verify",
      command: process.argv.slice(1).join(" "),
      build: arg("--build") ?? "this",
      newChain: newChain(pki),
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  const allow = { trustDomain: TRUST_DOMAIN };
  const verifier = createVerifier({ bundle: pki.rootPem, usage: "client", allow });

  const uncachedVerifier = createVerifier({ bundle: pki.rootPem, usage: "client", allow, cacheSize: 0 });

  // Alternate the modes so drift in machine load hits all alike.
  const plain: HandshakeRun = { handshakes: 0, seconds: 0, checkSeconds: 0 };
  const checked: HandshakeRun = { handshakes: 0, seconds: 0, checkSeconds: 0 };
  const uncached: HandshakeRun = { handshakes: 0, seconds: 0, checkSeconds: 0 };
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [label, v, into] of [
      ["without verifier", null, plain],
      ["with verifier", verifier, checked],
      ["with verifier, cache off", uncachedVerifier, uncached],
    ] as const) {
      process.stderr.write(`bench: handshakes ${label}, round ${round}/${ROUNDS}, ${SECONDS}s…\n`);
      const r = await handshakes(pki, v, SECONDS);
      into.handshakes += r.handshakes;
      into.seconds += r.seconds;
      into.checkSeconds += r.checkSeconds;
    }
  }
  const cachedVerify = perCall("verify cached", SECONDS, () => verifier.verify(pki.clientChain));
  const uncachedVerify = perCall("verify uncached", SECONDS, () => uncachedVerifier.verify(pki.clientChain));
  const newChains = newChain(pki);

  const micros = (r: HandshakeRun) => (r.seconds / r.handshakes) * 1e6;
  const handshakeMicros = micros(plain);
  const checkSocketMicros = (checked.checkSeconds / checked.handshakes) * 1e6;
  const mode = (r: HandshakeRun, withCheck: boolean) => ({
    handshakes: r.handshakes,
    handshakesPerSecond: Math.round(r.handshakes / r.seconds),
    microsPerHandshake: round(micros(r)),
    ...(withCheck ? { checkSocketMicrosPerConnection: round((r.checkSeconds / r.handshakes) * 1e6) } : {}),
  });
  const report = {
    bench: "verify",
    command: "npm run bench:verify",
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model ?? "unknown",
      node: process.version,
      loadAverage: loadavg().map((x) => round(x)),
    },
    setup:
      "TLS 1.3 on loopback, P-256 leaf + intermediate from Stint's engine, sequential handshakes, " +
      "client and server in this one process (µs per handshake counts both sides)",
    handshake: {
      withoutVerifier: mode(plain, false),
      /** checkSocket on every connection; after the first, the leaf alone finds the cached path. */
      withVerifier: mode(checked, true),
      /** Every connection pays the full chain read (getPeerCertificate(true)) and validation: a first contact. */
      withVerifierCacheOff: mode(uncached, true),
    },
    verifier: {
      cached: cachedVerify,
      uncached: uncachedVerify,
      /** A new leaf (first contact) under an intermediate the verifier has seen: the cold path. */
      newChain: newChains,
      stats: verifier.stats(),
    },
    ratio: {
      /** checkSocket on a known peer over a handshake without it: the target is ≤ 0.05. */
      checkSocketOverHandshake: round(checkSocketMicros / handshakeMicros, 4),
      cachedVerifyOverHandshake: round(cachedVerify.microsPerCall / handshakeMicros, 4),
      /** A first contact (cache off): the cost a peer pays once per leaf. */
      firstContactOverHandshake: round(
        ((uncached.checkSeconds / uncached.handshakes) * 1e6) / handshakeMicros,
        4,
      ),
      /** From throughput; noisier, as it includes run-to-run variation. */
      measuredSlowdown: round(micros(checked) / handshakeMicros - 1, 4),
      target: 0.05,
    },
  };
  process.stdout.write(JSON.stringify(report, null, 2) + "\n");
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:verify failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});

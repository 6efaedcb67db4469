import { rmSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SequenceAllocator } from "../../ca/sequence";
import { SqliteStore } from "../../ca/store/sqlite";
import { encodeFeed, type FeedSnapshot, log2Binomial } from "../../formats/feed";
import { golombBits, golombParameter } from "../../formats/golomb";
import { seeded } from "./seeded";

/**
 * The feed's size against the certificates actually issued (issue 21, "size
 * honesty"): an issuer's window [lo, hi) also spans every sequence number
 * reserved and never used, and the Golomb code pays for the window, not for
 * the certificates. U certificates are issued through the real allocator on a
 * real SQLite store by one long-running server and a number of short-lived
 * CLI processes (one certificate each, interleaved at random); R of them are
 * revoked at random. bits is the whole issuer record (its 17 or so fixed
 * bytes included), streamBits the Golomb codewords alone, each against both bounds:
 *   log2 C(U, R)  U = certificates issued: what an encoding could reach
 *   log2 C(W, R)  W = the window's width: what Golomb coding of the window reaches
 * for the old rule (every process reserves 1,000 numbers at once) and the
 * current one (blocks start at one number and double, ca/sequence.ts).
 */

const ISSUER = "0011223344556677";
const SERVER_BLOCK = 1000;

interface Scenario {
  name: string;
  issued: number;
  revoked: number;
  /** Certificates issued by `stint ca issue` processes, one each. */
  cliProcesses: number;
  /** Times the server restarts (losing the rest of its block). */
  serverRestarts: number;
}

export const SCENARIOS: Scenario[] = [
  { name: "server only", issued: 3000, revoked: 300, cliProcesses: 0, serverRestarts: 0 },
  { name: "server, restarted 5 times", issued: 3000, revoked: 300, cliProcesses: 0, serverRestarts: 5 },
  { name: "server + 30 CLI processes", issued: 3000, revoked: 300, cliProcesses: 30, serverRestarts: 0 },
  { name: "server + 300 CLI processes", issued: 3000, revoked: 300, cliProcesses: 300, serverRestarts: 2 },
];

type Rule = "fixed 1000" | "doubling";

/** The old allocator's rule: a whole block per process, whatever it goes on to issue. */
class FixedBlocks {
  private next = 0;
  private end = 0;
  constructor(private readonly store: SqliteStore) {}
  async take(): Promise<number> {
    if (this.next >= this.end) {
      this.next = await this.store.reserveSequences(ISSUER, SERVER_BLOCK);
      this.end = this.next + SERVER_BLOCK;
    }
    return this.next++;
  }
}

async function issueAll(store: SqliteStore, s: Scenario, rule: Rule): Promise<number[]> {
  const allocator = () =>
    rule === "doubling" ? new SequenceAllocator(store, ISSUER, SERVER_BLOCK) : new FixedBlocks(store);
  const rand = seeded(s.issued + s.cliProcesses * 7 + s.serverRestarts);
  const fromServer = s.issued - s.cliProcesses;
  // The instants (as counts of server certificates issued before) at which a CLI process runs or the server restarts.
  const cliAt = Array.from({ length: s.cliProcesses }, () => Math.floor(rand() * fromServer)).sort(
    (a, b) => a - b,
  );
  const restartAt = new Set(Array.from({ length: s.serverRestarts }, () => Math.floor(rand() * fromServer)));
  const sequences: number[] = [];
  let server = allocator();
  let c = 0;
  for (let i = 0; i < fromServer; i++) {
    while (c < cliAt.length && cliAt[c] === i) {
      sequences.push(await allocator().take());
      c++;
    }
    if (restartAt.has(i)) server = allocator();
    sequences.push(await server.take());
  }
  while (c++ < cliAt.length) sequences.push(await allocator().take());
  return sequences;
}

async function row(s: Scenario, rule: Rule) {
  const dir = await mkdtemp(join(tmpdir(), "stint-bench-window-"));
  const store = await SqliteStore.open(join(dir, "stint.db"), { create: true });
  try {
    const at = new Date("2025-01-01T00:00:00Z");
    await store.putIssuer(
      {
        id: ISSUER,
        kind: "intermediate",
        parentId: null,
        state: "active",
        subject: "CN=bench",
        certDer: Buffer.from("bench"),
        keyPath: null,
        notBefore: at,
        notAfter: new Date(at.getTime() + 86_400_000),
        createdAt: at,
      },
      { at, actor: "bench", action: "issuer.create", subject: ISSUER, details: {} },
    );
    const issued = (await issueAll(store, s, rule)).sort((a, b) => a - b);
    const rand = seeded(s.revoked);
    const picked = new Set<number>();
    while (picked.size < s.revoked) picked.add(issued[Math.floor(rand() * issued.length)]);
    const lo = issued[0];
    const hi = issued[issued.length - 1] + 1;
    const doc = (issuers: FeedSnapshot["issuers"]): FeedSnapshot => ({
      kind: "snapshot",
      trustDomain: "bench.example",
      sequence: 1,
      thisUpdate: at,
      nextUpdate: new Date(at.getTime() + 600_000),
      maxClockSkew: 300_000,
      issuers,
      revokedIssuers: [],
      retiredIssuers: [],
    });
    const revoked = [...picked].sort((a, b) => a - b);
    const bits =
      (encodeFeed(doc([{ issuerId: ISSUER, lo, hi, revoked }])).length - encodeFeed(doc([])).length) * 8;
    const issuedBound = log2Binomial(s.issued, s.revoked);
    const windowBound = log2Binomial(hi - lo, s.revoked);
    const streamBits = golombBits(revoked, lo, golombParameter(hi - lo, revoked.length));
    const round = (x: number) => Number(x.toFixed(3));
    return {
      scenario: s.name,
      rule,
      issued: s.issued,
      revoked: s.revoked,
      window: hi - lo,
      bits,
      streamBits,
      boundIssued: Number(issuedBound.toFixed(1)),
      boundWindow: Number(windowBound.toFixed(1)),
      ratioIssued: round(bits / issuedBound),
      ratioWindow: round(bits / windowBound),
      streamRatioIssued: round(streamBits / issuedBound),
      streamRatioWindow: round(streamBits / windowBound),
    };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function windowRows() {
  const rows = [];
  for (const s of SCENARIOS) {
    for (const rule of ["fixed 1000", "doubling"] as const) {
      process.stderr.write(`bench: feed window, ${s.name}, ${rule}…\n`);
      rows.push(await row(s, rule));
    }
  }
  return rows;
}

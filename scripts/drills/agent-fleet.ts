import { join } from "node:path";
import { bootstrapPki } from "../../test/helpers/openssl";
import { checkSet, rootFingerprint, type SetOnDisk } from "./agent-setup";
import { type DrillContext, sleep } from "./harness";
import { type CaServer, type Proc, spawnStint, stint, stop } from "./processes";

/**
 * Several `stint agent` daemons with short certificates against one CA, and
 * a watcher that reads each agent's set on disk every CHECK_MS as a server
 * would: it counts the agents whose certificate was ever seen expired (the
 * figure the restart and ca-outage drills must keep at 0) and every renewal.
 * The agents attest with x509pop (one bootstrap leaf, one SPIFFE ID, their
 * own state and output directories), so an agent whose certificate did
 * expire still recovers and the drill goes on counting.
 */

const CHECK_MS = 200;
const CN = "fleet-1";

/** The bootstrap PKI: made before the CA starts, since `ca serve` takes its bundle as a flag. */
export function fleetPki(dir: string) {
  return bootstrapPki(dir, "fleet-bootstrap", CN);
}

export interface FleetOptions {
  ca: CaServer;
  /** The CA's data directory and environment, for `stint entry create`. */
  dataDir: string;
  env: Record<string, string>;
  spiffeId: string;
  pki: ReturnType<typeof fleetPki>;
  agents: number;
  certTtlSeconds: number;
  /** Where agent i keeps its state and output: dir/agent-i. */
  dir: string;
  extraAgentArgs?: string[];
}

interface Watched {
  proc: Proc;
  outDir: string;
  /** Every set seen, by serial, in order. */
  serials: string[];
  current: SetOnDisk | null;
  /** Serials seen on disk after their notAfter. */
  expiredSerials: Set<string>;
  /** Reads that failed twice in a row, once the agent had a set. */
  unreadable: number;
}

export class AgentFleet {
  private readonly agents: Watched[] = [];
  private watching = false;
  private watcher: Promise<void> = Promise.resolve();

  constructor(
    private readonly ctx: DrillContext<unknown>,
    private readonly opts: FleetOptions,
  ) {}

  /** Creates the entry, starts the agents and resolves once each has written its first set. */
  async start(): Promise<void> {
    const o = this.opts;
    const entry = stint(
      ["entry", "create", "--spiffe-id", o.spiffeId, "--selector", `x509pop:subject:cn:${CN}`].concat([
        "--ttl",
        `${o.certTtlSeconds}s`,
        "--server",
        o.ca.url,
      ]),
      o.env,
    );
    if (entry.code !== 0) throw new Error(`stint entry create: ${entry.stderr.trim()}`);
    const fingerprint = rootFingerprint(join(o.dataDir, "root.pem"));
    for (let i = 0; i < o.agents; i++) {
      const dir = join(o.dir, `agent-${i}`);
      const outDir = join(dir, "out");
      const proc = spawnStint([
        "agent",
        "--ca-url",
        o.ca.url,
        "--ca-fingerprint",
        fingerprint,
        "--spiffe-id",
        o.spiffeId,
        "--state-dir",
        join(dir, "state"),
        "--out-dir",
        outDir,
        "--attestor",
        "x509pop",
        "--x509pop-cert-file",
        o.pki.leafPath,
        "--x509pop-key-file",
        o.pki.keyPath,
        "--health-listen",
        "127.0.0.1:0",
        ...(o.extraAgentArgs ?? []),
      ]);
      this.ctx.onCleanup(() => stop(proc));
      this.agents.push({
        proc,
        outDir,
        serials: [],
        current: null,
        expiredSerials: new Set(),
        unreadable: 0,
      });
    }
    const until = Date.now() + 60_000;
    while (this.agents.some((a) => readSet(a.outDir) === null)) {
      if (Date.now() > until || this.ctx.overdue())
        throw new Error(`not every agent wrote a certificate within 60 s`);
      const dead = this.agents.find((a) => a.proc.child.exitCode !== null);
      if (dead) throw new Error(`an agent exited at start:\n${dead.proc.lines().slice(-10).join("\n")}`);
      await sleep(100);
    }
    this.watching = true;
    this.watcher = this.watch();
  }

  /** The sets the agents hold now (after start). */
  current(): SetOnDisk[] {
    return this.agents.map((a) => a.current ?? readSet(a.outDir)!);
  }

  /** Renewals seen so far, all agents together. */
  get renewals(): number {
    return this.agents.reduce((n, a) => n + Math.max(0, a.serials.length - 1), 0);
  }

  /** Agents whose serial is not one they held at `since` (ms): each renewed at least once after it. */
  renewedSince(since: Map<number, string>): number {
    return this.agents.filter((a, i) => a.current !== null && a.current.serial !== since.get(i)).length;
  }

  /** The serial each agent holds now, by index. */
  snapshot(): Map<number, string> {
    return new Map(this.agents.map((a, i) => [i, a.current?.serial ?? ""]));
  }

  private async watch(): Promise<void> {
    while (this.watching) {
      const now = Date.now();
      for (const a of this.agents) {
        const set = readSet(a.outDir) ?? (await sleep(50).then(() => readSet(a.outDir)));
        if (set === null) {
          a.unreadable++;
          continue;
        }
        if (a.serials[a.serials.length - 1] !== set.serial) a.serials.push(set.serial);
        a.current = set;
        if (now > set.notAfter) a.expiredSerials.add(set.serial);
      }
      await sleep(CHECK_MS);
    }
  }

  /** Stops watching and the agents; the figures and the must-be-zero counts. */
  async stop() {
    this.watching = false;
    await this.watcher;
    const codes = await Promise.all(this.agents.map((a) => stop(a.proc)));
    for (const [i, a] of this.agents.entries()) {
      if (a.expiredSerials.size === 0) continue;
      // What the agent did about it, for whoever reads a failed run.
      const said = a.proc.lines().filter((l) => !l.includes('"level":"debug"'));
      this.ctx.log(`agent ${i} held an expired certificate; its last lines:\n${said.slice(-12).join("\n")}`);
    }
    return {
      zeros: {
        // An agent that ever had an expired certificate on disk: a server using it would fail handshakes.
        agentsWithExpiredCertificate: this.agents.filter((a) => a.expiredSerials.size > 0).length,
        agentSetsUnreadable: this.agents.reduce((n, a) => n + a.unreadable, 0),
        agentsStoppedUncleanly: codes.filter((c) => c !== 0).length,
      },
      figures: {
        agents: this.agents.length,
        agentCertificateLifetimeSeconds: this.opts.certTtlSeconds,
        agentRenewals: this.renewals,
        expiredCertificatesSeen: this.agents.reduce((n, a) => n + a.expiredSerials.size, 0),
        failedRenewalAttempts: this.agents.reduce(
          (n, a) => n + a.proc.lines().filter((l) => l.includes('"msg":"renewal failed')).length,
          0,
        ),
      },
    };
  }
}

/** The set on disk, or null while it cannot be read whole (not written yet, or mid-switch). */
function readSet(outDir: string): SetOnDisk | null {
  try {
    return checkSet(outDir);
  } catch {
    return null;
  }
}

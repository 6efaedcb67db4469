import { createPrivateKey, generateKeyPairSync, type KeyObject, X509Certificate } from "node:crypto";
import { Agent } from "node:https";
import { AcmeClient, AcmeProblem, joinTokenEvidence, type Order } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { isStintError } from "../../common/errors";
import { pemDecodeAll } from "../../formats/pem";
import { sequenceOfSerialHex } from "../../formats/serial";
import type { JoinToken } from "../bench/acme-load/run";
import { sleep } from "./harness";

/**
 * Issuance that carries on through CA crashes: workers, each with its own
 * ACME account, obtain certificates with the full RFC 8555 flow (order,
 * attest-01 with a join token, finalize, download) and renew them with
 * renew-cert. A request cut off by a kill is retried; an order is resumed
 * from the state the CA reports after its restart. Every certificate a
 * worker receives is recorded, to be looked up in the store afterwards.
 */

export interface Received {
  /** Lowercase hex of the serial's content octets, as the store keys it. */
  serial: string;
  issuer: string;
  sequence: number;
  der: Buffer;
  via: "order" | "renewal";
}

export interface IssuanceFigures {
  certificatesReceived: number;
  fromOrders: number;
  fromRenewals: number;
  /** Requests a kill cut off (connection refused or reset), each retried. */
  requestsInterrupted: number;
  /** Responses with status 5xx. */
  serverErrors: number;
  /** Orders given up because the CA refused a step; by problem type. */
  ordersAbandoned: Record<string, number>;
  /** Orders still "processing" when the worker stopped waiting (finalize cut off by a kill). */
  ordersStuckProcessing: number;
  /** Renewals the CA refused (not cut off): each is a problem worth reading. */
  renewalsRefused: number;
  /** The first few refusal messages. */
  refusals: string[];
}

export interface IssuanceOptions {
  directoryUrl: string;
  ca: string;
  workers: number;
  tokens: JoinToken[];
  /** Renewals after each certificate from an order, before the worker orders again. */
  renewalsPerOrder: number;
  log: (line: string) => void;
  /** How long one request may keep failing (CA down) before the worker gives up. */
  patienceMs?: number;
}

interface Held {
  key: KeyObject;
  chain: Buffer[];
  spiffeId: string;
}

/** Thrown when the CA stayed unreachable longer than the worker's patience. */
class GaveUp extends Error {}

/**
 * A fresh P-256 key made as DER and imported: on Node 20 a key straight from
 * generateKeyPairSync can deadlock in key.export({format: "jwk"}) (see
 * scripts/bench/acme-load/load.ts), which the account's thumbprint calls.
 */
function newKey(): KeyObject {
  const { privateKey } = generateKeyPairSync("ec", {
    namedCurve: "P-256",
    privateKeyEncoding: { format: "der", type: "pkcs8" },
    publicKeyEncoding: { format: "der", type: "spki" },
  });
  return createPrivateKey({ key: privateKey, format: "der", type: "pkcs8" });
}

export function describeLeaf(der: Buffer, via: Received["via"]): Received {
  const cert = new X509Certificate(der);
  const serial = cert.serialNumber.toLowerCase().padStart(34, "0");
  return { serial, issuer: cert.issuer, sequence: sequenceOfSerialHex(serial) ?? -1, der, via };
}

const cutOff = (err: unknown) => isStintError(err, "ERR_CONNECTION");

export class IssuanceLoad {
  readonly received: Received[] = [];
  private readonly figures = {
    requestsInterrupted: 0,
    serverErrors: 0,
    ordersAbandoned: {} as Record<string, number>,
    ordersStuckProcessing: 0,
    renewalsRefused: 0,
    refusals: [] as string[],
  };
  private nextToken = 0;
  private stopping = false;
  private running: Promise<void>[] = [];
  private readonly agent: Agent;

  constructor(private readonly opts: IssuanceOptions) {
    this.agent = new Agent({ keepAlive: true, maxSockets: opts.workers * 2 });
  }

  start(): void {
    this.running = Array.from({ length: this.opts.workers }, (_, i) => this.worker(i));
  }

  /** Certificates received so far. */
  get count(): number {
    return this.received.length;
  }

  /** Lets each worker finish its current certificate, then resolves. */
  async stop(): Promise<IssuanceFigures> {
    this.stopping = true;
    await Promise.all(this.running);
    this.agent.destroy();
    return {
      certificatesReceived: this.received.length,
      fromOrders: this.received.filter((r) => r.via === "order").length,
      fromRenewals: this.received.filter((r) => r.via === "renewal").length,
      ...this.figures,
    };
  }

  private refused(what: string, err: unknown): void {
    const msg = `${what}: ${err instanceof Error ? err.message : String(err)}`;
    if (this.figures.refusals.length < 5 && !this.figures.refusals.includes(msg)) {
      this.figures.refusals.push(msg);
      this.opts.log(`refused: ${msg}`);
    }
  }

  /**
   * Runs one request until it gets an answer: cut-off requests and 5xx
   * answers are retried after a short pause (the CA is restarting), any
   * other refusal is thrown to the caller.
   */
  private async step<T>(fn: () => Promise<T>): Promise<T> {
    const until = Date.now() + (this.opts.patienceMs ?? 90_000);
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        if (err instanceof AcmeProblem && err.status >= 500) this.figures.serverErrors++;
        else if (cutOff(err)) this.figures.requestsInterrupted++;
        else throw err;
        if (Date.now() > until)
          throw new GaveUp(`the CA did not answer for ${this.opts.patienceMs ?? 90_000} ms`);
        await sleep(100 + Math.random() * 200);
      }
    }
  }

  private async worker(index: number): Promise<void> {
    const client = await this.step(() =>
      AcmeClient.connect({
        directoryUrl: this.opts.directoryUrl,
        ca: this.opts.ca,
        accountKey: newKey(),
        agent: this.agent,
      }),
    );
    await this.step(() => client.newAccount());
    let held: Held | null = null;
    let sinceOrder = 0;
    let outOfTokens = false;
    try {
      while (!this.stopping) {
        const order = !outOfTokens && (held === null || sinceOrder >= this.opts.renewalsPerOrder);
        if (order) {
          const token = this.opts.tokens[this.nextToken++];
          if (token === undefined) {
            // From now on this worker only renews. A flag, not a reset of sinceOrder: with
            // renewalsPerOrder 0 a reset chose "order" again at once, and that loop never
            // awaited, blocking the event loop for good (the restart drill's hang).
            outOfTokens = true;
            continue;
          }
          const got = await this.order(client, token);
          if (got) {
            held = got;
            sinceOrder = 0;
          }
        } else {
          if (held === null) return;
          held = await this.renew(client, held);
          sinceOrder++;
        }
      }
    } catch (err) {
      if (!(err instanceof GaveUp)) throw err;
      this.opts.log(`worker ${index}: ${err.message}; stopping`);
    }
  }

  /** The full flow for one join token, resumed from the order's state after each cut-off. */
  private async order(client: AcmeClient, token: JoinToken): Promise<Held | null> {
    const key = newKey();
    const csr = buildCsr({ key, spiffeId: token.spiffeId });
    let order: Order = await this.step(() => client.newOrder([{ type: "spiffe", value: token.spiffeId }]));
    let processingSince = 0;
    for (let round = 0; round < 1000; round++) {
      try {
        switch (order.status) {
          case "pending": {
            const authz = await this.step(() => client.getAuthorization(order.authorizations[0]));
            if (authz.status === "pending") {
              const challenge = authz.challenges.find((c) => c.type === "attest-01");
              if (!challenge) throw new Error(`authorization ${authz.url} has no attest-01`);
              const answered = await client.attest(
                challenge.url,
                "join_token",
                joinTokenEvidence(token.token),
              );
              if (answered.status === "invalid")
                return this.abandon("challenge invalid", answered.error?.detail);
            } else if (authz.status !== "valid") return this.abandon(`authorization ${authz.status}`);
            break;
          }
          case "ready":
            order = await client.finalize(order, csr);
            continue;
          case "processing":
            processingSince ||= Date.now();
            // Finalize takes milliseconds; an order processing this long was cut off mid-issuance.
            if (Date.now() - processingSince > 15_000) {
              this.figures.ordersStuckProcessing++;
              this.opts.log(`order ${order.url} still processing after 15 s; giving up on it`);
              return null;
            }
            await sleep(200);
            break;
          case "valid": {
            const url = order.certificate;
            if (!url) throw new Error(`order ${order.url} is valid but names no certificate`);
            const pem = await this.step(() => client.downloadCertificate(url));
            const chain = pemDecodeAll(pem, "CERTIFICATE", "downloaded chain");
            this.received.push(describeLeaf(chain[0], "order"));
            return { key, chain, spiffeId: token.spiffeId };
          }
          case "invalid":
            return this.abandon("order invalid", order.error?.detail);
        }
      } catch (err) {
        if (cutOff(err)) this.figures.requestsInterrupted++;
        else if (err instanceof AcmeProblem && err.status >= 500) this.figures.serverErrors++;
        else if (err instanceof AcmeProblem) {
          this.refused("order", err);
          return this.abandon(err.type.replace("urn:ietf:params:acme:error:", ""));
        } else throw err;
        await sleep(100 + Math.random() * 200);
      }
      const url = order.url;
      order = await this.step(() => client.getOrder(url));
    }
    return this.abandon("too many rounds");
  }

  private abandon(reason: string, detail?: string): null {
    const key = detail ? `${reason}: ${detail}` : reason;
    this.figures.ordersAbandoned[key] = (this.figures.ordersAbandoned[key] ?? 0) + 1;
    return null;
  }

  /** renew-cert from the held certificate; on a refusal the worker keeps what it holds. */
  private async renew(client: AcmeClient, held: Held): Promise<Held> {
    const key = newKey();
    const csr = buildCsr({ key, spiffeId: held.spiffeId });
    try {
      const pem = await this.step(() => client.renewWithCertificate(held.chain, held.key, csr));
      const chain = pemDecodeAll(pem, "CERTIFICATE", "renewed chain");
      this.received.push(describeLeaf(chain[0], "renewal"));
      return { key, chain, spiffeId: held.spiffeId };
    } catch (err) {
      if (!(err instanceof AcmeProblem)) throw err;
      this.figures.renewalsRefused++;
      this.refused("renewal", err);
      return held;
    }
  }
}

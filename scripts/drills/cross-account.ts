import type { KeyObject } from "node:crypto";
import type { AcmeClient, Authorization, Order } from "../../agent/acme-client";
import { buildCsr } from "../../agent/csr";
import { b64u, exportJwk, flattenedJws } from "../../formats/jose";
import { ecKey } from "./hostile-cases";
import { problemOf, request } from "./https";

/**
 * One ACME account's requests on another's objects, each signed correctly
 * by the first account (so only the ownership check can refuse it), then
 * the owner's own requests on the same objects, which must succeed.
 */

export interface Party {
  client: AcmeClient;
  key: KeyObject;
  kid: string;
  /** A valid order with its certificate. */
  order: Order;
  authz: Authorization;
  /** An order whose authorization is valid: ready to finalize. */
  ready: Order;
  /** An order nobody answered yet: its challenge is pending. */
  pending: Order;
  chain: Buffer[];
  certKey: KeyObject;
}

export interface CrossAccountResult {
  tried: number;
  /** The attempts answered 2xx: each is a hole. */
  accepted: string[];
  /** Refusals that were not 4xx problem documents. */
  notProblem: string[];
  /** The owner's objects changed by the attempts (orders, account, challenge). */
  sideEffects: number;
  /** What a certificate download by another account got (any account may download certificates today). */
  certificateDownload: number;
  /** The owner's own requests that failed. */
  controls: string[];
}

export async function crossAccountAttempts(
  origin: string,
  ca: string,
  a: Party,
  b: Party,
): Promise<CrossAccountResult> {
  const nonce = async () =>
    String((await request(`${origin}/acme/new-nonce`, { method: "HEAD", ca })).headers["replay-nonce"]);
  const send = async (
    who: { key: KeyObject; header: Record<string, unknown> },
    url: string,
    payload: unknown,
  ) => {
    const body = JSON.stringify(flattenedJws(who.key, { nonce: await nonce(), url, ...who.header }, payload));
    return request(url, { method: "POST", ca, headers: { "content-type": "application/jose+json" }, body });
  };
  const asB = { key: b.key, header: { kid: b.kid } };
  const keyChangeUrl = `${origin}/acme/key-change`;
  const newKey = ecKey();
  const attempts: [string, () => ReturnType<typeof send>][] = [
    ["read the order", () => send(asB, a.order.url, null)],
    ["read the authorization", () => send(asB, a.authz.url, null)],
    ["answer the valid challenge", () => send(asB, a.authz.challenges[0].url, {})],
    [
      "answer the pending challenge",
      async () => {
        // The owner reads the challenge's URL; the other account only needs to know it.
        const challenge = (await a.client.getAuthorization(a.pending.authorizations[0])).challenges[0].url;
        return send(asB, challenge, { attestor: "join_token", evidence: { token: "x".repeat(43) } });
      },
    ],
    [
      "finalize the ready order",
      () =>
        send(asB, a.ready.finalize, {
          csr: b64u(buildCsr({ key: ecKey(), spiffeId: a.order.identifiers[0].value })),
        }),
    ],
    ["list the account's orders", () => send(asB, `${a.kid}/orders`, null)],
    ["read the account", () => send(asB, a.kid, null)],
    ["deactivate the account", () => send(asB, a.kid, { status: "deactivated" })],
    [
      "change the account's key",
      () =>
        send(
          asB,
          keyChangeUrl,
          flattenedJws(
            newKey,
            { jwk: exportJwk(newKey), url: keyChangeUrl },
            { account: a.kid, oldKey: exportJwk(a.key) },
          ),
        ),
    ],
    [
      "revoke the certificate",
      () => send(asB, `${origin}/acme/revoke-cert`, { certificate: b64u(a.chain[0]) }),
    ],
    [
      "renew the certificate (x5c signed by another key)",
      () =>
        send(
          { key: b.key, header: { x5c: a.chain.map((c) => c.toString("base64")) } },
          `${origin}/acme/renew-cert`,
          { csr: b64u(buildCsr({ key: ecKey(), spiffeId: a.order.identifiers[0].value })) },
        ),
    ],
  ];
  const accepted: string[] = [];
  const notProblem: string[] = [];
  for (const [name, attempt] of attempts) {
    const r = await attempt();
    if (r.status >= 200 && r.status < 300) accepted.push(`${name}: ${r.status}`);
    else if (r.status < 400 || r.status >= 500 || !problemOf(r)) notProblem.push(`${name}: ${r.status}`);
  }
  const download = await send(asB, a.order.certificate!, null);

  // Nothing of A's moved.
  let sideEffects = 0;
  if ((await a.client.getOrder(a.ready.url)).status !== "ready") sideEffects++;
  if ((await a.client.getOrder(a.order.url)).status !== "valid") sideEffects++;
  if ((await a.client.getAuthorization(a.pending.authorizations[0])).status !== "pending") sideEffects++;
  if ((await a.client.account()).status !== "valid") sideEffects++;

  // The owner does the same and succeeds (revocation last: it ends the certificate).
  const controls: string[] = [];
  const control = async (name: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (err) {
      controls.push(`owner ${name}: ${(err as Error).message}`);
    }
  };
  await control("read the order", () => a.client.getOrder(a.order.url));
  await control("read the authorization", () => a.client.getAuthorization(a.authz.url));
  await control("list the account's orders", () => a.client.listOrders());
  await control("finalize the ready order", async () => {
    const done = await a.client.finalize(
      a.ready,
      buildCsr({ key: ecKey(), spiffeId: a.order.identifiers[0].value }),
    );
    if (done.status !== "valid") throw new Error(`order is ${done.status}`);
  });
  await control("renew the certificate", () =>
    a.client.renewWithCertificate(
      a.chain,
      a.certKey,
      buildCsr({ key: ecKey(), spiffeId: a.order.identifiers[0].value }),
    ),
  );
  await control("revoke the certificate", () => a.client.revoke(a.chain[0]));
  return {
    tried: attempts.length + 1,
    accepted,
    notProblem,
    sideEffects,
    certificateDownload: download.status,
    controls,
  };
}

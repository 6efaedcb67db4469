import type { AttestationContext } from "../../acme/attest/attestor";
import { JoinTokenAttestor, type JoinTokenLedger } from "../../acme/attest/join-token";
import { parseSelector } from "../../ca/entries";
import {
  hashJoinToken,
  JOIN_TOKEN_DEFAULT_TTL_MS,
  type NewJoinToken,
  newJoinToken,
} from "../../ca/join-token";
import type { AuditEvent } from "../../ca/store";
import { stintError } from "./helpers";

/**
 * In-memory ledger, atomic the way the SQL one is (one UPDATE … WHERE used_at
 * IS NULL): after the simulated I/O wait, the check and the mark happen in one
 * synchronous step, so no other call can interleave between them.
 */
class MemoryLedger implements JoinTokenLedger {
  private readonly rows = new Map<string, { id: string; spiffeId: string; expiresAt: Date; used: boolean }>();
  /** The audit records spends wrote, as the store appends them in the consuming transaction. */
  readonly audit: AuditEvent[] = [];

  add(t: NewJoinToken): void {
    this.rows.set(t.hash, { id: t.id, spiffeId: t.spiffeId, expiresAt: t.expiresAt, used: false });
  }

  async consume(hash: string, now: Date, spend: (token: { id: string; spiffeId: string }) => AuditEvent) {
    await new Promise((resolve) => setImmediate(resolve)); // a round trip to the database
    const row = this.rows.get(hash);
    if (!row) return null;
    const token = { id: row.id, spiffeId: row.spiffeId };
    if (row.used) return { outcome: "used" as const, ...token };
    if (now.getTime() >= row.expiresAt.getTime()) return { outcome: "expired" as const, ...token };
    row.used = true;
    this.audit.push(spend(token));
    return { outcome: "taken" as const, ...token };
  }
}

const NOW = new Date("2030-06-01T12:00:00Z");
const ID = "spiffe://example.org/web";
const ctx = (over: Partial<AttestationContext> = {}): AttestationContext => ({
  spiffeId: ID,
  token: "challenge-token",
  accountThumbprint: "thumb",
  account: "https://ca.test/acme/acct/a1",
  now: NOW,
  ...over,
});

function setup(opts: { spiffeId?: string; ttlMs?: number } = {}) {
  const ledger = new MemoryLedger();
  const token = newJoinToken({ spiffeId: opts.spiffeId ?? ID, ttlMs: opts.ttlMs, now: NOW });
  ledger.add(token);
  return { ledger, token, attestor: new JoinTokenAttestor(ledger) };
}

/** Asserts the refusal, and that neither the secret nor its hash leaked into the message. */
async function refused(
  p: Promise<unknown>,
  token: NewJoinToken,
  code: "ERR_ATTESTATION" | "ERR_MALFORMED",
  message: string,
) {
  const err = await p.then(
    () => {
      throw new Error("expected a refusal");
    },
    (e: unknown) => e,
  );
  expect(err).toEqual(stintError(code, message));
  expect((err as Error).message).not.toContain(token.secret);
  expect((err as Error).message).not.toContain(token.hash);
}

describe("newJoinToken", () => {
  it("makes an 8-byte hex id, a 32-byte base64url secret stored only as its SHA-256, bound to the canonical ID", () => {
    const t = newJoinToken({ spiffeId: ID, now: NOW });
    expect(t.id).toMatch(/^[0-9a-f]{16}$/);
    expect(t.secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(t.secret, "base64url")).toHaveLength(32);
    expect(t.hash).toBe(hashJoinToken(t.secret));
    expect(t.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(t.spiffeId).toBe(ID);
    expect(t.expiresAt.getTime() - NOW.getTime()).toBe(JOIN_TOKEN_DEFAULT_TTL_MS);
    expect(JOIN_TOKEN_DEFAULT_TTL_MS).toBe(10 * 60_000);
    expect(newJoinToken({ spiffeId: ID, now: NOW }).secret).not.toBe(t.secret);
  });

  it("has a known-answer hash (hex SHA-256 of the UTF-8 secret)", () => {
    expect(hashJoinToken("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });

  it("refuses bad lifetimes and bad SPIFFE IDs", () => {
    for (const ttlMs of [0, -1, 1.5, 25 * 3_600_000]) {
      expect(() => newJoinToken({ spiffeId: ID, ttlMs, now: NOW })).toThrow(
        stintError(
          "ERR_POLICY_TTL",
          new RegExp(`^join token lifetime must be between 1 ms and 24 h; got ${ttlMs} ms$`),
        ),
      );
    }
    expect(() => newJoinToken({ spiffeId: "https://example.org/web", now: NOW })).toThrow(
      stintError("ERR_POLICY_SPIFFE", /is not a SPIFFE ID: it must start with "spiffe:\/\/"/),
    );
  });
});

describe("join_token attestor", () => {
  it("grants join_token:<id>, one-time", async () => {
    const { attestor, token } = setup();
    const result = await attestor.attest({ token: token.secret }, ctx());
    expect(result).toEqual({
      selectors: [`join_token:${token.id}`],
      reusable: false,
      evidence: `join_token:${token.id}`,
    });
    expect(parseSelector(result.selectors[0])).toBe(result.selectors[0]);
  });

  it("has every spend recorded by the ledger as token.spend, with the account and the outcome", async () => {
    const { attestor, token, ledger } = setup();
    await attestor.attest({ token: token.secret }, ctx());
    const other = newJoinToken({ spiffeId: "spiffe://example.org/db", now: NOW });
    ledger.add(other);
    const noted: string[] = [];
    await expect(
      attestor.attest({ token: other.secret }, ctx({ reference: (r) => noted.push(r) })),
    ).rejects.toMatchObject({ code: "ERR_ATTESTATION" });
    await expect(
      attestor.attest({ token: token.secret }, ctx({ reference: (r) => noted.push(r) })),
    ).rejects.toMatchObject({ code: "ERR_ATTESTATION" });
    expect(ledger.audit).toEqual([
      {
        at: NOW,
        actor: "https://ca.test/acme/acct/a1",
        action: "token.spend",
        subject: token.id,
        details: { spiffeId: ID, outcome: "accepted" },
      },
      {
        at: NOW,
        actor: "https://ca.test/acme/acct/a1",
        action: "token.spend",
        subject: other.id,
        details: {
          spiffeId: "spiffe://example.org/db",
          outcome: "refused",
          requested: ID,
          reason: "created for another SPIFFE ID",
        },
      },
    ]);
    // A second use spends nothing, but the refusal still names the token.
    expect(noted).toEqual([`join_token:${other.id}`, `join_token:${token.id}`]);
    const text = JSON.stringify(ledger.audit);
    for (const t of [token, other]) {
      expect(text).not.toContain(t.secret);
      expect(text).not.toContain(t.hash);
    }
  });

  it("refuses a second use", async () => {
    const { attestor, token } = setup();
    await attestor.attest({ token: token.secret }, ctx());
    await refused(
      attestor.attest({ token: token.secret }, ctx()),
      token,
      "ERR_ATTESTATION",
      "join token has already been used; join tokens work only once",
    );
  });

  it("lets exactly one of many concurrent uses succeed", async () => {
    const { attestor, token } = setup();
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, () => attestor.attest({ token: token.secret }, ctx())),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(7);
    for (const r of lost)
      expect(r.reason).toEqual(
        stintError("ERR_ATTESTATION", "join token has already been used; join tokens work only once"),
      );
  });

  it("refuses an expired token", async () => {
    const { attestor, token } = setup({ ttlMs: 60_000 });
    await refused(
      attestor.attest({ token: token.secret }, ctx({ now: new Date(NOW.getTime() + 60_000) })),
      token,
      "ERR_ATTESTATION",
      "join token has expired; ask an administrator for a new one",
    );
  });

  it("refuses a token created for another SPIFFE ID, and spends it", async () => {
    const { attestor, token } = setup({ spiffeId: "spiffe://example.org/db" });
    await refused(
      attestor.attest({ token: token.secret }, ctx()),
      token,
      "ERR_ATTESTATION",
      `join token ${token.id} was created for spiffe://example.org/db, not for ${ID}; it is now spent`,
    );
    await refused(
      attestor.attest({ token: token.secret }, ctx({ spiffeId: "spiffe://example.org/db" })),
      token,
      "ERR_ATTESTATION",
      "join token has already been used; join tokens work only once",
    );
  });

  it("refuses an unknown token", async () => {
    const { attestor } = setup();
    const stranger = newJoinToken({ spiffeId: ID, now: NOW });
    await refused(
      attestor.attest({ token: stranger.secret }, ctx()),
      stranger,
      "ERR_ATTESTATION",
      "join token is not known to this CA (mistyped, or created elsewhere)",
    );
  });

  it("refuses evidence of the wrong shape without echoing it", async () => {
    const { attestor, token } = setup();
    const almost = { ...token, secret: `${token.secret}x` };
    await refused(
      attestor.attest({ token: almost.secret }, ctx()),
      almost,
      "ERR_MALFORMED",
      "join_token evidence token is not a join token (43 base64url characters, as `stint token create` prints)",
    );
    await refused(
      attestor.attest({ token: 5 }, ctx()),
      token,
      "ERR_MALFORMED",
      "join_token evidence token is not a join token (43 base64url characters, as `stint token create` prints)",
    );
    await refused(
      attestor.attest({ token: token.secret, extra: 1 }, ctx()),
      token,
      "ERR_MALFORMED",
      'join_token evidence must have exactly the members {"token": …}; unexpected: "extra"',
    );
  });
});

import type { Attestation, AttestationContext } from "../../acme/attest/attestor";
import { JoinTokenAttestor, type JoinTokenLedger } from "../../acme/attest/join-token";
import { parseSelector } from "../../ca/entries";
import {
  hashJoinToken,
  JOIN_TOKEN_DEFAULT_TTL_MS,
  joinTokenSpiffeId,
  looksLikeJoinTokenSecret,
  type NewJoinToken,
  newJoinToken,
} from "../../ca/join-token";
import type { AuditEvent } from "../../ca/store";
import { stintError } from "./helpers";

/**
 * In-memory ledger. find() only reads; commit() takes the token as the
 * store's recordAttestation does, in one synchronous step after the simulated
 * I/O wait, appending the spend record, or refusing when it is gone.
 */
class MemoryLedger implements JoinTokenLedger {
  private readonly rows = new Map<string, { id: string; spiffeId: string; expiresAt: Date; used: boolean }>();
  /** The audit records spends wrote, as the store appends them in the recording transaction. */
  readonly audit: AuditEvent[] = [];

  add(t: NewJoinToken): void {
    this.rows.set(t.hash, { id: t.id, spiffeId: t.spiffeId, expiresAt: t.expiresAt, used: false });
  }

  async find(hash: string, now: Date) {
    await new Promise((resolve) => setImmediate(resolve)); // a round trip to the database
    const row = this.rows.get(hash);
    if (!row) return null;
    const token = { id: row.id, spiffeId: row.spiffeId };
    if (row.used) return { outcome: "used" as const, ...token };
    if (now.getTime() >= row.expiresAt.getTime()) return { outcome: "expired" as const, ...token };
    return { outcome: "usable" as const, ...token };
  }

  async commit(result: Attestation): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    const row = result.spend ? this.rows.get(result.spend.hash) : undefined;
    if (!row || row.used) throw new Error("token already taken");
    row.used = true;
    this.audit.push(result.spend!.audit({ id: row.id, spiffeId: row.spiffeId }));
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
  it("makes an 8-byte hex id, a token naming its ID and 32 random bytes stored only as its SHA-256, bound to the canonical ID", () => {
    const t = newJoinToken({ spiffeId: ID, now: NOW });
    expect(t.id).toMatch(/^[0-9a-f]{16}$/);
    const [named, random] = t.secret.split(".");
    expect(Buffer.from(named, "base64url").toString()).toBe(ID);
    expect(random).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(random, "base64url")).toHaveLength(32);
    expect(joinTokenSpiffeId(t.secret)).toBe(ID);
    expect(looksLikeJoinTokenSecret(t.secret)).toBe(true);
    expect(t.hash).toBe(hashJoinToken(t.secret));
    expect(t.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(t.spiffeId).toBe(ID);
    expect(t.expiresAt.getTime() - NOW.getTime()).toBe(JOIN_TOKEN_DEFAULT_TTL_MS);
    expect(JOIN_TOKEN_DEFAULT_TTL_MS).toBe(10 * 60_000);
    expect(newJoinToken({ spiffeId: ID, now: NOW }).secret).not.toBe(t.secret);
  });

  it("never makes a token that begins with '-', which command lines would read as an option", () => {
    // Random bytes that would encode as "-…" on their own: the token still starts with the ID.
    const t = newJoinToken({ spiffeId: ID, now: NOW, random: (n) => Buffer.alloc(n, 0xf8) });
    expect(Buffer.alloc(32, 0xf8).toString("base64url")[0]).toBe("-");
    expect(t.secret.startsWith("c3BpZmZlOi8v")).toBe(true); // base64url("spiffe://")
    expect(looksLikeJoinTokenSecret(t.secret)).toBe(true);
  });

  it("reads the SPIFFE ID a token names, and nothing from older or malformed tokens", () => {
    const old = Buffer.alloc(32, 7).toString("base64url");
    expect(looksLikeJoinTokenSecret(old)).toBe(true);
    expect(joinTokenSpiffeId(old)).toBeNull();
    const named = (text: string) => `${Buffer.from(text).toString("base64url")}.${old}`;
    expect(joinTokenSpiffeId(named("spiffe://example.org/db"))).toBe("spiffe://example.org/db");
    expect(joinTokenSpiffeId(named("https://example.org/db"))).toBeNull();
    expect(joinTokenSpiffeId(`${named("spiffe://example.org/db")}x`)).toBeNull();
    expect(looksLikeJoinTokenSecret(`-${old}`)).toBe(false);
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
  it("grants join_token:<id>, and hands the token to spend with the authorization", async () => {
    const { attestor, token, ledger } = setup();
    const result = await attestor.attest({ token: token.secret }, ctx());
    expect(result).toEqual({
      selectors: [`join_token:${token.id}`],
      reusable: false,
      evidence: `join_token:${token.id}`,
      spend: { hash: token.hash, audit: expect.any(Function) },
    });
    expect(parseSelector(result.selectors[0])).toBe(result.selectors[0]);
    // Attesting spends nothing: the token is taken only when the authorization is recorded.
    expect(ledger.audit).toEqual([]);
    await ledger.commit(result);
    expect(ledger.audit).toEqual([
      {
        at: NOW,
        actor: "https://ca.test/acme/acct/a1",
        action: "token.spend",
        subject: token.id,
        details: { spiffeId: ID, outcome: "accepted" },
      },
    ]);
    const text = JSON.stringify(ledger.audit);
    expect(text).not.toContain(token.secret);
    expect(text).not.toContain(token.hash);
  });

  it("refuses a second use, naming the token", async () => {
    const { attestor, token, ledger } = setup();
    await ledger.commit(await attestor.attest({ token: token.secret }, ctx()));
    const noted: string[] = [];
    await refused(
      attestor.attest({ token: token.secret }, ctx({ reference: (r) => noted.push(r) })),
      token,
      "ERR_ATTESTATION",
      "join token has already been used; join tokens work only once",
    );
    expect(noted).toEqual([`join_token:${token.id}`]);
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

  it("refuses a token created for another SPIFFE ID without spending it", async () => {
    const { attestor, token, ledger } = setup({ spiffeId: "spiffe://example.org/db" });
    await refused(
      attestor.attest({ token: token.secret }, ctx()),
      token,
      "ERR_ATTESTATION",
      `join token ${token.id} was created for spiffe://example.org/db, not for ${ID}; it was not spent`,
    );
    // The typo cost nothing: the token still enrolls the identity it was made for.
    const result = await attestor.attest(
      { token: token.secret },
      ctx({ spiffeId: "spiffe://example.org/db" }),
    );
    expect(result.selectors).toEqual([`join_token:${token.id}`]);
    await ledger.commit(result);
    expect(ledger.audit.map((e) => e.subject)).toEqual([token.id]);
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
      "join_token evidence token is not a join token (as `stint token create` prints it)",
    );
    await refused(
      attestor.attest({ token: 5 }, ctx()),
      token,
      "ERR_MALFORMED",
      "join_token evidence token is not a join token (as `stint token create` prints it)",
    );
    await refused(
      attestor.attest({ token: token.secret, extra: 1 }, ctx()),
      token,
      "ERR_MALFORMED",
      'join_token evidence must have exactly the members {"token": …}; unexpected: "extra"',
    );
  });
});

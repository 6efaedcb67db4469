import { generateKeyPairSync } from "node:crypto";
import { PassThrough } from "node:stream";
import { StintError } from "../../common/errors";
import { createLogger, isSecretKey, type LoggerOptions, resolveLogFormat } from "../../common/logger";

const TIME = new Date("2030-01-02T03:04:05.678Z");

function collect(opts: Partial<LoggerOptions> = {}) {
  const lines: string[] = [];
  const stream = new PassThrough();
  stream.on("data", (chunk: Buffer) => lines.push(...chunk.toString().split("\n").filter(Boolean)));
  const log = createLogger({ component: "test", stream, now: () => TIME, ...opts });
  return { log, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>), lines };
}

describe("createLogger", () => {
  it("writes one JSON object per line with the envelope first", () => {
    const { log, lines } = collect();
    expect(log.format).toBe("json");
    log.info("hello", { serial: "0a1b", count: 2 });
    expect(lines).toEqual([
      '{"level":"info","time":"2030-01-02T03:04:05.678Z","component":"test","msg":"hello","serial":"0a1b","count":2}',
    ]);
  });

  it("filters by level", () => {
    const { log, records } = collect({ level: "warn" });
    log.debug("d");
    log.info("i");
    log.warn("w");
    log.error("e");
    expect(records().map((r) => r["level"])).toEqual(["warn", "error"]);
    expect(log.enabled("info")).toBe(false);
    expect(log.enabled("error")).toBe(true);
  });

  it("does no work for a disabled level", () => {
    const { log, lines } = collect({ level: "error" });
    const fields = {
      get expensive(): string {
        throw new Error("must not be read");
      },
    };
    log.info("skipped", fields);
    log.debug("skipped", fields);
    expect(lines).toEqual([]);
  });

  it("redacts secret-looking keys at any depth, keeping allowlisted ones", () => {
    const { log, records } = collect();
    log.info("request", {
      keyAlgorithm: "ec-p256",
      keyId: "abc",
      "policy.keyTypes": ["ed25519"],
      password: "p1",
      nested: {
        deeper: [
          { clientSecret: "s1", Authorization: "Bearer t" },
          { joinToken: "t1", privateKey: "k1" },
        ],
        evidence: { jwt: "x" },
        jws: "y",
        apiKEY: "z",
      },
    });
    const [r] = records();
    expect(r).toMatchObject({
      keyAlgorithm: "ec-p256",
      keyId: "abc",
      "policy.keyTypes": ["ed25519"],
      password: "[redacted]",
      nested: {
        deeper: [
          { clientSecret: "[redacted]", Authorization: "[redacted]" },
          { joinToken: "[redacted]", privateKey: "[redacted]" },
        ],
        evidence: "[redacted]",
        jws: "[redacted]",
        apiKEY: "[redacted]",
      },
    });
    expect(JSON.stringify(r)).not.toMatch(/p1|s1|Bearer|t1|k1|"x"|"y"|"z"/);
  });

  it("keeps the ids of an attestation's outcome and redacts what it was given", () => {
    const { log, records } = collect();
    log.info("attestation refused", {
      accountId: "acct-1",
      authorizationId: "az-9",
      method: "join_token",
      spiffeId: "spiffe://example.org/web",
      reference: "join_token:0011223344556677",
      token: "s3cret",
      evidence: { token: "s3cret" },
      authorization: "Bearer s3cret",
    });
    expect(records()[0]).toMatchObject({
      accountId: "acct-1",
      authorizationId: "az-9",
      method: "join_token",
      spiffeId: "spiffe://example.org/web",
      reference: "join_token:0011223344556677",
      token: "[redacted]",
      evidence: "[redacted]",
      authorization: "[redacted]",
    });
    expect(JSON.stringify(records())).not.toContain("s3cret");
  });

  it("never serializes key material or binary data", () => {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const pem = privateKey.export({ format: "pem", type: "pkcs8" }).toString();
    const { log, lines } = collect();
    log.info("material", {
      k: privateKey,
      der: Buffer.from("secret-bytes"),
      u8: new Uint8Array(3),
      text: pem,
      jwt: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.sig",
    });
    const rec = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(rec).toMatchObject({
      k: "[key]",
      der: "[binary 12 bytes]",
      u8: "[binary 3 bytes]",
      text: "[redacted]",
      jwt: "[redacted]",
    });
    expect(lines[0]).not.toContain("PRIVATE");
    expect(lines[0]).not.toContain("secret-bytes");
  });

  it("serializes errors as code and message, with stacks only at debug", () => {
    const info = collect();
    const err = new StintError("ERR_POLICY_TTL", "ttl too long", { cause: new Error("inner") });
    info.log.error("failed", { error: err, plain: new TypeError("bad"), err: new RangeError("short") });
    expect(info.records()[0]).toMatchObject({
      error: { code: "ERR_POLICY_TTL", message: "ttl too long", cause: { code: "Error", message: "inner" } },
      plain: { code: "TypeError", message: "bad" },
    });
    // Whatever the key: pino's own "err" serializer must not reshape it.
    expect(info.records()[0]!["err"]).toEqual({ code: "RangeError", message: "short" });
    expect(info.lines[0]).not.toContain("stack");
    const debug = collect({ level: "debug" });
    debug.log.error("failed", { error: err });
    expect((debug.records()[0]!["error"] as Record<string, unknown>)["stack"]).toContain("ttl too long");
  });

  it("survives cycles, depth, odd values and envelope collisions", () => {
    const { log, records } = collect();
    const cyclic: Record<string, unknown> = { name: "a" };
    cyclic["self"] = cyclic;
    const shared = { v: 1 };
    let deep: Record<string, unknown> = { end: true };
    for (let i = 0; i < 12; i++) deep = { d: deep };
    log.info("odd", {
      cyclic,
      pair: [shared, shared],
      deep,
      big: 10n,
      inf: Number.POSITIVE_INFINITY,
      when: TIME,
      fn: () => 1,
      set: new Set(["x"]),
      map: new Map([
        ["secretName", "v"],
        ["plain", "w"],
      ]),
      msg: "forged",
      level: "forged",
      url: new URL("https://ca.example/acme?x=1"),
    });
    const [r] = records();
    expect(r).toMatchObject({
      msg: "odd",
      level: "info",
      "fields.msg": "forged",
      "fields.level": "forged",
      cyclic: { name: "a", self: "[circular]" },
      pair: [{ v: 1 }, { v: 1 }],
      big: "10",
      inf: "Infinity",
      when: TIME.toISOString(),
      set: ["x"],
      map: { secretName: "[redacted]", plain: "w" },
      url: "https://ca.example/acme?x=1",
    });
    expect(r).not.toHaveProperty("fn");
    expect(JSON.stringify(r!["deep"])).toContain("[too deep]");
  });

  it("child loggers add redacted fields and may rename the component", () => {
    const { log, records } = collect();
    const child = log.child({ component: "acme", requestId: "r1", token: "t" });
    child.info("one", { extra: 1 });
    child.child({ accountId: "a1" }).warn("two");
    expect(records()).toEqual([
      {
        time: TIME.toISOString(),
        level: "info",
        component: "acme",
        msg: "one",
        requestId: "r1",
        token: "[redacted]",
        extra: 1,
      },
      {
        time: TIME.toISOString(),
        level: "warn",
        component: "acme",
        msg: "two",
        requestId: "r1",
        token: "[redacted]",
        accountId: "a1",
      },
    ]);
  });
});

describe("log.format", () => {
  it("auto means pretty on a terminal and JSON anywhere else", () => {
    expect(resolveLogFormat("auto", { write: () => true, isTTY: true })).toBe("pretty");
    expect(resolveLogFormat("auto", { write: () => true })).toBe("json");
    expect(resolveLogFormat("json", { write: () => true, isTTY: true })).toBe("json");
    expect(resolveLogFormat("pretty", { write: () => true })).toBe("pretty");
  });

  it("pretty writes one human line per record, redacted like JSON", () => {
    const { log, lines } = collect({ format: "pretty", colors: false });
    expect(log.format).toBe("pretty");
    log.info("certificate issued", { serial: "0a1b", joinToken: "s3cret" });
    log.child({ component: "acme" }).warn("slow client");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: test: certificate issued \{.*"serial":"0a1b"/);
    expect(lines[0]).toContain('"joinToken":"[redacted]"');
    expect(lines[0]).not.toContain("s3cret");
    expect(lines[1]).toMatch(/WARN: acme: slow client$/);
    // No escape sequences when colours are off: the output may be a file.
    expect(lines.join("")).not.toContain("\u001b[");
  });

  it("colours pretty lines when asked", () => {
    const { log, lines } = collect({ format: "pretty", colors: true });
    log.error("boom");
    expect(lines[0]).toContain("\u001b[");
  });
});

describe("isSecretKey", () => {
  it.each([
    ["passphrase", true],
    ["STINT_CA_PASSPHRASE", true],
    ["accessToken", true],
    ["privateKeyPem", true],
    ["keyAlgorithm", false],
    ["policy.keyTypes", false],
    ["keys.backend", false],
    ["keys.pkcs11.module", false],
    ["keys.pkcs11.tokenLabel", false],
    ["store.password", true],
    ["attest.joinToken", true],
    ["serial", false],
    ["spiffeId", false],
    // Ids name secrets without being them: kept so a refusal can be traced.
    ["authorizationId", false],
    ["tokenId", false],
    ["token_id", false],
    ["keyIDs", false],
    ["joinTokenIds", false],
    ["authorization", true],
    ["Authorization", true],
    ["tokenIdentity", true],
    ["bearerToken", true],
    ["idToken", true],
  ])("%s → %s", (key, secret) => {
    expect(isSecretKey(key)).toBe(secret);
  });
});

import { verify } from "node:crypto";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { CaKey, SignatureHash } from "../../ca/key-backend";
import {
  formatPkcs11Uri,
  isPkcs11Ref,
  PIN_ENV,
  type Pkcs11Key,
  type Pkcs11Settings,
  Pkcs11Token,
  parsePkcs11Uri,
  RECONNECT_INTERVAL_MS,
  resolvePin,
} from "../../ca/pkcs11";
import type { KeyAlgorithm } from "../../ca/spki";
import { StintError } from "../../common/errors";
import { type SoftHsmToken, softHsmToken } from "../helpers/softhsm";

const PIN = "pkcs11-Test-PIN-7788";
let hsm: SoftHsmToken;
let settings: Pkcs11Settings;
let token: Pkcs11Token;

beforeAll(async () => {
  hsm = softHsmToken({ label: "stint-ca", pin: PIN });
  settings = { module: hsm.module, tokenLabel: hsm.tokenLabel, slot: null, pin: PIN, sessions: 4 };
  token = await Pkcs11Token.open(settings);
});

afterAll(async () => {
  await token?.close();
  hsm?.cleanup();
});

/** Runs `fn`, insists it throws a StintError, and checks the PIN is nowhere in it. */
async function failure(fn: () => Promise<unknown>): Promise<StintError> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(StintError);
  const err = caught as StintError;
  for (const text of [err.message, String(err.stack), JSON.stringify(err), String(err.cause)]) {
    expect(text).not.toContain(PIN);
  }
  expect(err.message).not.toContain("\n");
  return err;
}

/** The path of a shared object this process has mapped, found in /proc/self/maps. */
function sharedObjectInUse(name: RegExp): string {
  const path = readFileSync("/proc/self/maps", "utf8")
    .split("\n")
    .map((line) => line.slice(line.indexOf("/")))
    .find((p) => name.test(p));
  if (!path) throw new Error(`no mapped shared object matches ${name}`);
  return path;
}

function verifies(key: CaKey, hash: SignatureHash, data: Buffer, sig: Buffer): boolean {
  return verify(hash, data, key.publicKey, sig);
}

describe("pkcs11: URIs and PINs", () => {
  test("a key reference is an RFC 7512 URI with the label and id percent-encoded, and reads back", () => {
    const id = Buffer.from("00ff10a5", "hex");
    const ref = formatPkcs11Uri({ token: "CA token; prod/1", object: "root é=1", id });
    expect(ref).toBe("pkcs11:token=CA%20token%3B%20prod%2F1;object=root%20%C3%A9%3D1;id=%00%FF%10%A5");
    expect(isPkcs11Ref(ref)).toBe(true);
    expect(isPkcs11Ref("keys/intermediate-1.key")).toBe(false);
    expect(parsePkcs11Uri(ref)).toEqual({ token: "CA token; prod/1", object: "root é=1", id });
    // RFC 7512's own example, with attributes we read but do not select on.
    expect(
      parsePkcs11Uri(
        "pkcs11:object=my-sign-key;type=private;token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.",
      ),
    ).toEqual({ token: "Software PKCS#11 softtoken", object: "my-sign-key", id: null });
  });

  test("bad references get one ERR_CONFIG line each", () => {
    const cases: Array<[string, string]> = [
      ["pkcs11:token=a", "it names no key (no id or object attribute)"],
      ["pkcs11:id=%0", "a % is not followed by two hex digits"],
      ["pkcs11:id=%01;id=%02", 'attribute "id" appears twice'],
      ["pkcs11:id=%01;colour=blue", 'unknown attribute "colour"'],
      [
        "pkcs11:id=%01?pin-value=1234",
        "query and fragment attributes are not accepted; the PIN and module come from keys.pkcs11",
      ],
      ["pkcs11:id=%01;token", '"token" is not name=value'],
    ];
    for (const [ref, why] of cases) {
      expect(() => parsePkcs11Uri(ref)).toThrow(
        expect.objectContaining({
          code: "ERR_CONFIG",
          message: `bad PKCS#11 key reference "${ref}": ${why}`,
        }),
      );
    }
  });

  test("the PIN comes from STINT_PKCS11_PIN or a file, never both, never empty, never absent", async () => {
    const file = join(hsm.dir, "pin");
    writeFileSync(file, "from-file\n");
    expect(PIN_ENV).toBe("STINT_PKCS11_PIN");
    expect(await resolvePin({ env: { STINT_PKCS11_PIN: "from-env" } })).toBe("from-env");
    expect(await resolvePin({ env: {}, pinFile: file })).toBe("from-file");
    const both = await failure(() => resolvePin({ env: { STINT_PKCS11_PIN: "x" }, pinFile: file }));
    expect([both.code, both.message]).toEqual([
      "ERR_CONFIG",
      "both STINT_PKCS11_PIN and a PKCS#11 PIN file are set; use only one",
    ]);
    const empty = await failure(() => resolvePin({ env: { STINT_PKCS11_PIN: "" } }));
    expect([empty.code, empty.message]).toEqual(["ERR_CONFIG", "STINT_PKCS11_PIN is set but empty"]);
    writeFileSync(file, "\n");
    const emptyFile = await failure(() => resolvePin({ env: {}, pinFile: file }));
    expect([emptyFile.code, emptyFile.message]).toEqual([
      "ERR_CONFIG",
      `the PKCS#11 PIN file ${file} is empty`,
    ]);
    const none = await failure(() => resolvePin({ env: {} }));
    expect([none.code, none.message]).toEqual([
      "ERR_CONFIG",
      "the PKCS#11 token needs its user PIN; set STINT_PKCS11_PIN or keys.pkcs11.pinFile (never a command line value)",
    ]);
  });
});

describe("pkcs11: keys made and used inside SoftHSM", () => {
  const ALGORITHMS: KeyAlgorithm[] = ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"];
  const keys = new Map<KeyAlgorithm, Pkcs11Key>();

  test.each(ALGORITHMS)(
    "%s: generated in the token, signs with every hash, node:crypto verifies",
    async (alg) => {
      const key = await token.generateKey(alg, `stint-${alg}`);
      keys.set(alg, key);
      expect(key.backend).toBe("pkcs11");
      expect(key.algorithm).toBe(alg);
      expect(key.privateKey).toBeNull();
      expect(key.ref).toMatch(
        new RegExp(`^pkcs11:token=stint-ca;object=stint-${alg};id=(%[0-9A-F]{2}){16}$`),
      );
      const data = Buffer.from(`to be signed by ${alg}`);
      for (const hash of ["sha256", "sha384", "sha512"] as const) {
        const sig = await key.sign(hash, data);
        expect(verifies(key, hash, data, sig)).toBe(true);
        expect(verifies(key, hash, Buffer.from("something else"), sig)).toBe(false);
      }
    },
  );

  test("ed25519 is refused with the algorithms to use instead", async () => {
    const err = await failure(() => token.generateKey("ed25519", "nope"));
    expect([err.code, err.message]).toEqual([
      "ERR_CONFIG",
      "ed25519 keys are not supported in a PKCS#11 token here; use ec-p256, ec-p384, rsa-2048, rsa-3072 or rsa-4096",
    ]);
  });

  test("private keys are sensitive and not extractable: the token refuses their secret", async () => {
    for (const alg of ["ec-p256", "rsa-2048"] as const) {
      const key = keys.get(alg) ?? (await token.generateKey(alg, `exposure-${alg}`));
      expect(await token.keyExposure(key.ref)).toEqual({
        sensitive: true,
        extractable: false,
        alwaysSensitive: true,
        neverExtractable: true,
        secretAttribute: alg === "ec-p256" ? "CKA_VALUE" : "CKA_PRIVATE_EXPONENT",
        secretRead: "CKR_ATTRIBUTE_SENSITIVE",
      });
    }
  });

  test("200 concurrent signatures on 4 sessions all verify", async () => {
    const key = keys.get("ec-p256") ?? (await token.generateKey("ec-p256", "concurrent"));
    const messages = Array.from({ length: 200 }, (_, i) => Buffer.from(`leaf ${i}`));
    const sigs = await Promise.all(messages.map((m) => key.sign("sha256", m)));
    expect(sigs.filter((sig, i) => !verifies(key, "sha256", messages[i], sig))).toEqual([]);
  });

  test("a closed and reopened token finds the same key by its reference", async () => {
    const key = await token.generateKey("ec-p256", "reopen");
    await token.close();
    token = await Pkcs11Token.open(settings);
    const again = await token.openKey(key.ref);
    expect(again.publicKey.export({ format: "der", type: "spki" })).toEqual(
      key.publicKey.export({ format: "der", type: "spki" }),
    );
    expect(again.algorithm).toBe("ec-p256");
    const data = Buffer.from("after reopen");
    expect(verifies(key, "sha256", data, await again.sign("sha256", data))).toBe(true);
    // RSA keys read back too (from the public key object).
    const rsa = keys.get("rsa-2048");
    if (rsa)
      expect((await token.openKey(rsa.ref)).publicKey.export({ format: "jwk" })).toEqual(
        rsa.publicKey.export({ format: "jwk" }),
      );
  });

  test("two tokens on one module share it: closing one leaves the other signing", async () => {
    const second = await Pkcs11Token.open({ ...settings, sessions: 1 });
    const key = await second.generateKey("ec-p256", "shared");
    await second.close();
    const data = Buffer.from("still here");
    const sig = await (await token.openKey(key.ref)).sign("sha256", data);
    expect(verifies(key, "sha256", data, sig)).toBe(true);
  });

  test("references to a missing key or another token get one clear line", async () => {
    const missing = formatPkcs11Uri({ token: "stint-ca", object: "gone", id: Buffer.alloc(16, 7) });
    const err = await failure(() => token.openKey(missing));
    expect([err.code, err.message]).toEqual([
      "ERR_KEY_UNAVAILABLE",
      `no private key ${missing} on the PKCS#11 token "stint-ca"`,
    ]);
    const other = "pkcs11:token=other;object=x;id=%01";
    const err2 = await failure(() => token.openKey(other));
    expect([err2.code, err2.message]).toEqual([
      "ERR_CONFIG",
      `the key ${other} is on PKCS#11 token "other", but keys.pkcs11 opens token "stint-ca"`,
    ]);
  });
});

describe("pkcs11: opening a token that is not right", () => {
  test("wrong PIN: CKR_PIN_INCORRECT in one line without the PIN", async () => {
    // A login is the whole process's: with our token open, C_Login answers CKR_USER_ALREADY_LOGGED_IN
    // and we compare the PINs ourselves; with it closed, SoftHSM checks.
    for (const loggedIn of [true, false]) {
      if (!loggedIn) await token.close();
      const err = await failure(() => Pkcs11Token.open({ ...settings, pin: "wrong-PIN-0000" }));
      expect(err.message).not.toContain("wrong-PIN-0000");
      expect([err.code, err.message]).toEqual([
        "ERR_KEY_UNAVAILABLE",
        'the PKCS#11 token "stint-ca" refused the PIN (CKR_PIN_INCORRECT); check STINT_PKCS11_PIN or the PIN file',
      ]);
    }
    token = await Pkcs11Token.open(settings);
  });

  test("unknown label: lists the tokens present", async () => {
    const err = await failure(() => Pkcs11Token.open({ ...settings, tokenLabel: "no-such" }));
    expect(err.code).toBe("ERR_CONFIG");
    expect(err.message).toMatch(
      new RegExp(
        `^no PKCS#11 token labelled "no-such" in ${hsm.module}; tokens present: "stint-ca" \\(slot \\d+\\)$`,
      ),
    );
    const slot = Number(/slot (\d+)/.exec(err.message)?.[1]);
    const bySlot = await Pkcs11Token.open({ ...settings, tokenLabel: null, slot });
    expect(bySlot.label).toBe("stint-ca");
    await bySlot.close();
    const wrongSlot = await failure(() =>
      Pkcs11Token.open({ ...settings, tokenLabel: null, slot: slot + 1 }),
    );
    expect(wrongSlot.message).toBe(
      `no initialized PKCS#11 token in slot ${slot + 1} of ${hsm.module}; tokens present: "stint-ca" (slot ${slot})`,
    );
  });

  test("missing module, or a file that is not a PKCS#11 module", async () => {
    const missing = await failure(() => Pkcs11Token.open({ ...settings, module: "/nonexistent/libnope.so" }));
    expect([missing.code, missing.message]).toEqual([
      "ERR_CONFIG",
      "the PKCS#11 module /nonexistent/libnope.so does not exist; set keys.pkcs11.module to the token vendor's library (SoftHSM: /usr/lib/softhsm/libsofthsm2.so)",
    ]);
    const text = join(hsm.dir, "not-a-module.so");
    writeFileSync(text, "hello\n");
    const notElf = await failure(() => Pkcs11Token.open({ ...settings, module: text }));
    // A real shared object that lacks C_GetFunctionList: the C library this process already runs on.
    const libc = sharedObjectInUse(/\/(libc\.so\.6|ld-musl-[^/]+\.so\.1)$/);
    const notPkcs11 = await failure(() => Pkcs11Token.open({ ...settings, module: libc }));
    for (const [err, path] of [
      [notElf, text],
      [notPkcs11, libc],
    ] as const) {
      expect([err.code, err.message]).toEqual([
        "ERR_CONFIG",
        `${path} is not a PKCS#11 module; set keys.pkcs11.module to the token vendor's PKCS#11 library (SoftHSM: /usr/lib/softhsm/libsofthsm2.so)`,
      ]);
    }
  });

  test("a Node.js addon is refused before it is loaded", async () => {
    // dlopen of an addon outside Node's loader leaves its registration pending, and the
    // next native module this process loads aborts it (a CI worker died so): never load one.
    const addon = require.resolve("better-sqlite3/build/Release/better_sqlite3.node");
    const err = await failure(() => Pkcs11Token.open({ ...settings, module: addon }));
    expect([err.code, err.message]).toEqual([
      "ERR_CONFIG",
      `${addon} is a Node.js addon, not a PKCS#11 module; set keys.pkcs11.module to the token vendor's PKCS#11 library (SoftHSM: /usr/lib/softhsm/libsofthsm2.so)`,
    ]);
  });

  test("a token already gone at start: one line naming what to check", async () => {
    await token.close();
    const away = `${hsm.tokenDir}.away`;
    renameSync(hsm.tokenDir, away);
    try {
      const err = await failure(() => Pkcs11Token.open(settings));
      expect([err.code, err.message]).toEqual([
        "ERR_CONFIG",
        `the PKCS#11 module ${hsm.module} failed to initialize (CKR_GENERAL_ERROR); check the module's own configuration (SoftHSM: SOFTHSM2_CONF and its token directory)`,
      ]);
    } finally {
      renameSync(away, hsm.tokenDir);
      token = await Pkcs11Token.open(settings);
    }
  });

  test("settings that name no token, or a silly session count", async () => {
    const none = await failure(() => Pkcs11Token.open({ ...settings, tokenLabel: null }));
    expect(none.message).toBe(
      "set keys.pkcs11.tokenLabel or keys.pkcs11.slot to say which PKCS#11 token holds the CA keys",
    );
    const sessions = await failure(() => Pkcs11Token.open({ ...settings, sessions: 0 }));
    expect(sessions.message).toBe("keys.pkcs11.sessions must be an integer from 1 to 64, not 0");
  });
});

describe("pkcs11: the token pulled away and put back", () => {
  test("signing fails with ERR_KEY_UNAVAILABLE while it is gone and resumes on the same Pkcs11Token once it is back", async () => {
    const key = await token.generateKey("ec-p256", "drill");
    const data = Buffer.from("drill");
    expect(verifies(key, "sha256", data, await key.sign("sha256", data))).toBe(true);

    // Runs as root in CI, where chmod 000 stops nothing: move SoftHSM's token directory away instead.
    const away = `${hsm.tokenDir}.away`;
    renameSync(hsm.tokenDir, away);
    try {
      const first = await failure(() => key.sign("sha256", data));
      expect(first.code).toBe("ERR_KEY_UNAVAILABLE");
      expect(first.message).toMatch(
        /^the PKCS#11 token "stint-ca" (could not sign|is unavailable) \(CKR_[A-Z_]+\)/,
      );
      // Concurrent requests fail too, at once, rather than queueing behind a dead token.
      const burst = await Promise.allSettled(Array.from({ length: 20 }, () => key.sign("sha256", data)));
      for (const r of burst) {
        expect(r.status).toBe("rejected");
        expect((r as PromiseRejectedResult).reason.code).toBe("ERR_KEY_UNAVAILABLE");
      }
      // A reconnect attempted while the directory is gone fails too.
      await new Promise((r) => setTimeout(r, RECONNECT_INTERVAL_MS + 100));
      const later = await failure(() => key.sign("sha256", data));
      expect(later.message).toMatch(
        /^the PKCS#11 token "stint-ca" is unavailable \(.+\); retrying at most once a second$/,
      );
    } finally {
      renameSync(away, hsm.tokenDir);
    }
    expect(existsSync(hsm.tokenDir)).toBe(true);

    // Back: within a few reconnect intervals the same key object signs again.
    let sig: Buffer | null = null;
    for (let i = 0; i < 50 && !sig; i++) {
      sig = await key.sign("sha256", data).catch(() => null);
      if (!sig) await new Promise((r) => setTimeout(r, 200));
    }
    expect(sig).not.toBeNull();
    expect(verifies(key, "sha256", data, sig as Buffer)).toBe(true);
    const many = await Promise.all(
      Array.from({ length: 20 }, (_, i) => key.sign("sha256", Buffer.from(`m${i}`))),
    );
    expect(many.filter((s, i) => !verifies(key, "sha256", Buffer.from(`m${i}`), s))).toEqual([]);
  });
});

import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import * as pkcs11js from "pkcs11js";
import { StintError } from "../../common/errors";
import type { KeyAlgorithm } from "../spki";
import { ckrName, isCkr, meansConnectionLost } from "./ckr";
import { Pkcs11Key } from "./key";
import { acquireLibrary, type Pkcs11Library, reinitialize, releaseLibrary } from "./library";
import {
  findObjects,
  type Handle,
  type KeyExposure,
  keyTemplate,
  loginError,
  probeExposure,
  readPublicKey,
} from "./objects";
import { keyPairTemplate } from "./public-key";
import { SessionPool } from "./session-pool";
import { checkSettings, type Pkcs11Settings } from "./settings";
import { findToken, slotNumber } from "./slots";
import { formatPkcs11Uri, type Pkcs11Uri, parsePkcs11Uri } from "./uri";

/** How often a broken token is retried: often enough to resume quickly, rarely enough not to hammer a failing device. */
export const RECONNECT_INTERVAL_MS = 1000;
/** A token operation taking longer is abandoned (its session with it), so a hung device never hangs a request. */
export const OPERATION_TIMEOUT_MS = 15_000;

/** Logged-in sessions for one initialization of the library, and the key handles found on them. */
interface Connection {
  generation: number;
  pool: SessionPool<Handle>;
  /** Private key handles by CKA_ID (hex); handles stay valid across an application's sessions. */
  keyHandles: Map<string, Handle>;
}

class KeyNotFound extends Error {}
class OperationTimeout extends Error {}

interface RunOptions {
  /** After a lost connection, reconnect and try once more (not for key generation: it is not idempotent). */
  retry: boolean;
}

/**
 * One PKCS#11 token holding CA keys: a pool of logged-in sessions, the keys
 * found on it, and the way back when the token goes away (every signature
 * fails with ERR_KEY_UNAVAILABLE until a reconnect, tried at most once a
 * second, succeeds).
 */
export class Pkcs11Token {
  private conn: Connection | null;
  private reconnecting: Promise<Connection> | null = null;
  private lastReconnect = 0;
  private lastFailure = "";
  /** The library generation we last connected on or reinitialized ourselves. */
  private seenGeneration: number;
  private closed = false;

  private constructor(
    private readonly settings: Pkcs11Settings,
    private readonly lib: Pkcs11Library,
    /** The token's label, as `pkcs11:token=` names it. */
    readonly label: string,
    conn: Connection,
  ) {
    this.conn = conn;
    this.seenGeneration = conn.generation;
  }

  /** Loads the module, finds the token, logs in `settings.sessions` sessions. Every failure is one StintError line. */
  static async open(settings: Pkcs11Settings): Promise<Pkcs11Token> {
    checkSettings(settings);
    const lib = acquireLibrary(settings.module);
    try {
      const found = findToken(lib, settings);
      return new Pkcs11Token(
        settings,
        lib,
        found.label,
        connect(lib, found.slot, found.label, found.flags, settings),
      );
    } catch (err) {
      releaseLibrary(lib);
      if (err instanceof StintError) throw err;
      throw new StintError(
        "ERR_KEY_UNAVAILABLE",
        `cannot open the PKCS#11 token in ${lib.path} (${ckrName(err)})`,
      );
    }
  }

  /** Generates a key pair inside the token: sensitive, not extractable, signing only. */
  async generateKey(alg: KeyAlgorithm, label: string): Promise<Pkcs11Key> {
    const id = randomBytes(16);
    const template = keyPairTemplate(alg, label, id);
    return this.run(
      "generate a key",
      async (session) => {
        const pair = await this.lib.api.C_GenerateKeyPairAsync(
          session,
          template.mechanism,
          template.publicTemplate,
          template.privateTemplate,
        );
        const { publicKey, algorithm } = readPublicKey(this.lib.api, session, pair.publicKey);
        if (algorithm !== alg) {
          throw new StintError(
            "ERR_KEY_CORRUPT",
            `the token generated a ${algorithm} key when asked for ${alg}`,
          );
        }
        const ref = formatPkcs11Uri({ token: this.label, object: label, id });
        return new Pkcs11Key(this, ref, alg, publicKey, { id, label: null });
      },
      { retry: false },
    );
  }

  /** The key a `pkcs11:` reference names, on this token. */
  async openKey(ref: string): Promise<Pkcs11Key> {
    const uri = this.ownUri(ref);
    return this.run("find a key", async (session) => {
      const priv = this.findOne(session, pkcs11js.CKO_PRIVATE_KEY, uri, ref);
      const [pub] = findObjects(
        this.lib.api,
        session,
        keyTemplate(pkcs11js.CKO_PUBLIC_KEY, uri.id, uri.object),
      );
      // An RSA private key carries n and e; an EC one needs its public key object.
      const { publicKey, algorithm } = readPublicKey(this.lib.api, session, pub ?? priv);
      return new Pkcs11Key(this, ref, algorithm, publicKey, { id: uri.id, label: uri.object });
    });
  }

  /** Asks the token for the private key's secret and reads its protection flags: tests prove with it that keys stay inside. */
  async keyExposure(ref: string): Promise<KeyExposure> {
    const uri = this.ownUri(ref);
    return this.run("inspect a key", async (session) =>
      probeExposure(this.lib.api, session, this.findOne(session, pkcs11js.CKO_PRIVATE_KEY, uri, ref)),
    );
  }

  /** Signs `input` (a digest for CKM_ECDSA, the message for CKM_SHA*_RSA_PKCS) with the private key `key` names. */
  async signRaw(
    key: { id: Buffer | null; label: string | null },
    mechanism: number,
    input: Buffer,
    size: number,
  ): Promise<Buffer> {
    return this.run("sign", async (session, conn) => {
      const handle = this.keyHandle(conn, session, key);
      this.lib.api.C_SignInit(session, { mechanism }, handle);
      return this.lib.api.C_SignAsync(session, input, Buffer.alloc(size));
    });
  }

  /** Closes the sessions and releases the module (the last token using it finalizes it). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.reconnecting?.catch(() => undefined);
    const conn = this.conn;
    this.conn = null;
    if (conn) await this.dropConnection(conn, this.closedError());
    releaseLibrary(this.lib);
  }

  // ---------- sessions, failures and reconnects ----------

  /**
   * Runs `op` on a pooled session. A failure that means the token or the
   * sessions are gone breaks the connection: this request fails with
   * ERR_KEY_UNAVAILABLE (after one reconnect and retry when allowed), and
   * the next request reconnects.
   */
  private async run<T>(
    what: string,
    op: (session: Handle, conn: Connection) => Promise<T>,
    opts: RunOptions = { retry: true },
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const conn = await this.connection();
      const session = await conn.pool.acquire();
      let timer: NodeJS.Timeout | undefined;
      const running = op(session, conn);
      // After a timeout nobody awaits `running`; its late rejection must not crash the process.
      running.catch(() => undefined);
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new OperationTimeout(`no answer in ${OPERATION_TIMEOUT_MS / 1000} s`)),
          OPERATION_TIMEOUT_MS,
        );
      });
      try {
        const value = await Promise.race([running, timeout]);
        conn.pool.release(session);
        return value;
      } catch (err) {
        if (err instanceof OperationTimeout) conn.pool.discard();
        else conn.pool.release(session);
        if (err instanceof StintError) throw err;
        const failure = new StintError(
          "ERR_KEY_UNAVAILABLE",
          `the PKCS#11 token "${this.label}" could not ${what} (${ckrName(err)})`,
        );
        if (!(err instanceof OperationTimeout || err instanceof KeyNotFound || meansConnectionLost(err)))
          throw failure;
        this.lastFailure = ckrName(err);
        conn.pool.fail(failure);
        if (!opts.retry || attempt > 0 || Date.now() - this.lastReconnect < RECONNECT_INTERVAL_MS)
          throw failure;
      } finally {
        clearTimeout(timer);
      }
      // The pool was released above on every path that gets here, so the reconnect can drain it.
    }
  }

  private async connection(): Promise<Connection> {
    if (this.closed) throw this.closedError();
    const c = this.conn;
    if (c && !c.pool.broken && this.lib.initialized && c.generation === this.lib.generation) return c;
    if (this.reconnecting) return this.reconnecting;
    if (Date.now() - this.lastReconnect < RECONNECT_INTERVAL_MS) throw this.unavailable();
    this.lastReconnect = Date.now();
    this.reconnecting = this.reconnect().finally(() => {
      this.reconnecting = null;
    });
    return this.reconnecting;
  }

  private async reconnect(): Promise<Connection> {
    const old = this.conn;
    this.conn = null;
    if (old) await this.dropConnection(old, this.unavailable());
    try {
      // Sessions and handles do not outlive a removed token, so start the library afresh, unless
      // another token on this module already did since we last connected.
      if (!this.lib.initialized || this.lib.generation === this.seenGeneration) {
        try {
          reinitialize(this.lib);
        } finally {
          this.seenGeneration = this.lib.generation;
        }
      }
      const found = findToken(this.lib, this.settings);
      if (found.label !== this.label) {
        throw new StintError("ERR_KEY_UNAVAILABLE", `the token in that slot is now "${found.label}"`);
      }
      this.conn = connect(this.lib, found.slot, found.label, found.flags, this.settings);
      this.seenGeneration = this.conn.generation;
      this.lastFailure = "";
      return this.conn;
    } catch (err) {
      this.lastFailure = err instanceof StintError ? err.message : ckrName(err);
      throw this.unavailable();
    }
  }

  /** Stops lending the connection's sessions, waits (bounded) for those in use, then closes them. */
  private async dropConnection(conn: Connection, why: StintError): Promise<void> {
    conn.pool.fail(why);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      conn.pool.drained(),
      new Promise((resolve) => {
        timer = setTimeout(resolve, OPERATION_TIMEOUT_MS);
      }),
    ]);
    clearTimeout(timer);
    if (!this.lib.initialized || conn.generation !== this.lib.generation) return;
    for (const session of conn.pool.sessions) {
      try {
        this.lib.api.C_CloseSession(session);
      } catch {
        // A session of a token that went away: nothing to close.
      }
    }
  }

  private unavailable(): StintError {
    const why = this.lastFailure ? ` (${this.lastFailure})` : "";
    return new StintError(
      "ERR_KEY_UNAVAILABLE",
      `the PKCS#11 token "${this.label}" is unavailable${why}; retrying at most once a second`,
    );
  }

  private closedError(): StintError {
    return new StintError("ERR_KEY_UNAVAILABLE", `the PKCS#11 token "${this.label}" was closed`);
  }

  // ---------- keys ----------

  private ownUri(ref: string): Pkcs11Uri {
    const uri = parsePkcs11Uri(ref);
    if (uri.token !== null && uri.token !== this.label) {
      throw new StintError(
        "ERR_CONFIG",
        `the key ${ref} is on PKCS#11 token "${uri.token}", but keys.pkcs11 opens token "${this.label}"`,
      );
    }
    return uri;
  }

  private findOne(session: Handle, cls: number, uri: Pkcs11Uri, ref: string): Handle {
    const found = findObjects(this.lib.api, session, keyTemplate(cls, uri.id, uri.object));
    if (found.length === 0) {
      throw new StintError(
        "ERR_KEY_UNAVAILABLE",
        `no private key ${ref} on the PKCS#11 token "${this.label}"`,
      );
    }
    if (found.length > 1) {
      throw new StintError(
        "ERR_KEY_CORRUPT",
        `${ref} names more than one private key on the PKCS#11 token "${this.label}"`,
      );
    }
    return found[0];
  }

  /** The private key's handle on this connection; a key that vanished means the token was reset. */
  private keyHandle(
    conn: Connection,
    session: Handle,
    key: { id: Buffer | null; label: string | null },
  ): Handle {
    const cacheKey = `${key.id?.toString("hex") ?? ""}/${key.label ?? ""}`;
    const cached = conn.keyHandles.get(cacheKey);
    if (cached) return cached;
    const [handle] = findObjects(
      this.lib.api,
      session,
      keyTemplate(pkcs11js.CKO_PRIVATE_KEY, key.id, key.label),
      1,
    );
    if (!handle) throw new KeyNotFound("the key is no longer on the token");
    conn.keyHandles.set(cacheKey, handle);
    return handle;
  }
}

/** Opens the session pool and logs in (once: a login holds for all of the application's sessions). */
function connect(
  lib: Pkcs11Library,
  slot: Handle,
  label: string,
  flags: number,
  settings: Pkcs11Settings,
): Connection {
  if (flags & pkcs11js.CKF_USER_PIN_LOCKED) {
    throw new StintError(
      "ERR_KEY_UNAVAILABLE",
      `the PKCS#11 token "${label}" is locked after too many wrong PINs; its security officer must unlock it`,
    );
  }
  const sessions: Handle[] = [];
  try {
    for (let i = 0; i < settings.sessions; i++) {
      sessions.push(lib.api.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION));
    }
    const pinHash = createHash("sha256").update(settings.pin).digest();
    try {
      lib.api.C_Login(sessions[0], pkcs11js.CKU_USER, settings.pin);
      lib.logins.set(slotNumber(slot), pinHash);
    } catch (err) {
      if (!isCkr(err, "CKR_USER_ALREADY_LOGGED_IN")) throw loginError(err, label);
      const loggedIn = lib.logins.get(slotNumber(slot));
      if (!loggedIn || !timingSafeEqual(loggedIn, pinHash)) throw loginError("CKR_PIN_INCORRECT", label);
    }
  } catch (err) {
    for (const s of sessions) {
      try {
        lib.api.C_CloseSession(s);
      } catch {
        // Best effort: the failure below is what the operator needs.
      }
    }
    throw err;
  }
  return { generation: lib.generation, pool: new SessionPool(sessions), keyHandles: new Map() };
}

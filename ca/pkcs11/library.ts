import { existsSync, realpathSync } from "node:fs";
import { resolve } from "node:path";
import * as pkcs11js from "pkcs11js";
import { StintError } from "../../common/errors";
import { ckrName, isCkr } from "./ckr";

/**
 * A loaded PKCS#11 library, shared by every Pkcs11Token of this process that
 * uses it: the library is one per process (dlopen), so C_Initialize and
 * C_Finalize are too. `generation` counts initializations; sessions and object
 * handles belong to one generation, so a token that sees a newer generation
 * (another token on the module reconnected) reopens its sessions.
 */
export interface Pkcs11Library {
  readonly path: string;
  readonly api: pkcs11js.PKCS11;
  generation: number;
  initialized: boolean;
  refs: number;
  /**
   * SHA-256 of the PIN each slot was logged in with in this generation. A
   * login holds for the whole application, so a second C_Login answers
   * CKR_USER_ALREADY_LOGGED_IN without checking its PIN; we compare instead.
   */
  logins: Map<number, Buffer>;
}

const loaded = new Map<string, Pkcs11Library>();

const MODULE_FIX =
  "set keys.pkcs11.module to the token vendor's PKCS#11 library (SoftHSM: /usr/lib/softhsm/libsofthsm2.so)";

function loadError(path: string, err: unknown): StintError {
  const message = err instanceof Error ? err.message : String(err);
  const fix = MODULE_FIX;
  if (/C_GetFunctionList|invalid ELF header|file too short|wrong ELF class/.test(message)) {
    return new StintError("ERR_CONFIG", `${path} is not a PKCS#11 module; ${fix}`);
  }
  return new StintError(
    "ERR_CONFIG",
    `cannot load the PKCS#11 module ${path}: ${message.split("\n")[0].slice(0, 200)}`,
  );
}

/** C_Initialize with OS locking: we call the library from libuv's worker threads (async C_Sign). */
function initialize(lib: Pkcs11Library): void {
  try {
    lib.api.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (err) {
    // Someone else in this process (another binding instance) initialized it: fine.
    if (!isCkr(err, "CKR_CRYPTOKI_ALREADY_INITIALIZED")) throw err;
  }
  lib.initialized = true;
  lib.generation++;
  lib.logins.clear();
}

/** Loads and initializes `path`, or takes another reference to it. ERR_CONFIG when it is missing or not a module. */
export function acquireLibrary(path: string): Pkcs11Library {
  const absolute = resolve(path);
  if (!existsSync(absolute)) {
    throw new StintError(
      "ERR_CONFIG",
      `the PKCS#11 module ${absolute} does not exist; set keys.pkcs11.module to the token vendor's library (SoftHSM: /usr/lib/softhsm/libsofthsm2.so)`,
    );
  }
  const key = realpathSync(absolute);
  if (key.endsWith(".node")) {
    // Loading a Node.js addon with plain dlopen runs its registration without
    // Node consuming it, and the next addon this process loads then aborts it.
    throw new StintError("ERR_CONFIG", `${absolute} is a Node.js addon, not a PKCS#11 module; ${MODULE_FIX}`);
  }
  let lib = loaded.get(key);
  if (!lib) {
    const api = new pkcs11js.PKCS11();
    try {
      api.load(absolute);
    } catch (err) {
      throw loadError(absolute, err);
    }
    lib = { path: absolute, api, generation: 0, initialized: false, refs: 0, logins: new Map() };
    loaded.set(key, lib);
  }
  if (!lib.initialized) {
    try {
      initialize(lib);
    } catch (err) {
      if (lib.refs === 0) forget(lib);
      throw new StintError(
        "ERR_CONFIG",
        `the PKCS#11 module ${absolute} failed to initialize (${ckrName(err)}); check the module's own configuration (SoftHSM: SOFTHSM2_CONF and its token directory)`,
      );
    }
  }
  lib.refs++;
  return lib;
}

/**
 * Finalizes and initializes the library again: the way back after a token was
 * removed, since its sessions and handles do not survive that (SoftHSM keeps
 * answering CKR_OBJECT_HANDLE_INVALID on old sessions even once the token is
 * back). Throws the PKCS#11 failure; the library then stays uninitialized and
 * the next call tries C_Initialize again.
 */
export function reinitialize(lib: Pkcs11Library): void {
  if (lib.initialized) {
    lib.initialized = false;
    try {
      lib.api.C_Finalize();
    } catch {
      // Already finalized or the device is gone: C_Initialize below is what matters.
    }
  }
  initialize(lib);
}

/** Drops a reference; the last one finalizes and unloads the library. */
export function releaseLibrary(lib: Pkcs11Library): void {
  lib.refs--;
  if (lib.refs > 0) return;
  forget(lib);
}

function forget(lib: Pkcs11Library): void {
  for (const [key, value] of loaded) if (value === lib) loaded.delete(key);
  try {
    if (lib.initialized) lib.api.C_Finalize();
  } catch {
    // Nothing left to do with a library that fails to finalize.
  }
  lib.initialized = false;
  try {
    lib.api.close();
  } catch {
    // As above.
  }
}

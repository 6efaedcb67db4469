import { access } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import { StintError } from "../common/errors";
import { writeSecretFile } from "../common/files";
import { type CaKey, fileKey, type KeyBackendName } from "./key-backend";
import {
  encryptPrivateKeyPem,
  generateKeyPair,
  type KeyAlgorithm,
  loadPrivateKey,
  plainPrivateKeyPem,
} from "./keys";
// The URI rules alone: a file-only CA never loads the PKCS#11 module.
import { isPkcs11Ref } from "./pkcs11/uri";

/**
 * The one place CA keys are made and opened by their recorded reference
 * (IssuerRecord.keyPath): `ca init`, the rotation steps and the authority all
 * go through a CaKeyStore. A `pkcs11:` reference opens in the token, anything
 * else is a key file relative to the data directory. New keys go where
 * keys.backend says; keys made before a switch keep working where they are.
 */

/** What the store needs of a PKCS#11 token (ca/pkcs11 Pkcs11Token), declared by its consumer. */
export interface KeyToken {
  /** A new key pair inside the token (sensitive, not extractable), its CaKey's ref a `pkcs11:` URI. */
  generateKey(alg: KeyAlgorithm, label: string): Promise<CaKey>;
  openKey(ref: string): Promise<CaKey>;
  close(): Promise<void> | void;
}

export interface OpenedCaKey {
  key: CaKey;
  /** False only for an unencrypted key file (development mode), so the server can warn. */
  encrypted: boolean;
}

export interface CaKeyStoreOptions {
  dataDir: string;
  /** Encrypts and opens key files; null writes them unencrypted (`--insecure-no-passphrase`). */
  passphrase: string | null;
  /** Where new CA keys are generated (keys.backend). */
  backend: KeyBackendName;
  /**
   * Opens the token (keys.pkcs11.*), once, when a `pkcs11:` key is first
   * needed; null when no token is configured.
   */
  openToken?: (() => Promise<KeyToken>) | null;
}

export class CaKeyStore {
  private token: Promise<KeyToken> | null = null;

  constructor(private readonly opts: CaKeyStoreOptions) {
    if (opts.backend === "pkcs11" && !opts.openToken) {
      throw new StintError(
        "ERR_CONFIG",
        "keys.backend is pkcs11 but no PKCS#11 token is configured (keys.pkcs11.module)",
      );
    }
  }

  /** File keys only, as before key backends: tests and one-shot tools that are handed a data directory. */
  static files(dataDir: string, passphrase: string | null): CaKeyStore {
    return new CaKeyStore({ dataDir, passphrase, backend: "file" });
  }

  get backend(): KeyBackendName {
    return this.opts.backend;
  }

  get passphrase(): string | null {
    return this.opts.passphrase;
  }

  /** Opens the token now (ca serve does, so a missing token or a wrong PIN stops it at start). */
  async ready(): Promise<void> {
    if (this.opts.backend === "pkcs11") await this.openedToken();
  }

  private openedToken(): Promise<KeyToken> {
    const open = this.opts.openToken;
    if (!open) {
      throw new StintError(
        "ERR_KEY_UNAVAILABLE",
        "this CA's key is in a PKCS#11 token, but no token is configured; set keys.pkcs11.module and keys.pkcs11.tokenLabel",
      );
    }
    if (!this.token) {
      this.token = open();
      // A failed open is not cached: the next use tries again (the token may be back).
      this.token.catch(() => {
        this.token = null;
      });
    }
    return this.token;
  }

  private path(ref: string): string {
    if (isAbsolute(ref))
      throw new StintError("ERR_CONFIG", `key reference ${ref} is not relative to the data directory`);
    return join(this.opts.dataDir, ref);
  }

  /** The key `ref` names: in the token for a `pkcs11:` URI, else the key file in the data directory. */
  async open(ref: string): Promise<OpenedCaKey> {
    if (isPkcs11Ref(ref)) {
      const token = await this.openedToken();
      return { key: await token.openKey(ref), encrypted: true };
    }
    const { key, encrypted } = await loadPrivateKey(this.path(ref), this.opts.passphrase);
    return { key: fileKey(key, ref), encrypted };
  }

  /**
   * Whether the key `ref` names can be used here: its file is in the data
   * directory, or a token is configured for a `pkcs11:` key (whether the key
   * is in it shows when it is opened). An offline root's key is neither.
   */
  async has(ref: string | null): Promise<boolean> {
    if (!ref) return false;
    if (isPkcs11Ref(ref)) return Boolean(this.opts.openToken);
    try {
      await access(this.path(ref));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * A new CA key where keys.backend says: in the token under `label`, or in
   * memory until save() writes it (its ref is then the file's path).
   */
  async generate(alg: KeyAlgorithm, label: string): Promise<CaKey> {
    if (this.opts.backend === "pkcs11") return (await this.openedToken()).generateKey(alg, label);
    return fileKey((await generateKeyPair(alg)).privateKey);
  }

  /**
   * What the store records for a key generate() made: the token's URI (the
   * key is stored already), or `fileRef` once the key file is written there
   * (0600, encrypted unless the passphrase is null). Never overwrites a file.
   */
  async save(key: CaKey, fileRef: string): Promise<{ ref: string; written: string | null }> {
    if (key.backend !== "file") return { ref: key.ref, written: null };
    const privateKey = key.privateKey!;
    const pem =
      this.opts.passphrase === null
        ? plainPrivateKeyPem(privateKey)
        : await encryptPrivateKeyPem(privateKey, this.opts.passphrase);
    const path = this.path(fileRef);
    await writeSecretFile(path, pem);
    return { ref: fileRef, written: path };
  }

  /** Logs out of the token, if one was opened. */
  async close(): Promise<void> {
    const token = this.token;
    this.token = null;
    if (token) await (await token.catch(() => null))?.close();
  }
}

/**
 * The store meta key naming the token key `ca intermediate-csr` made for the
 * intermediate `id` (its file key needs none: keys/<id>.key.pem), found again
 * when the signed certificate is imported.
 */
export const pendingKeyMeta = (id: string): string => `pending_key:${id}`;

import { createHash, type KeyObject } from "node:crypto";
import * as pkcs11js from "pkcs11js";
import { ecdsaP1363ToDer } from "../../formats/ecdsa-signature";
import type { CaKey, SignatureHash } from "../key-backend";
import type { KeyAlgorithm } from "../spki";
import { signatureSize } from "./public-key";

/** What a Pkcs11Key needs from its token: a C_Sign on a pooled session. */
export interface RawSigner {
  signRaw(
    key: { id: Buffer | null; label: string | null },
    mechanism: number,
    input: Buffer,
    size: number,
  ): Promise<Buffer>;
}

const RSA_MECHANISMS: Record<SignatureHash, number> = {
  sha256: pkcs11js.CKM_SHA256_RSA_PKCS,
  sha384: pkcs11js.CKM_SHA384_RSA_PKCS,
  sha512: pkcs11js.CKM_SHA512_RSA_PKCS,
};

/**
 * A CA key inside a PKCS#11 token. ECDSA hashes in Node and signs the digest
 * with CKM_ECDSA (tokens differ in which CKM_ECDSA_SHA* they offer), then
 * turns r||s into the DER X.509 carries; RSA signs with CKM_SHA*_RSA_PKCS.
 */
export class Pkcs11Key implements CaKey {
  readonly backend = "pkcs11" as const;
  readonly privateKey = null;
  private readonly isEcdsa: boolean;
  private readonly size: number;

  constructor(
    private readonly token: RawSigner,
    readonly ref: string,
    readonly algorithm: KeyAlgorithm,
    readonly publicKey: KeyObject,
    private readonly object: { id: Buffer | null; label: string | null },
  ) {
    this.isEcdsa = algorithm === "ec-p256" || algorithm === "ec-p384";
    this.size = signatureSize(algorithm);
  }

  async sign(hash: SignatureHash, data: Buffer): Promise<Buffer> {
    if (this.isEcdsa) {
      const digest = createHash(hash).update(data).digest();
      return ecdsaP1363ToDer(await this.token.signRaw(this.object, pkcs11js.CKM_ECDSA, digest, this.size));
    }
    return Buffer.from(await this.token.signRaw(this.object, RSA_MECHANISMS[hash], data, this.size));
  }
}

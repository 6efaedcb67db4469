import { createHash, createPrivateKey, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { StintError } from "../common/errors";
import { fileError, writeFileAtomic } from "../common/files";
import { pemDecodeAll } from "../formats/pem";
import { joinTokenEvidence, k8sSatEvidence, x509popEvidence } from "./acme-evidence";

/**
 * Where the agent's attest-01 evidence comes from: one provider per
 * attestor. `reusable` says whether the agent can attest again once its
 * certificate has expired (k8s_sat and x509pop can; a join token works once).
 * Evidence is read when needed and never logged.
 */

export interface EvidenceProvider {
  readonly attestor: "join_token" | "k8s_sat" | "x509pop";
  readonly reusable: boolean;
  /** Why this provider cannot attest (again) now, or null. */
  unavailable(): Promise<string | null>;
  evidence(challengeToken: string, accountThumbprint: string): Promise<unknown>;
  /** Called once the CA accepted the evidence. */
  used(): Promise<void>;
}

async function readSecret(path: string, what: string): Promise<string> {
  try {
    return (await readFile(path, "utf8")).trim();
  } catch (err) {
    throw fileError(err, path, `read the ${what}`);
  }
}

/** Remembers the hash of the join token the CA accepted, so an expired agent says it needs a new token instead of spending requests on a used one. */
const USED_TOKEN_FILE = "join-token.used";

export function joinTokenProvider(opts: {
  token: string;
  tokenFile: string;
  stateDir: string;
}): EvidenceProvider {
  const secret = async (): Promise<string> => {
    const token =
      opts.token !== ""
        ? opts.token
        : opts.tokenFile !== ""
          ? await readSecret(opts.tokenFile, "join token file")
          : "";
    if (token === "") {
      throw new StintError(
        "ERR_CONFIG",
        "no join token: set STINT_JOIN_TOKEN, --join-token-file or --join-token (from `stint token create`)",
      );
    }
    return token;
  };
  const hash = async () =>
    createHash("sha256")
      .update(await secret())
      .digest("hex");
  const marker = join(opts.stateDir, USED_TOKEN_FILE);
  return {
    attestor: "join_token",
    reusable: false,
    async unavailable() {
      const used = await readFile(marker, "utf8").catch(() => "");
      if (used.trim() === "" || used.trim() !== (await hash())) return null;
      const remedy =
        opts.token === "" && opts.tokenFile !== ""
          ? `write a new token (\`stint token create\`) to ${opts.tokenFile}: the agent picks it up without a restart`
          : "restart the agent with a new token (`stint token create`), or give it --join-token-file so a new one is picked up without a restart";
      return `the join token was already used (join tokens work once): ${remedy}`;
    },
    async evidence() {
      return joinTokenEvidence(await secret());
    },
    async used() {
      await writeFileAtomic(marker, `${await hash()}\n`, 0o600);
    },
  };
}

export function k8sSatProvider(opts: { tokenFile: string }): EvidenceProvider {
  return {
    attestor: "k8s_sat",
    reusable: true,
    unavailable: async () => null,
    evidence: async () => k8sSatEvidence(await readSecret(opts.tokenFile, "service account token file")),
    used: async () => undefined,
  };
}

export function x509popProvider(opts: { certFile: string; keyFile: string }): EvidenceProvider {
  const load = async (): Promise<{ chain: Buffer[]; key: KeyObject }> => {
    const chain = pemDecodeAll(
      await readSecret(opts.certFile, "x509pop certificate file"),
      "CERTIFICATE",
      opts.certFile,
    );
    if (chain.length === 0) throw new StintError("ERR_CONFIG", `${opts.certFile} holds no certificate`);
    let key: KeyObject;
    try {
      key = createPrivateKey(await readSecret(opts.keyFile, "x509pop key file"));
    } catch (err) {
      if (err instanceof StintError) throw err;
      throw new StintError("ERR_CONFIG", `${opts.keyFile} is not a PEM private key`);
    }
    return { chain, key };
  };
  return {
    attestor: "x509pop",
    reusable: true,
    unavailable: async () => null,
    async evidence(token, accountThumbprint) {
      const { chain, key } = await load();
      return x509popEvidence({ chainDer: chain, key, token, accountThumbprint });
    },
    used: async () => undefined,
  };
}

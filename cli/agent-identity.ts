import { readFile } from "node:fs/promises";
import { joinTokenSpiffeId } from "../ca/join-token";
import { StintError } from "../common/errors";
import { parseSpiffeId } from "../formats/spiffe";
import type { AgentConfig } from "./agent-config";

/**
 * The SPIFFE ID the agent enrolls for: spiffeId when given, else the one its
 * join token names (tokens carry it, ca/join-token.ts). When both are given
 * and differ, the agent stops before sending anything, so a typo costs
 * neither a request nor the token.
 */
export async function agentSpiffeId(cfg: AgentConfig, flagToken: string): Promise<string> {
  if (cfg.attestor !== "join_token") return cfg.spiffeId;
  const token = flagToken || cfg.joinToken || (await tokenFromFile(cfg.joinTokenFile));
  const named = token === "" ? null : joinTokenSpiffeId(token);
  if (cfg.spiffeId === "") {
    if (named !== null) return named;
    throw new StintError(
      "ERR_CONFIG",
      token === ""
        ? "spiffeId is required without a join token: the identity to enroll for, e.g. --spiffe-id spiffe://example.org/web"
        : "spiffeId is required: this join token was made before tokens named their SPIFFE ID; pass --spiffe-id",
    );
  }
  const given = parseSpiffeId(cfg.spiffeId).uri;
  if (named !== null && named !== given) {
    throw new StintError(
      "ERR_CONFIG",
      `spiffeId ${given} is not the SPIFFE ID the join token was created for (${named}); ` +
        "drop --spiffe-id or fix it. Nothing was sent to the CA, and the token is unspent",
    );
  }
  return given;
}

/** The token file's content, or "" while it does not exist yet (the agent waits for it). */
async function tokenFromFile(path: string): Promise<string> {
  if (path === "") return "";
  try {
    return (await readFile(path, "utf8")).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw new StintError("ERR_CONFIG", `cannot read the join token file ${path}: ${(err as Error).message}`);
  }
}

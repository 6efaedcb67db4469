import { StintError } from "../../common/errors";
import type { JwtVerifier } from "./workload-api";

/**
 * verify/jwt-svid.ts's verifyJwtSvid (the CA side of issue 14), loaded when
 * first used so the Workload API's other calls never depend on it.
 */
export const verifyJwt: JwtVerifier = (token, opts) => {
  let mod: { verifyJwtSvid?: JwtVerifier };
  try {
    mod = require("../../verify/jwt-svid");
  } catch {
    throw new StintError("ERR_CONFIG", "this build has no JWT-SVID verifier");
  }
  if (typeof mod.verifyJwtSvid !== "function")
    throw new StintError("ERR_CONFIG", "this build has no JWT-SVID verifier");
  return mod.verifyJwtSvid(token, opts);
};

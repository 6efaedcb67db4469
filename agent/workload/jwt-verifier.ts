import { verifyJwtSvid } from "../../verify/jwt-svid";
import type { JwtVerifier } from "./workload-api";

/** ValidateJWTSVID checks tokens with verify/'s verifier, against the JWT keys of the CA's bundle. */
export const verifyJwt: JwtVerifier = (token, opts) => verifyJwtSvid(token, opts);

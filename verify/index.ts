/** The verifier library's public surface: what a service imports. */
export { KEY_TYPES, type KeyType, SIGNATURE_ALGORITHMS, type SignatureAlgorithm } from "./algorithms";
export { type AllowRule, type AuthorizeResult, type Authorizer, compileAllow } from "./authorize";
export {
  type ChainAccepted,
  type ChainFailureCode,
  type ChainOptions,
  type ChainPolicy,
  type ChainRefused,
  type ChainResult,
  compilePolicy,
  TrustBundle,
  type Usage,
  validateChain,
} from "./chain";
export {
  FeedClient,
  type FeedClientOptions,
  FeedFile,
  type FeedFileOptions,
  type OpenedFeed,
  openFeed,
  openSignedFeed,
} from "./feed";
export { type FeedMark, FeedStateFile } from "./feed-state";
export {
  type CredentialSet,
  chainOf,
  checkSocket,
  type RequestLike,
  type ResponseLike,
  readCredentialSet,
  refusalStatus,
  requireSpiffeId,
  type SecureContextTarget,
  SpiffeIdentityError,
  spiffeServerIdentity,
  type TlsDir,
  type TlsDirOptions,
  tlsOptionsFromDir,
} from "./node";
export { type OpenVerifierOptions, openVerifier } from "./open";
export {
  type BundleInput,
  createVerifier,
  type RefusalCode,
  type RevocationSource,
  type RevocationView,
  type Verifier,
  type VerifierOptions,
  type VerifierStats,
  type VerifyAccepted,
  type VerifyRefused,
  type VerifyResult,
} from "./verifier";

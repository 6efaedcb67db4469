import { StintError } from "../common/errors";
import { FeedClient, FeedFile } from "./feed";
import { createVerifier, type Verifier, type VerifierOptions } from "./verifier";

/**
 * The one-call form of the issue's `createVerifier({bundle, feedUrl |
 * feedFile, maxFeedAge, clockSkew, allow})`: loads the feed (from the CA's
 * origin, following its push channel, or from a file someone keeps fresh)
 * before returning, so the first verify() already has revocation status.
 * close() stops following the feed.
 */
export interface OpenVerifierOptions extends Omit<VerifierOptions, "revocation" | "bundle"> {
  /** Trusted roots, PEM: also what the feed's signer must chain to. */
  bundle: string;
  /** The CA's origin, e.g. https://ca.example.com:8443 (fetches /feed, listens on /feed/events). */
  feedUrl?: string;
  /** A file holding a signed feed snapshot, kept fresh by someone else; its nextUpdate says how long it counts. */
  feedFile?: string;
  /** Where the highest feed sequence seen is kept across restarts (FeedClientOptions.stateFile). */
  feedStateFile?: string;
}

export async function openVerifier(opts: OpenVerifierOptions): Promise<Verifier & { close(): void }> {
  const { feedUrl, feedFile, feedStateFile, ...rest } = opts;
  if (feedUrl && feedFile) throw new StintError("ERR_CONFIG", "give feedUrl or feedFile, not both");
  const revocation = feedUrl
    ? await FeedClient.open({ url: feedUrl, rootsPem: opts.bundle, stateFile: feedStateFile })
    : feedFile
      ? await FeedFile.open(feedFile, opts.bundle, { stateFile: feedStateFile })
      : undefined;
  const verifier = createVerifier({ ...rest, revocation });
  return Object.assign(verifier, { close: () => revocation?.close() });
}

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
  /** A file holding a signed feed snapshot; its modification time is when it was last confirmed. */
  feedFile?: string;
}

export async function openVerifier(opts: OpenVerifierOptions): Promise<Verifier & { close(): void }> {
  const { feedUrl, feedFile, ...rest } = opts;
  if (feedUrl && feedFile) throw new StintError("ERR_CONFIG", "give feedUrl or feedFile, not both");
  const revocation = feedUrl
    ? await FeedClient.open({ url: feedUrl, rootsPem: opts.bundle })
    : feedFile
      ? await FeedFile.open(feedFile, opts.bundle)
      : undefined;
  const verifier = createVerifier({ ...rest, revocation });
  return Object.assign(verifier, { close: () => revocation?.close() });
}

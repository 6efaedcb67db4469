import type { ServerResponse } from "node:http";
import type { FeedService } from "../ca/feed";
import { StintError } from "../common/errors";
import type { Router } from "./router";

/**
 * The revocation feed over HTTPS (docs/feed.md):
 *   GET /feed             the latest signed snapshot
 *   GET /feed?since=N     a signed delta from N, or the snapshot when that is smaller or N is too old;
 *                         204 when N is already the latest
 *   GET /feed/events      server-sent events: `event: feed` with {"sequence": N} at once and on every change,
 *                         so verifiers hear of a revocation within a poll interval of the store
 */

export const FEED_MEDIA_TYPE = "application/vnd.stint.feed";
const HEARTBEAT_MS = 15_000;

function sendFeed(res: ServerResponse, envelope: Buffer, sequence: number, kind: "snapshot" | "delta"): void {
  res.writeHead(200, {
    "content-type": FEED_MEDIA_TYPE,
    "content-length": envelope.length,
    "cache-control": "no-cache",
    "x-stint-feed-sequence": String(sequence),
    "x-stint-feed-kind": kind,
  });
  res.end(envelope);
}

export function mountFeed(feed: FeedService): (router: Router) => void {
  return (router) => {
    router.on("GET", "/feed", async (_req, res, url) => {
      const current = feed.current();
      const since = url.searchParams.get("since");
      if (since === null) return sendFeed(res, current.envelope, current.sequence, "snapshot");
      if (!/^\d{1,15}$/.test(since))
        throw new StintError("ERR_MALFORMED", "since must be a feed sequence number");
      if (Number(since) === current.sequence) {
        res.writeHead(204, {
          "x-stint-feed-sequence": String(current.sequence),
          "cache-control": "no-cache",
        });
        res.end();
        return;
      }
      const delta = await feed.deltaSince(Number(since));
      if (delta) sendFeed(res, delta, current.sequence, "delta");
      else sendFeed(res, current.envelope, current.sequence, "snapshot");
    });

    router.on("GET", "/feed/events", (req, res) => {
      res.writeHead(200, {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        connection: "keep-alive",
      });
      const announce = (sequence: number) => res.write(`event: feed\ndata: {"sequence":${sequence}}\n\n`);
      announce(feed.current().sequence);
      const unsubscribe = feed.subscribe({ publish: (p) => announce(p.sequence), close: () => res.end() });
      const heartbeat = setInterval(() => res.write(": keep-alive\n\n"), HEARTBEAT_MS).unref();
      req.on("close", () => {
        unsubscribe();
        clearInterval(heartbeat);
      });
    });
  };
}

import { mkdir, readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { StintError } from "../common/errors";
import { fileError, writeFileAtomic } from "../common/files";

/**
 * What a verifier remembers about the feed across restarts, per trust
 * domain: the highest sequence it adopted and the issuers that may no longer
 * sign feeds (revoked or retired). Without it a restarted verifier would
 * take an older, validly signed feed that does not list a revocation yet, or
 * one signed with a revoked intermediate's leaked key.
 *
 * The file is JSON, rewritten atomically; several processes may share it
 * (each `stint verify` run does). Every write merges with what is on disk, so
 * a slower writer never lowers the mark another one recorded.
 */

export interface FeedMark {
  sequence: number;
  /** Issuer ids whose signatures on feeds are refused from now on. */
  refusedSigners: string[];
}

interface StateFile {
  version: 1;
  trustDomains: Record<string, FeedMark>;
}

const ISSUER_ID = /^[0-9a-f]{16}$/;

function parseState(text: string, path: string): StateFile {
  const bad = (why: string) =>
    new StintError(
      "ERR_MALFORMED",
      `the verifier's feed state ${path} is unreadable (${why}); it guards against feed rollback, so it is not ignored: remove it only if you trust the next feed you will fetch`,
    );
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw bad("not JSON");
  }
  const d = doc as Partial<StateFile> | null;
  if (d?.version !== 1 || typeof d.trustDomains !== "object" || d.trustDomains === null)
    throw bad("not a version 1 feed state");
  for (const [td, mark] of Object.entries(d.trustDomains)) {
    const ok =
      Number.isSafeInteger(mark?.sequence) &&
      mark.sequence >= 0 &&
      Array.isArray(mark.refusedSigners) &&
      mark.refusedSigners.every((id) => typeof id === "string" && ISSUER_ID.test(id));
    if (!ok) throw bad(`the entry for ${td.slice(0, 64)} is not a sequence and a list of issuer ids`);
  }
  return d as StateFile;
}

export class FeedStateFile {
  constructor(readonly path: string) {}

  /** The mark for a trust domain, or null when none was recorded (no file yet counts as none). */
  async read(trustDomain: string): Promise<FeedMark | null> {
    const state = await this.load();
    return Object.hasOwn(state.trustDomains, trustDomain) ? state.trustDomains[trustDomain] : null;
  }

  /** Raises the recorded mark to `mark`: the highest sequence, every refused signer either side knew. */
  async record(trustDomain: string, mark: FeedMark): Promise<void> {
    const state = await this.load();
    const old = Object.hasOwn(state.trustDomains, trustDomain) ? state.trustDomains[trustDomain] : null;
    state.trustDomains[trustDomain] = mergeMarks(old, mark);
    // Created private when missing; an existing directory's mode is the owner's business.
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 }).catch((err) => {
      throw fileError(err, dirname(this.path), "create the directory of the verifier's feed state");
    });
    await writeFileAtomic(this.path, `${JSON.stringify(state, null, 2)}\n`, 0o600);
  }

  private async load(): Promise<StateFile> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return { version: 1, trustDomains: {} };
      throw fileError(err, this.path, "read the verifier's feed state");
    }
    return parseState(text, this.path);
  }
}

/** The higher sequence and every refused signer of both. */
export function mergeMarks(a: FeedMark | null, b: FeedMark): FeedMark {
  if (!a) return b;
  return {
    sequence: Math.max(a.sequence, b.sequence),
    refusedSigners: [...new Set([...a.refusedSigners, ...b.refusedSigners])].sort(),
  };
}

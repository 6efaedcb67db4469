import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { FeedStateFile } from "../../verify/feed-state";
import { stintError } from "../attest/helpers";
import { tempDir } from "../helpers/openssl";

/** The verifier's memory of the feed across restarts (verify/feed-state.ts), on real files. */

const dir = tempDir("stint-feed-state-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const A = "a1a1a1a1a1a1a1a1";
const B = "b2b2b2b2b2b2b2b2";

describe("FeedStateFile", () => {
  it("remembers nothing before the first record, then the mark per trust domain", async () => {
    const path = join(dir, "new", "sub", "state.json");
    const state = new FeedStateFile(path);
    expect(await state.read("example.org")).toBeNull();
    await state.record("example.org", { sequence: 7, refusedSigners: [A] });
    await state.record("other.org", { sequence: 2, refusedSigners: [] });
    expect(await new FeedStateFile(path).read("example.org")).toEqual({ sequence: 7, refusedSigners: [A] });
    expect(await state.read("other.org")).toEqual({ sequence: 2, refusedSigners: [] });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "new", "sub")).mode & 0o777).toBe(0o700);
  });

  it("never lowers the sequence or forgets a refused signer, whoever writes last", async () => {
    const path = join(dir, "merge.json");
    const slow = new FeedStateFile(path);
    await new FeedStateFile(path).record("example.org", { sequence: 9, refusedSigners: [B] });
    await slow.record("example.org", { sequence: 8, refusedSigners: [A] });
    expect(await slow.read("example.org")).toEqual({ sequence: 9, refusedSigners: [A, B] });
  });

  it("leaves an existing directory's mode alone", async () => {
    const shared = join(dir, "shared");
    mkdirSync(shared, { mode: 0o755 });
    await new FeedStateFile(join(shared, "state.json")).record("example.org", {
      sequence: 1,
      refusedSigners: [],
    });
    expect(statSync(shared).mode & 0o777).toBe(0o755);
  });

  it.each([
    ["not JSON", "{", "not JSON"],
    ["another shape", '{"version":2,"trustDomains":{}}', "not a version 1 feed state"],
    [
      "a bad entry",
      '{"version":1,"trustDomains":{"example.org":{"sequence":-1,"refusedSigners":[]}}}',
      "the entry for example.org is not a sequence and a list of issuer ids",
    ],
    [
      "a bad issuer id",
      '{"version":1,"trustDomains":{"example.org":{"sequence":1,"refusedSigners":["XYZ"]}}}',
      "the entry for example.org is not a sequence and a list of issuer ids",
    ],
  ])("refuses a file that is %s, and does not overwrite it", async (_name, text, why) => {
    const path = join(dir, `bad-${why.length}-${text.length}.json`);
    writeFileSync(path, text);
    const state = new FeedStateFile(path);
    const expected = stintError(
      "ERR_MALFORMED",
      `the verifier's feed state ${path} is unreadable (${why}); it guards against feed rollback, so it is not ignored: remove it only if you trust the next feed you will fetch`,
    );
    await expect(state.read("example.org")).rejects.toThrow(expected);
    await expect(state.record("example.org", { sequence: 1, refusedSigners: [] })).rejects.toThrow(expected);
    expect(readFileSync(path, "utf8")).toBe(text);
  });
});

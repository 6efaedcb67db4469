import { makeMaterial, runFuzz } from "../../scripts/fuzz/verify-fuzz";

/**
 * Issue 12: no input makes validateChain(), verify() or TrustBundle.from()
 * throw, and every damaged chain is refused. A seeded run, smaller than the
 * full one (`npm run fuzz:verify`, 100,000 inputs; docs/verify.md has the figure).
 */

it("refuses 20,000 seeded hostile variations of a Stint chain without throwing", async () => {
  const material = await makeMaterial();
  const stats = runFuzz(material, 20_000, 1);
  expect(stats.failures).toEqual([]);
  expect(stats).toMatchObject({ inputs: 20_000, throws: 0, internalErrors: 0, falseAccepts: 0 });
  // The run reached past parsing: signatures, keys and the profile rules all refused something.
  expect(Object.keys(stats.byCode)).toEqual(
    expect.arrayContaining(["malformed", "bad-signature", "untrusted", "bad-key", "constraints"]),
  );
}, 120_000);

import { makeMaterial, runFuzz } from "./verify-fuzz";

/**
 * The verifier fuzz run at full size (issue 12: at least 100,000 inputs).
 *   npm run fuzz:verify [-- --count 100000 --seed 12]
 * Prints one line: inputs, throws, internal errors, false accepts (all must
 * be 0), refusals, accepted re-signed mutations, seconds. Exit 1 on any failure.
 */

const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};

async function main(): Promise<void> {
  const count = arg("count", 100_000);
  const seed = arg("seed", 12);
  const material = await makeMaterial();
  const start = process.hrtime.bigint();
  const s = runFuzz(material, count, seed);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  for (const f of s.failures) console.error(f);
  console.error(`verdicts by code: ${JSON.stringify(s.byCode)}`);
  console.log(
    `fuzz:verify seed ${seed}: ${s.inputs} inputs, ${s.throws} throws, ${s.internalErrors} internal errors, ` +
      `${s.falseAccepts} false accepts, ${s.refused} refused, ${s.acceptedResigned} re-signed accepted, ` +
      `${seconds.toFixed(1)} s`,
  );
  if (s.throws + s.internalErrors + s.falseAccepts > 0) process.exitCode = 1;
}

void main();

/**
 * Calls `once` for `seconds` with `inFlight` calls outstanding at all times
 * (bench:issue, bench:hsm); returns how many completed and the seconds taken.
 */
export async function runConcurrently(
  seconds: number,
  inFlight: number,
  once: () => Promise<unknown>,
): Promise<{ operations: number; seconds: number }> {
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(seconds * 1e9));
  let operations = 0;
  const worker = async () => {
    while (process.hrtime.bigint() < deadline) {
      await once();
      operations++;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return { operations, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}

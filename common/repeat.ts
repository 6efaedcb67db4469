/** A stopped repetition; stop() is idempotent. */
export interface Repetition {
  stop(): void;
}

/**
 * Runs `step` every `ms`, each run starting `ms` after the previous one ended
 * (runs never overlap), until stopped. A failed run goes to `onError` and the
 * next one still comes. The timer does not keep the process alive.
 */
export function repeatEvery(
  ms: number,
  step: () => Promise<void>,
  onError: (err: unknown) => void,
): Repetition {
  let timer: NodeJS.Timeout | null = null;
  let stopped = false;
  const tick = async () => {
    try {
      await step();
    } catch (err) {
      onError(err);
    }
    if (!stopped) timer = setTimeout(tick, ms).unref();
  };
  timer = setTimeout(tick, ms).unref();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
    },
  };
}

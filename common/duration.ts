import { StintError } from "./errors";

/**
 * Durations as people write them in config: "90s", "10m", "1h30m", "500ms",
 * "2d". A unit is required, so "3600" cannot be misread as ms or as seconds.
 */

const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1_000, ms: 1 } as const;
type Unit = keyof typeof UNIT_MS;
/** Largest unit first; parsing insists on this order so "30m1h" is not silently accepted. */
const ORDER: readonly Unit[] = ["d", "h", "m", "s", "ms"];
// "ms" before "m" so the alternation does not stop at "m".
const PART = /(\d+(?:\.\d+)?)(ms|d|h|m|s)/y;

function notADuration(text: string): StintError {
  return new StintError(
    "ERR_CONFIG",
    `${JSON.stringify(text)} is not a duration; use a number with a unit, e.g. 90s, 10m, 1h`,
  );
}

/** Parses a duration to whole milliseconds. Accepts decimals per part ("1.5h"); rejects signs and bare numbers. */
export function parseDuration(text: string): number {
  if (text.length === 0 || text.length > 64) throw notADuration(text.slice(0, 64));
  let pos = 0;
  let last = -1;
  let total = 0;
  while (pos < text.length) {
    PART.lastIndex = pos;
    const m = PART.exec(text);
    if (!m) throw notADuration(text);
    const rank = ORDER.indexOf(m[2] as Unit);
    if (rank <= last) throw notADuration(text);
    last = rank;
    total += Number(m[1]) * UNIT_MS[m[2] as Unit];
    pos = PART.lastIndex;
  }
  const ms = Math.round(total);
  if (!Number.isSafeInteger(ms)) throw notADuration(text);
  return ms;
}

/** Compact form, largest units first: 5_400_000 → "1h30m", 0 → "0s". Non-negative values round-trip through parseDuration. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) throw new RangeError(`cannot format ${ms} as a duration`);
  let rest = Math.round(Math.abs(ms));
  if (rest === 0) return "0s";
  let out = ms < 0 ? "-" : "";
  for (const unit of ORDER) {
    const n = Math.floor(rest / UNIT_MS[unit]);
    if (n > 0) {
      out += `${n}${unit}`;
      rest -= n * UNIT_MS[unit];
    }
  }
  return out;
}

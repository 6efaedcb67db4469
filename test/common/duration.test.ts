import { formatDuration, parseDuration } from "../../common/duration";
import { StintError } from "../../common/errors";

describe("parseDuration", () => {
  it.each([
    ["500ms", 500],
    ["90s", 90_000],
    ["10m", 600_000],
    ["1h", 3_600_000],
    ["1h30m", 5_400_000],
    ["2d", 172_800_000],
    ["1d2h3m4s5ms", 93_784_005],
    ["1.5h", 5_400_000],
    ["0s", 0],
    ["1m500ms", 60_500],
  ])("%s → %d ms", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([
    "3600",
    "",
    "1",
    "h",
    "-1h",
    "+1h",
    "1 h",
    " 1h",
    "1h ",
    "1H",
    "1y",
    "30m1h",
    "1h1h",
    "1.h",
    ".5h",
    "1e3s",
    "1hh",
  ])("rejects %j with ERR_CONFIG and a hint", (text) => {
    let caught: unknown;
    try {
      parseDuration(text);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(StintError);
    expect(caught).toMatchObject({
      code: "ERR_CONFIG",
      message: `${JSON.stringify(text)} is not a duration; use a number with a unit, e.g. 90s, 10m, 1h`,
    });
  });

  it("rejects absurdly long input without echoing all of it", () => {
    expect(() => parseDuration("1".repeat(1000) + "s")).toThrow(/^"1{64}" is not a duration/);
  });
});

describe("formatDuration", () => {
  it.each([
    [0, "0s"],
    [500, "500ms"],
    [90_000, "1m30s"],
    [5_400_000, "1h30m"],
    [86_400_000, "1d"],
    [93_784_005, "1d2h3m4s5ms"],
    [-60_000, "-1m"],
  ])("%d → %s", (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it("round-trips through parseDuration", () => {
    for (const ms of [1, 999, 1000, 59_999, 3_600_000, 123_456_789]) {
      expect(parseDuration(formatDuration(ms))).toBe(ms);
    }
  });
});

import { RateLimiter } from "../../acme/rate-limit";

describe("RateLimiter", () => {
  let now = 0;
  const clock = () => now;

  it("allows a burst, then the sustained rate, and says when to retry", () => {
    now = 0;
    const limiter = new RateLimiter({ perSecond: 2, burst: 4 }, "requests from this address", clock);
    for (let i = 0; i < 4; i++) limiter.take("a");
    expect(() => limiter.take("a")).toThrow(
      expect.objectContaining({
        code: "ERR_RATE_LIMITED",
        retryAfterSeconds: 1,
        message: expect.stringContaining("2/s"),
      }),
    );
    // Another key has its own bucket.
    limiter.take("b");
    now = 500; // one token back at 2/s
    limiter.take("a");
    expect(() => limiter.take("a")).toThrow(expect.objectContaining({ code: "ERR_RATE_LIMITED" }));
    now = 60_000; // refilled, but never beyond the burst
    for (let i = 0; i < 4; i++) limiter.take("a");
    expect(() => limiter.take("a")).toThrow(expect.objectContaining({ code: "ERR_RATE_LIMITED" }));
  });

  it("rounds Retry-After up to whole seconds at slow rates", () => {
    now = 0;
    const limiter = new RateLimiter({ perSecond: 0.1, burst: 1 }, "renewals", clock);
    limiter.take("x");
    expect(() => limiter.take("x")).toThrow(expect.objectContaining({ retryAfterSeconds: 10 }));
  });

  it("is off at 0 per second", () => {
    const limiter = new RateLimiter({ perSecond: 0, burst: 0 }, "anything", clock);
    for (let i = 0; i < 1000; i++) limiter.take("a");
  });
});

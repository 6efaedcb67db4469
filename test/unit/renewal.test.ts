import { renewalWindow } from "../../ca/renewal";
import { formatCertId, parseCertId } from "../../formats/ari";

const nb = new Date("2026-11-23T10:00:00Z");
const na = new Date("2026-11-23T11:00:00Z");

describe("renewal windows", () => {
  it("is the last third of the lifetime, polled every tenth but at least every five minutes", () => {
    const tenMinutes = new Date(nb.getTime() + 10 * 60_000);
    expect(renewalWindow({ notBefore: nb, notAfter: tenMinutes }, nb)).toMatchObject({
      retryAfterSeconds: 60,
    });
    // An hour-long certificate would be polled every six minutes; a taint must reach it sooner.
    expect(renewalWindow({ notBefore: nb, notAfter: na }, nb)).toEqual({
      start: new Date("2026-11-23T10:40:00Z"),
      end: na,
      retryAfterSeconds: 300,
    });
    const day = new Date(nb.getTime() + 86_400_000);
    expect(renewalWindow({ notBefore: nb, notAfter: day }, nb).retryAfterSeconds).toBe(300);
  });

  it("moves to now when the authority pulls it forward, and never past expiry", () => {
    const now = new Date("2026-11-23T10:10:00Z");
    const w = renewalWindow(
      { notBefore: nb, notAfter: na, renewFrom: new Date("2026-11-23T10:05:00Z") },
      now,
    );
    expect(w.start.toISOString()).toBe("2026-11-23T10:05:00.000Z");
    expect(w.end.toISOString()).toBe("2026-11-23T10:10:00.000Z");
    const late = renewalWindow(
      { notBefore: nb, notAfter: na, renewFrom: new Date("2026-11-23T10:58:00Z") },
      new Date("2026-11-23T10:58:00Z"),
    );
    expect(late.end).toEqual(na);
  });

  it("polls short-lived certificates often but not more than once a second", () => {
    const short = renewalWindow({ notBefore: nb, notAfter: new Date(nb.getTime() + 30_000) }, nb);
    expect(short.retryAfterSeconds).toBe(3);
    expect(
      renewalWindow({ notBefore: nb, notAfter: new Date(nb.getTime() + 2000) }, nb).retryAfterSeconds,
    ).toBe(1);
  });
});

describe("ARI certificate identifiers", () => {
  it("round-trips the RFC 9773 example", () => {
    // RFC 9773 4.1: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4, serial 00:87:65:43:21
    const text = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE";
    const id = parseCertId(text);
    expect(id.authorityKeyId.toString("hex")).toBe("69885b6b87464041e1b37b847ba0ae2cde01c8d4");
    expect(id.serial.toString("hex")).toBe("0087654321");
    expect(formatCertId(id)).toBe(text);
  });

  it.each([
    "",
    "abc",
    "a.b.c",
    "aYhb.",
    "aY=hb.AIdl",
    "aYhba4dGQEHhs3uEe6CuLN4ByNQ.gA",
    "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AAE",
  ])("refuses %j", (text) => {
    expect(() => parseCertId(text)).toThrow(
      expect.objectContaining({ code: expect.stringMatching(/ERR_MALFORMED|ERR_JOSE/) }),
    );
  });
});

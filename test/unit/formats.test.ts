import { isStintError } from "../../common/errors";
import * as der from "../../formats/der";
import { parsePemBlocks, pemDecode, toPem } from "../../formats/pem";
import { decodeSerial, encodeSerial, sequenceOfSerialHex } from "../../formats/serial";
import { parseSpiffeId, parseWorkloadId } from "../../formats/spiffe";
import serialVectors from "../vectors/serial.json";
import spiffeVectors from "../vectors/spiffe-ids.json";

describe("serial layout", () => {
  it.each(serialVectors.vectors)("encodes and decodes sequence $sequence", (v) => {
    const serial = encodeSerial(Buffer.from(v.random, "hex"), v.sequence);
    expect(serial.toString("hex")).toBe(v.serial);
    expect(decodeSerial(serial)).toEqual({ random: Buffer.from(v.random, "hex"), sequence: v.sequence });
    expect(sequenceOfSerialHex(v.serial)).toBe(v.sequence);
  });

  it("does not decode serials of another layout", () => {
    expect(decodeSerial(Buffer.from("02" + "00".repeat(16), "hex"))).toBeNull();
    expect(decodeSerial(Buffer.from("0102", "hex"))).toBeNull();
    expect(sequenceOfSerialHex("zz")).toBeNull();
  });

  it("refuses sequences that do not fit", () => {
    expect(() => encodeSerial(Buffer.alloc(8), -1)).toThrow(/out of range/);
    expect(() => encodeSerial(Buffer.alloc(8), 2 ** 53)).toThrow(/out of range/);
    expect(() => encodeSerial(Buffer.alloc(7), 1)).toThrow(/8 random bytes/);
  });
});

describe("SPIFFE IDs", () => {
  it.each(spiffeVectors.valid)("parses %s", (text, td, path) => {
    expect(parseSpiffeId(text)).toEqual({ trustDomain: td, path, uri: text });
  });

  it.each(spiffeVectors.invalid)("rejects %s", (text, why) => {
    expect(() => parseSpiffeId(text)).toThrow(expect.objectContaining({ code: "ERR_POLICY_SPIFFE" }));
    expect(() => parseSpiffeId(text)).toThrow(why);
  });

  it("insists workload IDs are in the trust domain and name a workload", () => {
    expect(() => parseWorkloadId("spiffe://other.org/x", "example.org")).toThrow(
      /outside this CA's trust domain/,
    );
    expect(() => parseWorkloadId("spiffe://example.org", "example.org")).toThrow(/add a path/);
    expect(parseWorkloadId("spiffe://example.org/x", "example.org").uri).toBe("spiffe://example.org/x");
  });
});

describe("DER", () => {
  it("encodes lengths minimally and reads them back", () => {
    for (const n of [0, 1, 127, 128, 255, 256, 65535, 65536]) {
      const value = der.tlv(der.Tag.OCTET_STRING, Buffer.alloc(n, 7));
      const t = der.readTlv(value, 0);
      expect(t.end).toBe(value.length);
      expect(t.end - t.valueStart).toBe(n);
    }
  });

  it("rejects non-minimal lengths, truncation and overruns", () => {
    const cases: [string, RegExp][] = [
      ["0481050102030405", /minimally/],
      ["0405010203", /runs past/],
      ["04", /truncated/],
      ["0480", /unsupported length/],
      ["1f0100", /multi-byte tags/],
    ];
    for (const [hex, why] of cases) {
      let caught: unknown;
      try {
        der.readTlv(Buffer.from(hex, "hex"), 0);
      } catch (err) {
        caught = err;
      }
      expect(isStintError(caught, "ERR_DER")).toBe(true);
      expect((caught as Error).message).toMatch(why);
    }
  });

  it("round-trips OIDs and times", () => {
    for (const o of ["2.5.29.17", "1.2.840.10045.4.3.2", "1.3.6.1.4.1.311.21.7", "2.999.3"]) {
      const enc = der.oid(o);
      expect(der.decodeOid(der.contents(enc, der.readTlv(enc, 0)))).toBe(o);
    }
    for (const iso of ["2026-11-23T09:00:00.000Z", "2049-12-31T23:59:59.000Z", "2050-01-01T00:00:00.000Z"]) {
      const enc = der.time(new Date(iso));
      expect(enc[0]).toBe(iso.startsWith("2050") ? der.Tag.GENERALIZED_TIME : der.Tag.UTC_TIME);
      expect(der.decodeTime(enc, der.readTlv(enc, 0)).toISOString()).toBe(iso);
    }
  });

  it("pads INTEGERs whose high bit is set and trims leading zeros", () => {
    expect(der.unsignedInteger(Buffer.from([0x80])).toString("hex")).toBe("02020080");
    expect(der.unsignedInteger(Buffer.from([0, 0, 1])).toString("hex")).toBe("020101");
    expect(der.smallInteger(0).toString("hex")).toBe("020100");
  });
});

describe("PEM", () => {
  it("round-trips and finds blocks by label", () => {
    const text = toPem("CERTIFICATE", Buffer.from("abc")) + toPem("PRIVATE KEY", Buffer.from("xyz"));
    expect(parsePemBlocks(text).map((b) => b.label)).toEqual(["CERTIFICATE", "PRIVATE KEY"]);
    expect(pemDecode(text, "PRIVATE KEY", "key.pem").toString()).toBe("xyz");
    expect(() => pemDecode("garbage", "CERTIFICATE", "cert.pem")).toThrow(
      'cert.pem: no "CERTIFICATE" PEM block found',
    );
  });
});

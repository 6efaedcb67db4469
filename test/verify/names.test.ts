import type { GeneralName, NameConstraints } from "../../formats/x509";
import {
  constraintProblem,
  nameConstraintProblem,
  sanProblem,
  unsupportedConstraint,
} from "../../verify/names";

const uri = (value: string): GeneralName => ({ type: "uri", value });
const dns = (value: string): GeneralName => ({ type: "dns", value });
const ip = (...bytes: number[]): GeneralName => ({ type: "ip", value: Buffer.from(bytes) });
const nc = (permitted: GeneralName[], excluded: GeneralName[] = []): NameConstraints => ({
  permitted,
  excluded,
});

describe("name constraints (RFC 5280 4.2.1.10)", () => {
  it("match a URI base on the host exactly, and a leading-dot base on hosts below it only", () => {
    expect(nameConstraintProblem([uri("spiffe://example.org/a")], nc([uri("example.org")]))).toBeNull();
    expect(nameConstraintProblem([uri("spiffe://EXAMPLE.org/a")], nc([uri("example.org")]))).toBeNull();
    expect(nameConstraintProblem([uri("spiffe://a.example.org/x")], nc([uri("example.org")]))).toBe(
      "URI spiffe://a.example.org/x is outside the permitted URI subtrees (example.org)",
    );
    expect(nameConstraintProblem([uri("spiffe://a.example.org/x")], nc([uri(".example.org")]))).toBeNull();
    expect(nameConstraintProblem([uri("spiffe://example.org/x")], nc([uri(".example.org")]))).not.toBeNull();
    expect(
      nameConstraintProblem([uri("spiffe://evilexample.org/x")], nc([uri(".example.org")])),
    ).not.toBeNull();
  });

  it("refuse a URI without a host under URI constraints", () => {
    expect(nameConstraintProblem([uri("urn:example:x")], nc([], [uri("evil.org")]))).toBe(
      "URI urn:example:x has no host name to check against the URI name constraints",
    );
    expect(nameConstraintProblem([uri("urn:example:x")], nc([dns("svc.local")]))).toBeNull();
  });

  it("match DNS names at and below a base, and only below a leading-dot base", () => {
    const svc = nc([dns("svc.local")]);
    expect(nameConstraintProblem([dns("svc.local"), dns("a.b.svc.local")], svc)).toBeNull();
    expect(nameConstraintProblem([dns("evilsvc.local")], svc)).toBe(
      "DNS name evilsvc.local is outside the permitted DNS subtrees (svc.local)",
    );
    expect(nameConstraintProblem([dns("svc.local")], nc([dns(".svc.local")]))).not.toBeNull();
    expect(nameConstraintProblem([dns("x.internal")], nc([], [dns("internal")]))).toBe(
      "DNS name x.internal is inside the excluded DNS subtree internal",
    );
  });

  it("match IP addresses by network and mask, per address family", () => {
    const tenNet = nc([ip(10, 0, 0, 0, 255, 0, 0, 0)]);
    expect(nameConstraintProblem([ip(10, 9, 8, 7)], tenNet)).toBeNull();
    expect(nameConstraintProblem([ip(192, 168, 0, 1)], tenNet)).toBe(
      "IP address 192.168.0.1 is outside the permitted IP subtrees (10.0.0.0/255.0.0.0)",
    );
    expect(nameConstraintProblem([ip(...Array(16).fill(0))], tenNet)).not.toBeNull();
  });

  it("leave names of an unconstrained type alone, and name the types it cannot process", () => {
    expect(nameConstraintProblem([dns("anything.example")], nc([uri("example.org")]))).toBeNull();
    expect(unsupportedConstraint(nc([uri("example.org")]))).toBeNull();
    expect(unsupportedConstraint(nc([], [{ type: "email", value: "example.org" }]))).toBe("email");
    expect(unsupportedConstraint(nc([{ type: "other", tag: 0xa0 }]))).toBe("tag 0xa0");
  });

  it("say which SANs are not names of their type", () => {
    expect(sanProblem(dns("web.svc.local"))).toBeNull();
    expect(sanProblem(dns("*.svc.local"))).toBeNull();
    expect(sanProblem(dns("_grpc.svc.local"))).toBeNull();
    expect(sanProblem(dns(".example.com"))).toBe(
      'dNSName ".example.com" is not a valid DNS name: it has an empty label (a leading, trailing or doubled dot)',
    );
    expect(sanProblem(dns("a.*.example.com"))).toBe(
      'dNSName "a.*.example.com" is not a valid DNS name: label "*" is not a DNS label',
    );
    expect(sanProblem(dns("10.0.0.1"))).toBe(
      'dNSName "10.0.0.1" is not a valid DNS name: it is an IP address, not a host name',
    );
    expect(sanProblem(dns(`${"a".repeat(64)}.example.com`))).toMatch(/is not a DNS label$/);
    expect(sanProblem(ip(10, 0, 0))).toBe("iPAddress SAN has 3 octets; it must have 4 or 16");
  });

  it("say which constraint bases are not valid for their type", () => {
    expect(constraintProblem(dns(""))).toBeNull();
    expect(constraintProblem(dns(".svc.local"))).toBeNull();
    expect(constraintProblem(uri("example.org"))).toBeNull();
    expect(constraintProblem(uri(".example.org"))).toBeNull();
    expect(constraintProblem(uri("td_with_underscore"))).toBeNull();
    expect(constraintProblem(uri(""))).toBe(
      'URI name constraint "" is not a valid host or domain: it is empty',
    );
    expect(constraintProblem(uri("spiffe://example.org"))).toMatch(
      /^URI name constraint "spiffe:\/\/example\.org" is not a valid host or domain/,
    );
    expect(constraintProblem(uri("example.org:443"))).not.toBeNull();
    expect(constraintProblem(uri("10.0.0.1"))).toBe(
      'URI name constraint "10.0.0.1" is not a valid host or domain: it is an IP address, not a host name',
    );
    expect(constraintProblem(dns("*.example.org"))).toMatch(/label "\*" is not a DNS label$/);
    expect(constraintProblem(ip(10, 0, 0, 0, 255, 0, 0, 0))).toBeNull();
    expect(constraintProblem(ip(10, 0, 0, 0, 255, 0, 255, 0))).toBe(
      "IP name constraint 10.0.0.0/255.0.255.0 has a mask that is not contiguous",
    );
    expect(constraintProblem(ip(10, 0, 0, 0))).toBe(
      "IP name constraint has 4 octets; it must have 8 or 32 (address and mask)",
    );
  });
});

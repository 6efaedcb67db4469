import type { GeneralName, NameConstraints } from "../../formats/x509";
import { nameConstraintProblem, unsupportedConstraint } from "../../verify/names";

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
});

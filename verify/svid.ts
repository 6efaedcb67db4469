import { isStintError } from "../common/errors";
import { parseSpiffeId } from "../formats/spiffe";
import { KeyUsage } from "../formats/x509";
import { type Cert, describe, ekuName, ekuOid, refuse, type Usage } from "./cert";

/**
 * The X509-SVID leaf rules (SPIFFE X509-SVID 4.1, 4.3, 5): an end entity
 * with digitalSignature and not keyCertSign/cRLSign, the extended key usage
 * the verifier's side needs, and exactly one URI SAN that is a workload's
 * SPIFFE ID. Returns that ID.
 */
export function checkLeaf(leaf: Cert, usage: Usage): string {
  const f = leaf.facts;
  if (f.ca) {
    refuse(
      "spiffe",
      `${describe(leaf)} is a CA certificate (basicConstraints cA=TRUE); an X509-SVID leaf must not be`,
    );
  }
  if (f.keyUsage === null) {
    refuse("usage", `${describe(leaf)} has no keyUsage extension; an X509-SVID leaf needs digitalSignature`);
  }
  if (!(f.keyUsage & KeyUsage.digitalSignature)) {
    refuse("usage", `${describe(leaf)} key usage does not include digitalSignature`);
  }
  if (f.keyUsage & (KeyUsage.keyCertSign | KeyUsage.cRLSign)) {
    refuse(
      "spiffe",
      `${describe(leaf)} key usage includes keyCertSign or cRLSign, which an X509-SVID leaf must not have`,
    );
  }
  if (f.eku === null) {
    refuse(
      "usage",
      `${describe(leaf)} has no extended key usage; it must name ${ekuName(usage)} to be accepted as a ${usage} certificate`,
    );
  }
  if (!f.eku.includes(ekuOid(usage))) {
    refuse(
      "usage",
      `${describe(leaf)} extended key usage does not include ${ekuName(usage)}, so it is not a ${usage} certificate`,
    );
  }
  if (f.uris.length === 0) refuse("spiffe", `${describe(leaf)} has no URI SAN, so it carries no SPIFFE ID`);
  if (f.uris.length > 1) {
    refuse(
      "spiffe",
      `${describe(leaf)} has ${f.uris.length} URI SANs (${f.uris.join(", ")}); an X509-SVID has exactly one`,
    );
  }
  const uri = f.uris[0];
  let id: ReturnType<typeof parseSpiffeId>;
  try {
    id = parseSpiffeId(uri);
  } catch (err) {
    return refuse("spiffe", `the leaf's URI SAN ${isStintError(err) ? err.message : "is not a SPIFFE ID"}`);
  }
  if (id.uri !== uri) refuse("spiffe", `the leaf's URI SAN "${uri}" is not in canonical SPIFFE form`);
  if (id.path === "") {
    refuse(
      "spiffe",
      `the leaf's SPIFFE ID ${uri} names a trust domain, not a workload; an X509-SVID needs a path`,
    );
  }
  return id.uri;
}

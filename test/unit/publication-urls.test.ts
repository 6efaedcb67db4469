import { caCertificateUrl, crlUrl, intermediateLinks, NO_PUBLICATION } from "../../ca/crl";
import { caIssuersValue } from "../../ca/x509";
import { crlHttpOrigin, publicationUrls } from "../../cli/context";

/** Where certificates point for CRLs and CA certificates, derived from the CA's settings. */

const cfg = (over: Partial<Parameters<typeof publicationUrls>[0]> = {}) => ({
  publicUrl: "",
  listen: "127.0.0.1:8443",
  serverNames: ["ca.example.com", "127.0.0.1"],
  "crl.httpListen": "",
  ...over,
});

describe("publicationUrls", () => {
  it("uses the HTTPS origin for CRLs and names no caIssuers while crl.httpListen is off", () => {
    expect(publicationUrls(cfg())).toEqual({
      crlBaseUrl: "https://127.0.0.1:8443",
      caIssuersBaseUrl: null,
    });
    // Port 0 without publicUrl: the HTTPS origin is unknown until bound, so no distribution point.
    expect(publicationUrls(cfg({ listen: "127.0.0.1:0" }))).toEqual(NO_PUBLICATION);
  });

  it("uses the plain-HTTP listener for both once crl.httpListen is set", () => {
    const http = "http://127.0.0.1:8080";
    expect(publicationUrls(cfg({ "crl.httpListen": "127.0.0.1:8080" }))).toEqual({
      crlBaseUrl: http,
      caIssuersBaseUrl: http,
    });
  });

  it("names a reachable host for wildcard listeners, and drops :80", () => {
    expect(crlHttpOrigin(cfg({ "crl.httpListen": "0.0.0.0:80" }))).toBe("http://ca.example.com");
    expect(crlHttpOrigin(cfg({ "crl.httpListen": "[::]:8080" }))).toBe("http://ca.example.com:8080");
    expect(
      crlHttpOrigin(cfg({ "crl.httpListen": "0.0.0.0:8080", publicUrl: "https://pki.example.net:443" })),
    ).toBe("http://pki.example.net:8080");
    expect(crlHttpOrigin(cfg({ "crl.httpListen": "[::1]:8080" }))).toBe("http://[::1]:8080");
  });

  it("refuses port 0: certificates must name the port before the listener binds", () => {
    expect(() => crlHttpOrigin(cfg({ "crl.httpListen": "127.0.0.1:0" }))).toThrow(
      expect.objectContaining({
        code: "ERR_CONFIG",
        message:
          'crl.httpListen "127.0.0.1:0" needs a fixed port: certificates name it as their CRL distribution point',
      }),
    );
  });
});

describe("intermediate links", () => {
  it("point at the root's CRL and certificate", () => {
    const urls = { crlBaseUrl: "http://ca:8080/", caIssuersBaseUrl: "http://ca:8080" };
    expect(intermediateLinks(urls, "00aa")).toEqual({
      crlUrl: "http://ca:8080/crl/00aa.crl",
      caIssuersUrl: "http://ca:8080/ca/00aa.cer",
    });
    expect(intermediateLinks(NO_PUBLICATION, "00aa")).toEqual({ crlUrl: null, caIssuersUrl: null });
    expect(crlUrl("https://ca", "01")).toBe("https://ca/crl/01.crl");
    expect(caCertificateUrl("http://ca", "01")).toBe("http://ca/ca/01.cer");
  });

  it("encodes caIssuers as RFC 5280's AccessDescription and refuses what is not an http(s) URL", () => {
    // SEQUENCE { SEQUENCE { OID 1.3.6.1.5.5.7.48.2, [6] "http://a/b" } }
    expect(caIssuersValue("http://a/b").toString("hex")).toBe(
      "30183016" + "06082b06010505073002" + "860a" + Buffer.from("http://a/b").toString("hex"),
    );
    for (const bad of ["ldap://a/b", "http://a b", "http://é", ""]) {
      expect(() => caIssuersValue(bad)).toThrow(expect.objectContaining({ code: "ERR_CONFIG" }));
    }
  });
});

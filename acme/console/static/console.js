// The Stint console's only script (the CSP allows no inline script). Pages work without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // The issuer filter applies as soon as one is picked.
  for (const select of document.querySelectorAll("form.filters select")) {
    select.addEventListener("change", () => select.form.submit());
  }
  // Rotation progress moves while an operator watches: reload the Issuers view every 10 s while a fleet is moving.
  if (document.querySelector(".progress") && location.pathname === "/console/issuers") {
    setTimeout(() => location.reload(), 10_000);
  }
});

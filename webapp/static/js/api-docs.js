// The browsable API page: Swagger UI on /api/v1/openapi.json (a file, not an
// inline script: the Content-Security-Policy allows no inline code).
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("api-docs");
  window.SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    // Tokens typed into "Authorize" stay in this tab only.
    persistAuthorization: false,
    // The validator badge would call swagger.io: not reachable from an air-gapped lab.
    validatorUrl: null,
  });
});

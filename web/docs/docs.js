// Swagger UI over the gateway's own OpenAPI document (a file, not an inline script, so the
// page's Content-Security-Policy needs no 'unsafe-inline' for scripts). Requests made with
// "Try it out" go to this same origin; paste an access token with "Authorize".
/* global SwaggerUIBundle */
window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null, // no call to an online validator
    tryItOutEnabled: false,
    displayRequestDuration: true,
    persistAuthorization: false,
  });
});

import { defineConfig } from "vite";

// Django serves dist/ (STATICFILES_DIRS) under /static/ and returns dist/index.html at "/".
// `npm run dev` proxies the API, login and the live feed to a local Django (ASGI) on :8000.
const django = "http://127.0.0.1:8000";

export default defineConfig({
  base: "/static/",
  // Preact's automatic JSX runtime (no React).
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: { outDir: "dist", emptyOutDir: true },
  server: {
    proxy: {
      "/api": django,
      "/accounts": django,
      "/ws": { target: django, ws: true },
    },
  },
});
